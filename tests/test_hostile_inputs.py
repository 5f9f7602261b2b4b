"""Hostile API inputs, without a host: a generated corpus (fixed seed) of malformed and
valid-but-odd Differential Diffusion arguments, each checked the way the WebUI glue
handles them (``DifferentialDiffusionArgs.from_script_args`` then ``maps.decode_map``):
a valid case parses and decodes, a malformed one raises ``DifferentialDiffusionError``
whose message starts with ``Differential Diffusion: <field>:`` naming the right field.

The corpus builder (``hostile_corpus``) is also what ``tests/webui/test_reliability.py``
sends to a real WebUI. Plus: decompression bombs are refused without allocating.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import random
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lib_differential_diffusion.args import API_KEYS, POSITIONAL_ORDER, SETTINGS, DifferentialDiffusionArgs
from lib_differential_diffusion.fan import fan_map
from lib_differential_diffusion.errors import EXTENSION_NAME, DifferentialDiffusionError
from lib_differential_diffusion.maps import MAX_MAP_PIXELS, Geometry, align_map, decode_map

# PIL warns (before refusing itself) about the corpus's bombs between its two limits.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CORPUS_SEED = 20240611

# What A1111's API puts in the script's positions the request leaves out: the UI
# components' values (modules/api/api.py: init_default_script_args), which on a clean
# install are the settings' defaults.
UI_DEFAULTS = tuple(setting.default for setting in SETTINGS)


# ----------------------------------------------------------------------- images


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def noise_png(rng: random.Random, width: int = 64, height: int = 64) -> bytes:
    values = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (height, width), dtype=np.uint8)
    return encode(Image.fromarray(values, "L"), "PNG")


def halves_png(width: int = 64, height: int = 64) -> bytes:
    values = np.zeros((height, width), np.uint8)
    values[:, width // 2 :] = 255
    return encode(Image.fromarray(values, "L"), "PNG")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height (8-bit gray), with a few bytes of data."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def bmp_bomb(width: int, height: int) -> bytes:
    """A BMP header claiming width x height (24-bit), with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def truncated_png(rng: random.Random) -> bytes:
    """A noise PNG cut inside the first half of its image data (never decodable)."""
    data = noise_png(rng)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    return data[: rng.randrange(9, idat + 4 + length // 2)]


def sixteen_bit_png(rng: random.Random) -> bytes:
    values = np.random.default_rng(rng.randrange(2**32)).integers(0, 65536, (16, 24), dtype=np.uint16)
    return encode(Image.fromarray(values), "PNG")


def palette_png(rng: random.Random) -> bytes:
    image = Image.new("P", (20, 12))
    image.putpalette([value for index in range(256) for value in (index, 255 - index, (index * 7) % 256)])
    image.putdata([rng.randrange(256) for _ in range(20 * 12)])
    return encode(image, "PNG", transparency=rng.randrange(256))


def cmyk_jpeg(rng: random.Random) -> bytes:
    image = Image.new("CMYK", (24, 16), tuple(rng.randrange(256) for _ in range(4)))
    return encode(image, "JPEG", quality=90)


def animated(fmt: str, rng: random.Random) -> bytes:
    first = rng.randrange(256)
    frames = [Image.new("L", (16, 8), first), Image.new("L", (16, 8), 255 - first), Image.new("L", (16, 8), 7)]
    params = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=40, loop=0, **params)


# ----------------------------------------------------------------------- the corpus


@dataclasses.dataclass(frozen=True)
class Case:
    """One value of ``alwayson_scripts["Differential Diffusion"]["args"]``.

    ``status`` is what the API answers: 200 (valid, maybe odd) or 422 (refused, the
    message naming ``field``). ``args`` is JSON-able; floats may be NaN or infinite
    (sent as JSON's NaN / Infinity literals, which the WebUI's parser accepts).
    """

    kind: str
    args: list
    status: int
    field: str | None = None
    note: str = ""

    @property
    def message_prefix(self) -> str:
        return f"{EXTENSION_NAME}: {self.field}: "


NUMBERS = ("gamma", "blur", "low", "high")
BOOLEANS = ("enabled", "invert", "preserve")


def _dd(**values: Any) -> list:
    return [values]


def _map_not_base64(rng, good):
    text = rng.choice(
        [
            "not base64!!",
            "/etc/passwd",
            "file:///etc/passwd",
            "http://127.0.0.1:1/map.png",
            "C:\\maps\\map.png",
            "%00%00",
            "   ",
            "".join(rng.choice("abcXYZ019+/=!?.:;-_ ") for _ in range(rng.randrange(1, 80))),
        ]
    )
    return Case("map_not_base64", _dd(map=text), 422, "map", repr(text[:30]))


def _b64_non_image(rng, good):
    magic = rng.choice([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"BM", b"%!PS-Adobe"])
    data = magic + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
    return Case("b64_non_image", _dd(map=b64(data)), 422, "map", f"magic {magic[:4]!r}")


def _truncated_png(rng, good):
    return Case("truncated_png", _dd(map=b64(truncated_png(rng))), 422, "map")


def _data_url_wrong(rng, good):
    text = rng.choice(
        [
            f"data:text/plain;base64,{good}",
            f"data:application/octet-stream;base64,{good}",
            f"data:;base64,{good}",
            f"data:image/png,{good}",  # not marked base64
            "data:image/png;base64",  # no comma
            "data:image/png;base64,",  # no data
        ]
    )
    return Case("data_url_wrong", _dd(map=text), 422, "map", text[:30])


def _valid_odd(rng, good):
    what = rng.choice(["1x1", "16-bit", "palette", "cmyk-jpeg", "gif-animated", "webp-animated", "aspect", "data-url", "urlsafe", "wrapped", "gradio-dict"])
    if what == "1x1":
        value = b64(encode(Image.new("L", (1, 1), rng.randrange(256)), "PNG"))
    elif what == "16-bit":
        value = b64(sixteen_bit_png(rng))
    elif what == "palette":
        value = b64(palette_png(rng))
    elif what == "cmyk-jpeg":
        value = b64(cmyk_jpeg(rng))
    elif what == "gif-animated":
        value = b64(animated("GIF", rng))
    elif what == "webp-animated":
        value = b64(animated("WEBP", rng))
    elif what == "aspect":
        value = b64(noise_png(rng, rng.choice([3, 200, 97]), rng.choice([17, 5, 301])))
    elif what == "data-url":
        value = "data:image/png;base64," + good
    elif what == "urlsafe":
        value = base64.urlsafe_b64encode(halves_png(30, 10)).decode().rstrip("=")
    elif what == "wrapped":
        value = "\n".join(textwrap.wrap(good, 76))
    else:
        value = {"image": good}  # what a gradio image editor hands over
    return Case("valid_odd", _dd(map=value), 200, None, what)


def _bomb(rng, good):
    width, height, kind = rng.choice(
        [
            (30000, 30000, "png"),
            (8193, 8192, "png"),
            (100000, 1000, "png"),
            (2**31 - 1, 2**31 - 1, "png"),
            (20000, 20000, "bmp"),
        ]
    )
    data = png_bomb(width, height) if kind == "png" else bmp_bomb(width, height)
    return Case("bomb", _dd(map=b64(data)), 422, "map", f"{kind} {width}x{height}")


def _number_as_string(rng, good):
    name = rng.choice(NUMBERS)
    return Case("number_as_string", _dd(map=good, **{name: rng.choice(["0.5", "1", "1e0", ""])}), 422, name)


def _non_finite(rng, good):
    name = rng.choice(NUMBERS)
    value = rng.choice([math.nan, math.inf, -math.inf])
    return Case("non_finite", _dd(map=good, **{name: value}), 422, name, repr(value))


def _negative(rng, good):
    name = rng.choice(NUMBERS)
    return Case("negative", _dd(map=good, **{name: -rng.choice([1e-9, 0.5, 1, 1e9])}), 422, name)


def _low_above_high(rng, good):
    high = round(rng.uniform(0, 0.9), 3)
    low = round(rng.uniform(high + 0.01, 1.0), 3)
    return Case("low_above_high", _dd(map=good, low=low, high=high), 422, "low", f"{low} > {high}")


def _gamma_not_positive(rng, good):
    return Case("gamma_not_positive", _dd(map=good, gamma=rng.choice([0, 0.0, -0.0, 1e-300, 0.049])), 422, "gamma")


def _out_of_range(rng, good):
    name, value = rng.choice([("blur", 1e6), ("blur", 256.5), ("gamma", 10.01), ("gamma", 1e308), ("high", 1.5), ("low", 2), ("low", 1e20)])
    return Case("out_of_range", _dd(map=good, **{name: value}), 422, name, f"{name}={value:g}")


def _bool_as_string(rng, good):
    name = rng.choice(BOOLEANS)
    value = rng.choice(["true", "false", "True", "1", "yes", 1, 0, None])
    return Case("bool_as_string", _dd(map=good, **{name: value}), 422, name, f"{name}={value!r}")


def _unknown_key(rng, good):
    key = rng.choice(["Map", "strength", "mask", "map_folder", "mapp", "", "ключ", "__class__", "gamma ", "x" * 200])
    return Case("unknown_key", [{"map": good, key: 1}], 422, key, repr(key[:20]))


def _bad_source(rng, good):
    value = rng.choice(["mask", "Map", "", "inpaint", 0, None, True, ["map"]])
    return Case("bad_source", _dd(map=good, source=value), 422, "source", repr(value))


def _inpaint_source_without_mask(rng, good):
    return Case("inpaint_source_without_mask", _dd(source="inpaint mask"), 422, "source")


def _bad_fan(rng, good):
    name, value = rng.choice(
        [("fan_count", 1), ("fan_count", 17), ("fan_count", 2.5), ("fan_count", "4"), ("fan_count", True), ("fan_count", math.nan), ("fan_count", -3),
         ("fan_layout", "diagonal"), ("fan_layout", ""), ("fan_layout", 3), ("fan_layout", None), ("fan_layout", "Vertical bands")]
    )  # fmt: skip
    return Case("bad_fan", _dd(source="fan", **{name: value}), 422, name, f"{name}={value!r}")


def _list_for_dict(rng, good):
    args = rng.choice([[[1, 2]], [["map", good]], [[]], [[{"map": good}]]])
    return Case("list_for_dict", args, 422, "enabled", json.dumps(args)[:30])


def _string_for_dict(rng, good):
    args = rng.choice([["yes"], ["true"], [""], ["{\"map\": 1}"], [good]])
    return Case("string_for_dict", args, 422, "enabled", json.dumps(args)[:30])


def _bad_map_type(rng, good):
    value = rng.choice([5, 1.5, True, [1, 2], {"image": 5}, None, "", {}, {"mask": good}])
    return Case("bad_map_type", _dd(map=value), 422, "map", repr(value)[:30])


def _disabled_garbage(rng, good):
    args = rng.choice([[{"enabled": False, "map": "garbage!!"}], [False, "garbage!!"], [False, 12], [None]])
    return Case("disabled_garbage", args, 200, None, json.dumps(args)[:30])


def _disabled_bad_number(rng, good):
    name = rng.choice(NUMBERS)
    return Case("disabled_bad_number", [{"enabled": False, name: -5}], 422, name)


def _positional(rng, good):
    choice = rng.randrange(4)
    if choice == 0:
        return Case("positional", [True, good], 200, None, "[True, map]")
    if choice == 1:
        return Case("positional", [True, good, "map", True, 0.5, 2.0, 0.1, 0.9, False], 200, None, "all nine")
    if choice == 2:
        return Case("positional", [True, good, "map", False, "2"], 422, "gamma", "gamma as string")
    return Case("positional", [True, None], 422, "map", "no map")


KINDS = {
    "map_not_base64": _map_not_base64,
    "b64_non_image": _b64_non_image,
    "truncated_png": _truncated_png,
    "data_url_wrong": _data_url_wrong,
    "valid_odd": _valid_odd,
    "bomb": _bomb,
    "number_as_string": _number_as_string,
    "non_finite": _non_finite,
    "negative": _negative,
    "low_above_high": _low_above_high,
    "gamma_not_positive": _gamma_not_positive,
    "out_of_range": _out_of_range,
    "bool_as_string": _bool_as_string,
    "unknown_key": _unknown_key,
    "bad_source": _bad_source,
    "inpaint_source_without_mask": _inpaint_source_without_mask,
    "bad_fan": _bad_fan,
    "list_for_dict": _list_for_dict,
    "string_for_dict": _string_for_dict,
    "bad_map_type": _bad_map_type,
    "disabled_garbage": _disabled_garbage,
    "disabled_bad_number": _disabled_bad_number,
    "positional": _positional,
}


def hostile_corpus(count: int, seed: int = CORPUS_SEED, valid_share: float = 0.12) -> list[Case]:
    """``count`` cases: every kind and every valid-but-odd variant at least once, then random
    kinds (valid ones, which cost a generation on a host, about ``valid_share`` of them)."""
    rng = random.Random(seed)
    good = b64(halves_png())
    cases = [make(rng, good) for make in KINDS.values()]
    for what in ("1x1", "16-bit", "palette", "cmyk-jpeg", "gif-animated", "webp-animated", "aspect", "data-url", "urlsafe", "wrapped", "gradio-dict"):
        while True:  # every variant once, still drawn from the seeded generator
            case = _valid_odd(rng, good)
            if case.note == what:
                cases.append(case)
                break
    refused = [name for name in KINDS if name not in ("valid_odd", "disabled_garbage", "positional")]
    while len(cases) < count:
        kind = "valid_odd" if rng.random() < valid_share else rng.choice(refused)
        cases.append(KINDS[kind](rng, good))
    rng.shuffle(cases)
    return cases


def run_like_the_glue(args: list) -> np.ndarray | None:
    """What ``scripts/differential_diffusion.py: before_process`` does with the API's script
    args (no inpaint mask, no batch tab): parse, then decode the map. Returns the decoded
    map, or None when disabled; raises DifferentialDiffusionError when refused."""
    script_args = list(args[: len(UI_DEFAULTS)]) + list(UI_DEFAULTS[len(args) :])
    parsed = DifferentialDiffusionArgs.from_script_args(tuple(script_args))
    if not parsed.enabled:
        return None
    if parsed.source == "fan":
        return fan_map(parsed.fan_count * 4, parsed.fan_count * 3, parsed.fan_count, parsed.fan_layout)
    if parsed.source != "map":
        raise DifferentialDiffusionError("source", "'inpaint mask' needs an inpaint mask")
    value = parsed.map.get("image") if isinstance(parsed.map, dict) else parsed.map
    return decode_map(value)


CORPUS = hostile_corpus(320)


def test_corpus_is_deterministic_and_covers_every_kind():
    again = hostile_corpus(320)
    assert [json.dumps(case.args, sort_keys=True) for case in again] == [json.dumps(case.args, sort_keys=True) for case in CORPUS]
    kinds = Counter(case.kind for case in CORPUS)
    assert set(kinds) == set(KINDS), kinds
    assert {case.note for case in CORPUS if case.kind == "valid_odd"} >= {"1x1", "16-bit", "palette", "cmyk-jpeg", "gif-animated", "webp-animated"}


@pytest.mark.parametrize("case", CORPUS, ids=[f"{index:03d}-{case.kind}" for index, case in enumerate(CORPUS)])
def test_corpus_case(case: Case):
    start = time.perf_counter()
    if case.status == 200:
        result = run_like_the_glue(case.args)
        if result is not None:
            assert result.dtype == np.float32 and result.ndim == 2 and result.size >= 1
            assert np.isfinite(result).all() and result.min() >= 0 and result.max() <= 1
    else:
        with pytest.raises(DifferentialDiffusionError) as caught:
            run_like_the_glue(case.args)
        assert str(caught.value).startswith(case.message_prefix), (case, str(caught.value))
        assert caught.value.field == case.field
    assert time.perf_counter() - start < 1.0, f"{case.kind} took {time.perf_counter() - start:.2f}s"


# ------------------------------------------------------------- named cases from the brief


def test_from_api_names_the_field_for_each_malformed_kind():
    good = b64(halves_png())
    table = [
        ({"map": "not base64!!"}, "map"),
        ({"map": b64(b"hello, not an image")}, "map"),
        ({"map": b64(halves_png()[:80])}, "map"),
        ({"map": "data:text/plain;base64," + good}, "map"),
        ({"map": good, "gamma": "1"}, "gamma"),
        ({"map": good, "blur": math.nan}, "blur"),
        ({"map": good, "low": math.inf}, "low"),
        ({"map": good, "high": -math.inf}, "high"),
        ({"map": good, "blur": -1}, "blur"),
        ({"map": good, "low": 0.7, "high": 0.3}, "low"),
        ({"map": good, "gamma": 0}, "gamma"),
        ({"map": good, "gamma": -2}, "gamma"),
        ({"map": good, "blur": 1e6}, "blur"),
        ({"map": good, "invert": "true"}, "invert"),
        ({"map": good, "preserve": "false"}, "preserve"),
        ({"map": good, "enabled": "yes"}, "enabled"),
        ({"map": good, "colour": "red"}, "colour"),
        ({"map": good, "map_folder": "/tmp"}, "map_folder"),
    ]
    for value, field in table:
        with pytest.raises(DifferentialDiffusionError) as caught:
            parsed = DifferentialDiffusionArgs.from_api(value)
            decode_map(parsed.map)
        assert str(caught.value).startswith(f"{EXTENSION_NAME}: {field}:"), (value, str(caught.value))
    for value in ([1, 2], "yes", 5, None, [{"map": good}]):  # a list (or anything) where a dict is expected
        with pytest.raises(DifferentialDiffusionError) as caught:
            DifferentialDiffusionArgs.from_api(value)
        assert str(caught.value).startswith(f"{EXTENSION_NAME}: args:"), (value, str(caught.value))


def test_valid_but_odd_maps_decode_as_documented():
    rng = random.Random(7)
    one = decode_map(b64(encode(Image.new("L", (1, 1), 51), "PNG")))
    assert one.shape == (1, 1) and one[0, 0] == np.float32(51 / 255)
    for mode in (0, 1, 2, 3):  # a 1x1 map is stretched over any image: aligned, not an error
        aligned = align_map(one, Geometry((96, 64), 64, 64, mode))
        assert aligned.shape == (64, 64) and np.all(aligned == one[0, 0]), mode

    values = np.array([[0, 1, 257, 65535]], np.uint16)
    sixteen = decode_map(b64(encode(Image.fromarray(values), "PNG")))
    np.testing.assert_array_equal(sixteen, (values / np.float32(65535)).astype(np.float32))  # 16-bit precision kept

    palette = decode_map(b64(palette_png(rng)))
    assert palette.shape == (12, 20)
    cmyk = decode_map(b64(cmyk_jpeg(rng)))
    assert cmyk.shape == (16, 24) and np.isfinite(cmyk).all()
    for fmt in ("GIF", "WEBP"):
        data = animated(fmt, random.Random(3))
        first = Image.open(io.BytesIO(data)).convert("L").getpixel((0, 0))
        decoded = decode_map(b64(data))
        assert decoded.shape == (8, 16)
        np.testing.assert_allclose(decoded, first / 255, atol=1 / 255)  # the first frame, not a later one


def bomb_peak_in_a_fresh_process() -> dict:
    """Decode the bombs in a new interpreter and report its peak RSS growth (VmHWM) and time."""
    script = textwrap.dedent(
        f"""
        import base64, json, sys, time
        sys.path.insert(0, {str(PROJECT_ROOT)!r}); sys.path.insert(0, {str(PROJECT_ROOT / 'tests')!r})
        from test_hostile_inputs import bmp_bomb, png_bomb
        from lib_differential_diffusion.errors import DifferentialDiffusionError
        from lib_differential_diffusion.maps import decode_map
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        bombs = [png_bomb(30000, 30000), png_bomb(8193, 8192), png_bomb(2**31 - 1, 2**31 - 1), bmp_bomb(20000, 20000)]
        # Warm up: PIL's plugins and the error paths are imported on first use.
        import io
        from PIL import Image
        tiny = io.BytesIO(); Image.new("L", (2, 2), 9).save(tiny, format="PNG")
        decode_map(tiny.getvalue())
        for bomb in bombs:
            try:
                decode_map(bomb)
            except DifferentialDiffusionError:
                pass
        before = hwm()
        times, messages = [], []
        # PIL's own limit, then none (X/Y/Z plot sets Image.MAX_IMAGE_PIXELS = None in the host).
        sources = [source for bomb in bombs for source in (bomb, base64.b64encode(bomb).decode())]
        for limit in (Image.MAX_IMAGE_PIXELS, None):
            Image.MAX_IMAGE_PIXELS = limit
            for source in sources:
                start = time.perf_counter()
                try:
                    decode_map(source)
                    messages.append(None)
                except DifferentialDiffusionError as error:
                    messages.append(str(error))
                times.append(time.perf_counter() - start)
        print(json.dumps({{"growth": hwm() - before, "times": times, "messages": messages}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux) to read peak RSS")
def test_decompression_bombs_are_refused_fast_without_allocating():
    report = bomb_peak_in_a_fresh_process()
    assert all(message and message.startswith(f"{EXTENSION_NAME}: map:") and "too large" in message for message in report["messages"]), report
    # 30000x30000 gray would be 900 MB as pixels (3.6 GB as float32); nothing near it.
    assert report["growth"] < 16 * 2**20, report


def test_decompression_bomb_allocates_nothing_traced():
    tracemalloc.start()
    try:
        for bomb in (png_bomb(30000, 30000), bmp_bomb(20000, 20000), png_bomb(8193, 8192)):
            with pytest.raises(DifferentialDiffusionError, match="too large"):
                decode_map(b64(bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak  # numpy arrays are traced: a decoded bomb would show here
    assert 8193 * 8192 > MAX_MAP_PIXELS


# ----------------------------------------------------------------------- extension files


def test_api_keys_and_positional_order_are_what_the_corpus_assumes():
    assert API_KEYS == ("enabled", "map", "source", "invert", "gamma", "blur", "low", "high", "preserve", "fan_count", "fan_layout", "smooth", "model_mask", "preprocessor")
    assert POSITIONAL_ORDER[-7:] == ("map_folder", "fan_count", "fan_layout", "drawn_map", "smooth", "model_mask", "preprocessor") and len(UI_DEFAULTS) == 16
