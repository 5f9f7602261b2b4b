"""Tests for lib_differential_diffusion.maps (CPU, no WebUI, no fixtures).

Every image is built here with PIL/numpy. The alignment tests compare
against ``host_resize_image``: a verbatim-logic copy of A1111 v1.10.1's
``modules/images.py: resize_image`` (upscaler None, i.e. plain LANCZOS, for
RGB images), because the host cannot be imported in CI.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest

import a1111_images
import torch
from PIL import Image, ImageFile

from lib_differential_diffusion import maps
from lib_differential_diffusion.errors import DifferentialDiffusionError
from lib_differential_diffusion.maps import (
    EIGHT_BIT_VALUES,
    Geometry,
    MapOptions,
    MapValues,
    align_map,
    apply_options,
    decode_map,
    gaussian_blur,
    keeps_whole_map,
    to_latent,
)

GRAY = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)
GRAY_UNIT = GRAY.astype(np.float64) / 255


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes that claims width x height."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    idat = zlib.compress(b"\0" * (width + 1))  # one row; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def expect_error(field: str, *fragments: str):
    """pytest.raises for DifferentialDiffusionError naming ``field``."""

    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(DifferentialDiffusionError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._ctx.__exit__(*exc)
            error = self.info.value
            assert error.field == field, str(error)
            assert str(error).startswith(f"Differential Diffusion: {field}: ")
            for fragment in fragments:
                assert fragment.lower() in str(error).lower(), str(error)
            return handled

    return _Check()


# ---------------------------------------------------------------- decoding


def test_decode_l_is_exact():
    result = decode_map(Image.fromarray(GRAY, "L"))
    assert result.dtype == np.float32 and result.shape == GRAY.shape
    np.testing.assert_array_equal(result, (GRAY / np.float32(255)).astype(np.float32))
    assert result[1, 2] == 1.0 and result[0, 0] == 0.0


def test_decode_mode_1():
    bits = np.array([[True, False], [False, True]])
    result = decode_map(Image.fromarray(bits))
    assert Image.fromarray(bits).mode == "1"
    np.testing.assert_array_equal(result, bits.astype(np.float32))


def test_decode_rgb_gray_is_exact_and_color_uses_601_luma():
    rgb = np.repeat(GRAY[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(decode_map(Image.fromarray(rgb, "RGB")), decode_map(GRAY))
    colors = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    result = decode_map(Image.fromarray(colors, "RGB"))
    np.testing.assert_allclose(result[0], [0.299, 0.587, 0.114, 1.0], atol=1e-7)
    assert result[0, 3] == 1.0


def test_decode_rgba_and_la_multiply_by_alpha():
    value = np.full((2, 3), 200, np.uint8)
    alpha = np.array([[0, 255, 128], [1, 0, 255]], dtype=np.uint8)
    expected = (200 / 255) * (alpha / 255)
    rgba = np.dstack([value, value, value, alpha])
    la = np.dstack([value, alpha])
    for image in (Image.fromarray(rgba, "RGBA"), Image.fromarray(la, "LA")):
        result = decode_map(image)
        np.testing.assert_allclose(result, expected, atol=1e-6)
        assert result[0, 0] == 0.0 and result[1, 1] == 0.0  # transparent = no change


def test_decode_palette_with_transparency():
    image = Image.new("P", (3, 1))
    image.putpalette([255, 255, 255, 0, 0, 0, 255, 255, 255] + [0] * (768 - 9))
    image.putdata([0, 1, 2])
    image.info["transparency"] = 2  # index 2 is white but transparent
    result = decode_map(Image.open(io.BytesIO(encode(image, "PNG"))))
    np.testing.assert_array_equal(result, [[1.0, 0.0, 0.0]])
    # Without transparency, index 2 is plain white.
    image.info.pop("transparency")
    np.testing.assert_array_equal(decode_map(image), [[1.0, 0.0, 1.0]])


def test_decode_cmyk():
    cmyk = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [0, 255, 255, 0]]], dtype=np.uint8)
    result = decode_map(Image.fromarray(cmyk, "CMYK"))
    np.testing.assert_allclose(result, [[1.0, 0.0, 0.299]], atol=1e-6)


def test_decode_16_bit_keeps_precision():
    values = np.array([[0, 1, 2, 32768, 65534, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    for source in (image, encode(image, "PNG"), values, values.astype(">u2")):
        result = decode_map(source)
        assert result.dtype == np.float32
        assert result[0, 1] == np.float32(1 / 65535) and result[0, 1] > 0
        assert result[0, 2] == np.float32(2 / 65535)
        assert result[0, 4] < 1.0 and result[0, 5] == 1.0 and result[0, 0] == 0.0
    assert Image.open(io.BytesIO(encode(image, "PNG"))).mode.startswith("I;16")


def test_decode_mode_i_and_f():
    np.testing.assert_array_equal(
        decode_map(Image.fromarray(np.array([[0, 1, 65535]], dtype=np.int32), "I")),
        np.array([[0, 1 / 65535, 1]], dtype=np.float32),
    )
    with expect_error("map", "0..65535"):
        decode_map(Image.fromarray(np.array([[0, 70000]], dtype=np.int32), "I"))
    floats = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(decode_map(Image.fromarray(floats, "F")), floats)
    with expect_error("map", "[0, 1]"):
        decode_map(Image.fromarray(np.array([[0.0, 1.5]], dtype=np.float32), "F"))


@pytest.mark.parametrize(
    "array, expected",
    [
        (GRAY, GRAY_UNIT),
        (GRAY[:, :, None], GRAY_UNIT),
        (GRAY.astype(np.uint16) * 257, GRAY_UNIT),
        (GRAY > 127, (GRAY > 127).astype(np.float64)),
        (GRAY_UNIT.astype(np.float32), GRAY_UNIT),
        (GRAY_UNIT, GRAY_UNIT),
        (GRAY_UNIT.astype(np.float16), GRAY_UNIT.astype(np.float16)),
        (np.repeat(GRAY[:, :, None], 3, axis=2), GRAY_UNIT),
        (np.dstack([GRAY, GRAY, GRAY, np.full_like(GRAY, 255)]), GRAY_UNIT),
        (np.dstack([GRAY, np.full_like(GRAY, 0)]), np.zeros_like(GRAY_UNIT)),
        (np.dstack([GRAY_UNIT] * 3 + [np.full_like(GRAY_UNIT, 0.5)]), GRAY_UNIT * 0.5),
    ],
    ids=["u8", "u8x1", "u16", "bool", "f32", "f64", "f16", "rgb", "rgba", "gray+alpha0", "float-rgba"],
)
def test_decode_arrays(array, expected):
    before = array.copy()
    result = decode_map(array)
    assert result.dtype == np.float32 and result.shape == GRAY.shape
    assert result.flags.c_contiguous and result.flags.writeable
    np.testing.assert_allclose(result, expected, atol=1e-6)
    np.testing.assert_array_equal(array, before)  # input untouched
    assert not np.shares_memory(result, array)


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.array([[0.0, np.nan]], np.float32), "nan"),
        (np.array([[0.0, np.inf]], np.float32), "infinity"),
        (np.array([[-0.01, 0.5]], np.float32), "[0, 1]"),
        (np.array([[0.5, 1.0001]]), "[0, 1]"),
        (np.array([[0, 255]], np.int64), "dtype"),
        (np.array([[0, 100]], np.int8), "dtype"),
        (np.zeros((2, 2, 5), np.uint8), "shape"),
        (np.zeros((2, 2, 3, 1), np.uint8), "shape"),
        (np.zeros(4, np.uint8), "shape"),
        (np.zeros((0, 4), np.uint8), "empty"),
    ],
)
def test_decode_bad_arrays(array, fragment):
    with expect_error("map", fragment):
        decode_map(array)


def _image_for_formats() -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (12, 20), dtype=np.uint8)
    return Image.fromarray(gray, "L"), gray / np.float32(255)


@pytest.mark.parametrize(
    "fmt, media, params, tolerance",
    [
        ("PNG", "image/png", {}, 0.0),
        ("WEBP", "image/webp", {"lossless": True}, 0.0),
        ("JPEG", "image/jpeg", {"quality": 95}, 0.08),
    ],
)
def test_decode_bytes_base64_and_data_urls(fmt, media, params, tolerance):
    image, expected = _image_for_formats()
    data = encode(image, fmt, **params)
    text = base64.b64encode(data).decode()
    wrapped = "\n".join(text[i : i + 60] for i in range(0, len(text), 60))
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    sources = [
        data,
        bytearray(data),
        memoryview(data),
        text,
        wrapped,
        f"  data:{media};base64,{text}  ",
        f"DATA:{media.upper()};BASE64,{wrapped}",
        urlsafe,
    ]
    for source in sources:
        result = decode_map(source)
        assert result.shape == (12, 20)
        np.testing.assert_allclose(result, expected, atol=tolerance + 1e-7)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:;base64,aGVsbG8=", "text/plain"),
        ("data:application/octet-stream;base64,aGVsbG8=", "not an image"),
        ("data:image/png,%89PNG", "base64"),
        ("data:image/png;base64", "','"),
        ("data:image/png;base64,", "empty"),
        ("not base64 at all!", "base64"),
        ("/etc/passwd", "base64"),
        ("https://example.com/map.png", "base64"),
        ("aGVsbG8gd29ybGQ=", "not a readable image"),
        ("a", "malformed"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_decode_bad_strings(text, fragment):
    with expect_error("map", fragment):
        decode_map(text)


@pytest.mark.parametrize(
    "source, fragment",
    [
        (None, "no map"),
        (b"", "empty"),
        (b"\x00garbage\xff" * 10, "not a readable image"),
        ([[0, 1]], "unsupported map type list"),
        (3.5, "unsupported map type float"),
    ],
)
def test_decode_bad_sources(source, fragment):
    with expect_error("map", fragment):
        decode_map(source)


def test_decode_truncated_png(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    rng = np.random.default_rng(2)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)), "PNG")
    with expect_error("map", "not a readable image"):
        decode_map(data[: len(data) // 2])
    with expect_error("map", "not a readable image"):
        decode_map(data[:20])  # header cut inside IHDR


def test_decode_refuses_other_formats():
    ppm = encode(Image.new("L", (4, 4), 255), "PPM")
    assert Image.open(io.BytesIO(ppm)).size == (4, 4)  # PIL itself can read it
    with expect_error("map", "not a readable image"):
        decode_map(ppm)


@pytest.mark.parametrize("limit", ["default", None])
def test_decode_refuses_bombs_before_decoding(monkeypatch, limit):
    if limit is None:  # a host may switch PIL's own check off
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    bomb = png_header(30000, 30000)
    assert len(bomb) < 200  # one row of pixel data: "too large" can only come from the header
    with expect_error("map", "too large"):
        decode_map(bomb)
    with expect_error("map", "too large"):
        decode_map(base64.b64encode(bomb).decode())


def test_decode_refuses_images_over_our_limit_but_under_pils():
    # 9000 x 9000 passes PIL's default check (89M pixels) but not ours.
    assert 9000 * 9000 < Image.MAX_IMAGE_PIXELS
    with expect_error("map", "too large", str(maps.MAX_MAP_PIXELS)):
        decode_map(png_header(9000, 9000))
    lazy = Image.open(io.BytesIO(png_header(9000, 9000)))  # not loaded yet
    with expect_error("map", "too large"):
        decode_map(lazy)
    with expect_error("map", "too large"):
        decode_map(np.broadcast_to(np.uint8(0), (9000, 9000)))


def test_decode_refuses_empty_pil_image():
    with expect_error("map", "empty"):
        decode_map(Image.new("L", (0, 5)))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_use_the_first_frame(fmt):
    frames = [Image.new("L", (8, 4), 255), Image.new("L", (8, 4), 0), Image.new("L", (8, 4), 80)]
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **params)
    image = Image.open(io.BytesIO(data))
    assert getattr(image, "n_frames", 1) == 3
    np.testing.assert_array_equal(decode_map(data), np.ones((4, 8), np.float32))
    image.seek(1)  # a caller's image sitting on another frame
    np.testing.assert_array_equal(decode_map(image), np.ones((4, 8), np.float32))
    assert image.tell() == 1  # and left where it was


# ----------------------------------------------------------------- options


def test_default_options_are_an_exact_no_op():
    m = np.random.default_rng(3).random((7, 9), dtype=np.float32)
    result = apply_options(m, MapOptions())
    np.testing.assert_array_equal(result, m)
    assert MapOptions().is_identity


def test_invert_gamma_remap_math():
    m = np.linspace(0, 1, 11, dtype=np.float32).reshape(1, 11)
    before = m.copy()
    np.testing.assert_allclose(apply_options(m, MapOptions(invert=True)), 1 - m, atol=1e-7)
    np.testing.assert_allclose(apply_options(m, MapOptions(gamma=2.0)), m**2, atol=1e-7)
    np.testing.assert_allclose(apply_options(m, MapOptions(gamma=0.5)), np.sqrt(m), atol=1e-6)
    remapped = apply_options(m, MapOptions(low=0.2, high=0.7))
    np.testing.assert_allclose(remapped, 0.2 + 0.5 * m, atol=1e-6)
    assert remapped[0, 0] == np.float32(0.2) and remapped[0, -1] == np.float32(0.7)
    # Order: invert, then gamma, then remap.
    combined = apply_options(m, MapOptions(invert=True, gamma=2.0, low=0.1, high=0.9))
    np.testing.assert_allclose(combined, 0.1 + 0.8 * (1 - m) ** 2, atol=1e-6)
    np.testing.assert_array_equal(m, before)  # input untouched
    assert apply_options(m, MapOptions(low=0.5, high=0.5)).tolist() == [[np.float32(0.5)] * 11]


def reference_blur(m: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(np.ceil(4 * sigma))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = m.astype(np.float64)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        out = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), axis, padded)
    return out


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 7.0, 40.0])
def test_blur_matches_reference_gaussian_with_reflect_edges(sigma):
    m = np.random.default_rng(4).random((23, 37), dtype=np.float32)
    result = gaussian_blur(m, sigma)
    assert result.shape == m.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, reference_blur(m, sigma), atol=2e-6)
    np.testing.assert_allclose(apply_options(m, MapOptions(blur=sigma)), result, atol=0)


def test_blur_keeps_white_white_and_spreads_an_impulse_symmetrically():
    white = np.ones((16, 24), np.float32)
    assert np.all(apply_options(white, MapOptions(blur=3.0)) == 1.0)
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    blurred = gaussian_blur(impulse, 2.0)
    np.testing.assert_allclose(blurred.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(blurred, blurred[::-1, :], atol=1e-7)
    np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)
    assert blurred[20, 20] == blurred.max() and blurred[0, 0] < 1e-6
    far = gaussian_blur(np.pad(impulse, 20), 2.0)  # beyond the kernel's reach: exactly 0
    assert np.all(far[:, :20] == 0.0) and np.all(far[:20] == 0.0)


def test_blur_comes_before_remap():
    m = np.zeros((9, 9), np.float32)
    m[4, 4] = 1.0
    result = apply_options(m, MapOptions(blur=1.0, low=0.25, high=0.75))
    np.testing.assert_allclose(result, 0.25 + 0.5 * gaussian_blur(m, 1.0), atol=1e-6)
    assert result.min() >= np.float32(0.25)


# --------------------------------------------------------------- alignment


def host_resize_image(resize_mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111 v1.10.1's resize_image (tests/a1111_images.py), as used for RGB init images."""
    return a1111_images.resize_image(resize_mode, im, width, height)


def host_init_image(init: Image.Image, mode: int, width: int, height: int, crop=None) -> Image.Image:
    """What processing.py's img2img init does to the init image's geometry."""
    if crop is not None:  # inpaint "only masked"
        return host_resize_image(2, init.crop(crop), width, height)
    if mode == 3:  # latent upscale: the latent is stretched bilinearly
        return init.resize((width, height), Image.BILINEAR)
    return host_resize_image(mode, init, width, height)


INIT_W, INIT_H = 300, 200
BLOCKS = [(60, 40, 180, 120), (210, 0, 270, 60), (0, 150, 30, 200)]  # init pixels, x0 y0 x1 y1


def init_image() -> Image.Image:
    """Blue init image with red blocks, two touching the borders."""
    pixels = np.zeros((INIT_H, INIT_W, 3), np.uint8)
    pixels[:, :, 2] = 255
    for x0, y0, x1, y1 in BLOCKS:
        pixels[y0:y1, x0:x1] = (255, 0, 0)
    return Image.fromarray(pixels, "RGB")


def block_map(map_w: int, map_h: int) -> np.ndarray:
    """A map of any size whose white blocks cover the init image's red blocks
    once the map is stretched over the init image."""
    m = np.zeros((map_h, map_w), np.float32)
    sx, sy = map_w / INIT_W, map_h / INIT_H
    for x0, y0, x1, y1 in BLOCKS:
        m[round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)] = 1.0
    return m


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(mask, radius)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def assert_same_footprint(map_mask: np.ndarray, image_mask: np.ndarray, tolerance: int = 2) -> None:
    """The masks agree except within ``tolerance`` px of the image's edges."""
    assert map_mask.shape == image_mask.shape
    assert image_mask.any() and (~image_mask).any()
    edges = grow(image_mask, tolerance) & grow(~image_mask, tolerance)
    wrong = map_mask != image_mask
    assert not (wrong & ~edges).any(), f"{int((wrong & ~edges).sum())} pixels misplaced"
    overlap = (map_mask & image_mask).sum() / (map_mask | image_mask).sum()
    assert overlap > 0.85, overlap


SIZES = [(512, 256), (256, 384), (200, 200), (96, 160), (600, 400), (152, 151)]
MAP_SIZES = [(INIT_W, INIT_H), (150, 400), (900, 100)]


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("map_size", MAP_SIZES, ids=[f"map{w}x{h}" for w, h in MAP_SIZES])
def test_map_lands_where_the_init_image_lands(mode, size, map_size):
    width, height = size
    host = np.asarray(host_init_image(init_image(), mode, width, height))
    image_mask = host[:, :, 0] > 127
    aligned = align_map(block_map(*map_size), Geometry(init_size=(INIT_W, INIT_H), width=width, height=height, resize_mode=mode))
    assert aligned.shape == (height, width) and aligned.dtype == np.float32
    assert aligned.min() >= 0.0 and aligned.max() <= 1.0
    assert_same_footprint(aligned > 0.5, image_mask)


CROPS = [(50, 20, 250, 170), (200, 0, 300, 200), (0, 100, 300, 200)]


@pytest.mark.parametrize("crop", CROPS)
@pytest.mark.parametrize("size", [(256, 128), (128, 256), (160, 120)])
@pytest.mark.parametrize("map_size", MAP_SIZES[:2], ids=["map-init-size", "map-150x400"])
def test_only_masked_crop_lands_where_the_init_crop_lands(crop, size, map_size):
    width, height = size
    host = np.asarray(host_init_image(init_image(), 0, width, height, crop=crop))
    for mode in (0, 1):  # the resize mode is irrelevant with a crop region
        aligned = align_map(
            block_map(*map_size), Geometry(init_size=(INIT_W, INIT_H), width=width, height=height, resize_mode=mode, crop_region=crop))
        assert aligned.shape == (height, width)
        assert_same_footprint(aligned > 0.5, host[:, :, 0] > 127)


def test_white_stays_exactly_white_and_canvas_gaps_match_the_host():
    white = np.ones((77, 123), np.float32)
    for mode in (0, 1, 3):
        for size in SIZES:
            assert np.all(align_map(white, Geometry(init_size=(INIT_W, INIT_H), width=size[0], height=size[1], resize_mode=mode)) == 1.0)
    # Mode 2 with an odd height and an even fitted height: the host's integer
    # arithmetic leaves the last row black; the map leaves it 0 (no change).
    host = np.asarray(host_resize_image(2, Image.new("RGB", (INIT_W, INIT_H), "white"), 150, 151))
    aligned = align_map(white, Geometry(init_size=(INIT_W, INIT_H), width=150, height=151, resize_mode=2))
    black = host.max(axis=2) == 0
    assert black[150].all() and black.sum() == 150
    np.testing.assert_array_equal(aligned == 0.0, black)
    assert np.all(aligned[~black] == 1.0)


def test_mode_2_fill_bands_copy_the_edge_rows():
    m = np.random.default_rng(5).random((40, 60), dtype=np.float32)  # same size as init
    aligned = align_map(m, Geometry(init_size=(60, 40), width=60, height=80, resize_mode=2))
    # 60x40 fits 60x80 unscaled at rows 20..59; bands copy rows 0 and 39.
    np.testing.assert_array_equal(aligned[20:60], m)
    np.testing.assert_array_equal(aligned[:20], np.broadcast_to(m[0], (20, 60)))
    np.testing.assert_array_equal(aligned[60:], np.broadcast_to(m[-1], (20, 60)))


def test_mode_1_crops_the_centre():
    m = np.random.default_rng(6).random((40, 80), dtype=np.float32)
    aligned = align_map(m, Geometry(init_size=(80, 40), width=40, height=40, resize_mode=1))
    np.testing.assert_array_equal(aligned, m[:, 20:60])


def test_mode_3_is_a_stretch_and_identity_is_exact():
    m = np.random.default_rng(7).random((50, 70), dtype=np.float32)
    kwargs = {"init_size": (140, 100), "width": 96, "height": 64}
    np.testing.assert_array_equal(align_map(m, Geometry(resize_mode=3, **kwargs)), align_map(m, Geometry(resize_mode=0, **kwargs)))
    same = align_map(m, Geometry(init_size=(70, 50), width=70, height=50, resize_mode=1))
    np.testing.assert_array_equal(same, m)
    assert same is m  # nothing to resample: no copy
    part = align_map(m, Geometry(init_size=(70, 50), width=30, height=25, crop_region=(10, 5, 40, 30)))
    np.testing.assert_array_equal(part, m[5:30, 10:40])
    assert not np.shares_memory(part, m)  # a part is a new array


def test_downscaling_is_area_averaging():
    m = np.random.default_rng(8).random((64, 96), dtype=np.float32)
    aligned = align_map(m, Geometry(init_size=(96, 64), width=24, height=16, resize_mode=0))
    expected = m.reshape(16, 4, 24, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(aligned, expected, atol=1e-6)
    # Other factors: PIL's box filter over the same source box.
    m = m[:10, :15]
    aligned = align_map(m, Geometry(init_size=(15, 10), width=9, height=6, resize_mode=0))
    np.testing.assert_allclose(aligned, np.asarray(Image.fromarray(m, "F").resize((9, 6), Image.BOX)), atol=1e-6)


def test_upscaling_is_pils_bilinear_with_the_same_box():
    m = np.random.default_rng(12).random((20, 30), dtype=np.float32)
    aligned = align_map(m, Geometry(init_size=(30, 20), width=75, height=50, resize_mode=0))
    expected = np.asarray(Image.fromarray(m, "F").resize((75, 50), Image.BILINEAR))
    np.testing.assert_allclose(aligned, expected, atol=1e-6)
    # Only masked: init 60x40 (the map is stretched 2x over it), crop 40x32 at
    # (7, 5) = map box (3.5, 2.5, 23.5, 18.5); mode 2 fits it as 62x50 at x=6.
    aligned = align_map(m, Geometry(init_size=(60, 40), width=75, height=50, resize_mode=0, crop_region=(7, 5, 47, 37)))
    fitted = np.asarray(Image.fromarray(m, "F").resize((62, 50), Image.BILINEAR, box=(3.5, 2.5, 23.5, 18.5)))
    np.testing.assert_allclose(aligned[:, 6:68], fitted, atol=1e-6)
    np.testing.assert_array_equal(aligned[:, :6], np.repeat(aligned[:, 6:7], 6, axis=1))
    np.testing.assert_array_equal(aligned[:, 68:74], np.repeat(aligned[:, 67:68], 6, axis=1))
    assert np.all(aligned[:, 74] == 0.0)  # the host's integer arithmetic leaves a black column


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"resize_mode": 4}, "resize_mode"),
        ({"resize_mode": "0"}, "resize_mode"),
        ({"width": 0}, "size"),
        ({"height": -8}, "size"),
        ({"width": 10000, "height": 10000}, "size"),
        ({"init_size": (0, 10)}, "size"),
        ({"crop_region": (0, 0, 65, 10)}, "crop_region"),
        ({"crop_region": (10, 0, 10, 10)}, "crop_region"),
        ({"crop_region": (-1, 0, 10, 10)}, "crop_region"),
    ],
)
def test_geometry_refuses_what_no_host_produces(kwargs, field):
    with expect_error(field):
        Geometry(**{"init_size": (64, 64), "width": 32, "height": 32, "resize_mode": 0, **kwargs})


def test_align_refuses_non_maps():
    for bad in (np.zeros((4, 4, 3), np.float32), np.zeros((0, 4), np.float32), [[0.0]]):
        with expect_error("map", "2-D"):
            align_map(bad, Geometry(init_size=(4, 4), width=4, height=4, resize_mode=0))  # type: ignore[arg-type]
    with expect_error("map", "decode_map"):
        align_map(np.full((4, 4), 255, np.uint8), Geometry(init_size=(4, 4), width=4, height=4, resize_mode=0))
    halves = align_map(np.full((4, 4), 0.5), Geometry(init_size=(4, 4), width=2, height=2, resize_mode=0))  # float64 is fine
    assert halves.dtype == np.float32 and np.all(halves == 0.5)


# ------------------------------------------------------------------ latent


def test_latent_of_a_one_pixel_line_is_one_eighth():
    m = np.zeros((64, 96), np.float32)
    m[13, :] = 1.0
    latent = to_latent(m, (8, 12))
    assert latent.shape == (1, 1, 8, 12) and latent.dtype == torch.float32
    same = to_latent(m, (64, 96))
    torch.testing.assert_close(same[0, 0], torch.from_numpy(m), rtol=0, atol=0)
    same.zero_()
    assert m[13, 0] == 1.0  # the latent never shares memory with the map
    expected = torch.zeros(8, 12)
    expected[1] = 1 / 8
    torch.testing.assert_close(latent[0, 0], expected, rtol=0, atol=0)
    vertical = to_latent(np.ascontiguousarray(m[:, :64].T), (12, 8))[0, 0]  # 64 wide, 96 high
    assert torch.all(vertical[:, 1] == 1 / 8) and vertical.sum() == 12 / 8


def test_latent_of_a_diagonal_keeps_equal_mass_per_block():
    m = np.eye(64, dtype=np.float32)
    latent = to_latent(m, (8, 8))[0, 0]
    torch.testing.assert_close(latent, torch.eye(8) / 8, rtol=0, atol=0)
    m = np.zeros((48, 96), np.float32)
    m[np.arange(48), np.arange(0, 96, 2)] = 1.0  # a slope-1/2 line
    latent = to_latent(m, (6, 12))[0, 0]
    nonzero = latent[latent > 0]
    assert len(nonzero) == 12 and torch.all(nonzero == 4 / 64)


def test_latent_area_average_preserves_the_mean():
    m = np.random.default_rng(9).random((80, 120), dtype=np.float32)
    latent = to_latent(m, (10, 15))
    torch.testing.assert_close(latent[0, 0], torch.from_numpy(m.reshape(10, 8, 15, 8).mean(axis=(1, 3))))
    odd = to_latent(m[:77, :115], (9, 14))  # not divisible: overlapping bins
    assert odd.shape == (1, 1, 9, 14)
    assert abs(float(odd.mean()) - float(m[:77, :115].mean())) < 0.01
    assert float(odd.min()) >= 0.0 and float(odd.max()) <= 1.0




def test_latent_of_an_8bit_map_sums_its_stored_values_exactly():
    stored = np.random.default_rng(10).integers(0, 256, (80, 120)).astype(np.uint8)
    stored[:8, :8] = 255  # a white block stays exactly 1, a black one exactly 0
    stored[8:16, :8] = 0
    decoded = decode_map(stored)
    as_stored = MapValues.decoded(stored)
    assert as_stored.stored_8bit is stored and np.array_equal(decoded, EIGHT_BIT_VALUES[stored])
    latent = to_latent(as_stored, (10, 15))[0, 0]
    exact = (stored.reshape(10, 8, 15, 8).sum(axis=(1, 3), dtype=np.int64) / (64 * 255)).astype(np.float32)
    assert np.array_equal(latent.numpy(), exact) and latent[0, 0] == 1.0 and latent[1, 0] == 0.0
    torch.testing.assert_close(latent, to_latent(decoded, (10, 15))[0, 0], rtol=1e-6, atol=1e-7)  # the float path, to rounding
    # Other blocks: widths with and without whole groups of four columns, and the largest block all white.
    white = np.full((64, 64), 255, np.uint8)
    for pixels, latent_hw in ((stored, (16, 40)), (stored, (20, 10)), (stored, (5, 30)), (stored, (80, 120)), (white, (4, 4)), (white, (16, 4))):
        block_h, block_w = pixels.shape[0] // latent_hw[0], pixels.shape[1] // latent_hw[1]
        sums = pixels.reshape(latent_hw[0], block_h, latent_hw[1], block_w).sum(axis=(1, 3), dtype=np.int64)
        assert np.array_equal(to_latent(MapValues.decoded(pixels), latent_hw)[0, 0].numpy(), (sums / (block_h * block_w * 255)).astype(np.float32))
    # Blocks that do not tile the map: the float path, whatever is stored.
    odd = stored[:77, :115]
    assert torch.equal(to_latent(MapValues.decoded(odd), (9, 14)), to_latent(decode_map(odd), (9, 14)))
    # The floats of an 8-bit map are made on first use, as decode_map makes them.
    assert as_stored._values is None and np.array_equal(as_stored.values, decoded) and as_stored.values is as_stored.values
    # Only 2-D 8-bit pixels keep their stored values; the rest decode at once.
    for other in (np.dstack([stored] * 3), stored.astype(np.uint16) * 257, decoded):
        kept = MapValues.decoded(other)
        assert kept.stored_8bit is None and np.array_equal(kept.values, decode_map(other))
    with pytest.raises(DifferentialDiffusionError, match="empty"):
        MapValues.decoded(np.zeros((0, 4), np.uint8))  # checked when decoded, not when first read


@pytest.mark.parametrize("seed", range(4))
def test_keeps_whole_map_is_when_align_map_hands_the_map_back(seed):
    """The test ``pixel_strengths`` uses to keep an 8-bit map as it is: true exactly when
    ``align_map`` returns the map itself, over geometries that do and do not resample or cut."""
    rng = np.random.default_rng(seed)
    seen = set()
    for _ in range(150):
        map_w, map_h = (int(v) for v in rng.integers(16, 40, 2))
        same = bool(rng.integers(0, 2))
        width, height = (map_w, map_h) if same else tuple(int(v) for v in rng.integers(16, 40, 2))
        init = (map_w, map_h) if rng.integers(0, 2) else tuple(int(v) for v in rng.integers(16, 60, 2))
        crop = None
        if rng.integers(0, 4) == 0:
            x1, y1 = int(rng.integers(0, init[0])), int(rng.integers(0, init[1]))
            crop = (x1, y1, int(rng.integers(x1 + 1, init[0] + 1)), int(rng.integers(y1 + 1, init[1] + 1)))
            if rng.integers(0, 2):
                crop = (0, 0, *init)
        geometry = Geometry(init, width, height, int(rng.integers(0, 4)), crop)
        values = rng.random((map_h, map_w), dtype=np.float32)
        whole = keeps_whole_map(values.shape, geometry)
        assert whole == (align_map(values, geometry) is values), geometry
        # Independently of align_map: the host's resize of this geometry is a view of the whole map.
        mode, box, image_size = maps._source_box(values.shape, geometry)
        resized = maps._resize_image(mode, values, box, image_size, geometry.width, geometry.height)
        assert whole == (np.may_share_memory(resized, values) and resized.shape == values.shape), geometry
        seen.add(whole)
    assert seen == {True, False}


def test_map_hash_is_the_same_for_one_picture_in_any_form():
    """The infotext's map hash: one 8-bit picture as a PIL image, PNG bytes, base64 or a data URL
    hashes alike (and decodes as decode_map does); other pixels, or the same bytes in another
    shape or depth, hash differently."""
    rng = np.random.default_rng(5)
    values = rng.integers(0, 256, (24, 32)).astype(np.uint8)
    image = Image.fromarray(values, "L")
    png = encode(image, "PNG")
    forms = [image, png, base64.b64encode(png).decode(), "data:image/png;base64," + base64.b64encode(png).decode(), values]
    results = [maps.decode_map_and_hash(form) for form in forms]
    assert len({digest for _, digest in results}) == 1 and len(results[0][1]) == 10
    for decoded, _ in results:
        assert np.array_equal(decoded.values, decode_map(image))
    other = values.copy()
    other[0, 0] ^= 1
    assert maps.decode_map_and_hash(other)[1] != results[0][1]
    assert maps.decode_map_and_hash(values.reshape(32, 24))[1] != results[0][1]
    assert maps.decode_map_and_hash(values.astype(np.uint16) * 257)[1] != results[0][1]
