"""Differential Diffusion with a ControlNet unit (Mikubill/sd-webui-controlnet, real A1111 host).

No ControlNet weights can be downloaded, so both models are seeded random ones made into
``SD_WEBUI_CACHE`` on first use: the full-size SD1.5 checkpoint (``make_sd15_checkpoint.py
--full`` from the fixtures; the stock ControlNet SD1.5 config needs model_channels 320,
channel_mult 1,2,4,4, which no small fixture has) and a ControlNet built from the extension's
own ``ControlNet`` class and SD1.5 config (``make_controlnet_checkpoint.py`` here; its
zero convolutions get small random weights, else the unit would add exactly nothing).

The extension's checkout must be in ``SD_WEBUI_TEST_EXTENSIONS/sd-webui-controlnet``; the
server loads it next to this one, its models from ``--controlnet-dir``. Without it (or on a
Forge-family host, whose ControlNet is built in) the tests skip.

One unit (preprocessor "none", the random model, weight 1, the init image as control image):
* it changes the output (else the comparisons below prove nothing);
* an all-white map with the unit == plain img2img with the unit, bit for bit;
* the map's black left half keeps the input pixel for pixel, the white half changes.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from webui.host import (GENERATED_CHECKPOINTS, MEASUREMENTS, ServerSpec, decode_images, images_equal, make_init_image,
                        make_map_image, max_change, mean_change, png_b64, post_img2img)
from webui.test_extension import assert_dd_in_infotext, assert_ok, dd, image_rgb, last_run

pytestmark = pytest.mark.webui

CN_EXTENSION = "sd-webui-controlnet"
CN_STEM = "control_sd15_rand"
HERE = Path(__file__).resolve().parent

# The full-size SD1.5 UNet (860M params, about 2 GB in fp16, 1 min to write) that a stock SD1.5
# ControlNet config matches.
GENERATED_CHECKPOINTS.setdefault("sd15_full", {
    "stem": "sd15_full_rand", "script": "make_sd15_checkpoint.py", "args": ("--full",), "ldm": True,
    "env": "SD_WEBUI_SD15_FULL_CKPT"})

# 64x64, 6 Euler steps: the full SD1.5 UNet plus the ControlNet take a few seconds per run on CPU.
RUN = dict(steps=6, sampler_name="Euler", denoising_strength=0.6, timeout=600)


def measure(line: str) -> None:
    MEASUREMENTS.append(line)
    print(line)


def controlnet_checkout() -> Path:
    others = os.environ.get("SD_WEBUI_TEST_EXTENSIONS", "").strip()
    path = Path(others) / CN_EXTENSION if others else None
    if path is None or not (path / "scripts" / "cldm.py").is_file():
        pytest.skip(f"no {CN_EXTENSION} checkout in SD_WEBUI_TEST_EXTENSIONS ({others or 'unset'})")
    return path


def controlnet_model_dir(host, checkout: Path) -> Path:
    """A folder holding only the seeded random ControlNet (made once into the cache)."""
    cache = Path(os.environ.get("SD_WEBUI_CACHE", "").strip() or Path(tempfile.gettempdir()) / "sd-webui-differential-diffusion-cache")
    folder = cache / "controlnet-sd15"
    target = folder / f"{CN_STEM}.safetensors"
    if not target.is_file():
        ldm_root = host._ldm_root()
        if ldm_root is None:
            pytest.skip("no WebUI tree with repositories/stable-diffusion-stability-ai for make_controlnet_checkpoint.py")
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{CN_STEM}.partial"
        command = [str(host.python), str(HERE / "make_controlnet_checkpoint.py"), "--out", str(partial),
                   "--webui-root", str(ldm_root), "--controlnet-root", str(checkout)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not partial.is_file():
            raise RuntimeError(f"could not generate the ControlNet checkpoint: {' '.join(command)}\n{done.stderr[-2000:]}")
        partial.rename(target)
    return folder


@pytest.fixture(scope="module")
def cn_server(webui_host, webui_servers):
    if webui_host.kind != "a1111":
        pytest.skip(f"{webui_host.profile.title}: sd-webui-controlnet is an A1111 extension (Forge-family hosts have their own)")
    checkout = controlnet_checkout()
    models = controlnet_model_dir(webui_host, checkout)
    spec = ServerSpec("controlnet", "sd15_full_rand", generated="sd15_full", extensions=(CN_EXTENSION,),
                      extra_args=("--controlnet-dir", str(models)))
    server = webui_servers.acquire(spec)
    if "controlnet" not in [s["name"] for s in server.get("/sdapi/v1/script-info").json() if s["is_img2img"]]:
        # Its own dependencies are the host environment's business (the harness skips install.py):
        # say which one is missing, in one line.
        errors = [line.strip() for line in server.startup_log().splitlines() if "Error" in line]
        pytest.skip(f"{CN_EXTENSION} did not load on the host ({errors[-1] if errors else 'no error logged'}); see tests/webui/README.md")
    return server


@pytest.fixture(scope="module")
def cn_model(cn_server) -> str:
    names = cn_server.get("/controlnet/model_list").json()["model_list"]
    found = [n for n in names if n.startswith(CN_STEM)]
    assert found, f"the random ControlNet is not listed: {names}"
    return found[0]


def unit(model: str, image) -> dict:
    return {"enabled": True, "module": "none", "model": model, "weight": 1.0, "image": png_b64(image),
            "resize_mode": "Just Resize", "control_mode": "Balanced", "guidance_start": 0.0, "guidance_end": 1.0,
            "pixel_perfect": False, "processor_res": 64}


def with_unit(model: str, image, extra: dict | None = None) -> dict:
    scripts = {"controlnet": {"args": [unit(model, image)]}}
    scripts.update(extra or {})
    return scripts


def test_controlnet_unit_changes_output_and_all_ones_map_is_plain(cn_server, cn_model):
    init = make_init_image(64, 64)
    t0 = time.monotonic()
    # Without the unit only to show that the unit matters (no exact comparison: no priming run).
    plain = decode_images(assert_ok(post_img2img(cn_server, init_image=init, **RUN)))[0]
    r_cn = assert_ok(post_img2img(cn_server, init_image=init, prime=True, alwayson_scripts=with_unit(cn_model, init), **RUN))
    cn = decode_images(r_cn)[0]
    ones = assert_ok(post_img2img(cn_server, init_image=init, prime=True, **RUN,
                                  alwayson_scripts=with_unit(cn_model, init, dd(make_map_image(kind="constant", high=255)))))
    assert_dd_in_infotext(ones)
    assert not last_run(cn_server)["active"], "an all-white map pins no pixel: the engine must stay out of the way"
    out = decode_images(ones)[0]
    unit_effect = mean_change(image_rgb(cn), image_rgb(plain))
    measure(f"ControlNet (random SD1.5, module none, weight 1): unit vs no unit mean {unit_effect:.2f} max {max_change(image_rgb(cn), image_rgb(plain))}; "
            f"plain+unit vs input mean {mean_change(image_rgb(cn), init):.2f}; all-ones map + unit vs plain + unit: max {max_change(image_rgb(out), image_rgb(cn))} "
            f"({time.monotonic() - t0:.0f}s)")
    assert unit_effect > 1, "the ControlNet unit does not change the output: the comparison would prove nothing"
    assert mean_change(image_rgb(cn), init) > 5, "img2img with the unit did not change the image"
    assert images_equal(image_rgb(out), image_rgb(cn)), \
        f"all-ones map + unit differs from plain img2img + unit: max {max_change(out, cn)}, mean {mean_change(out, cn):.3f}"


def test_controlnet_unit_with_halves_map_keeps_the_black_half(cn_server, cn_model):
    init = make_init_image(64, 64)
    t0 = time.monotonic()
    r = assert_ok(post_img2img(cn_server, init_image=init, **RUN,
                               alwayson_scripts=with_unit(cn_model, init, dd(make_map_image(kind="halves")))))
    assert_dd_in_infotext(r)
    result = np.asarray(image_rgb(decode_images(r)[0]), dtype=int)
    source = np.asarray(init, dtype=int)
    kept = int(np.abs(result[:, :28] - source[:, :28]).max())
    changed = float(np.abs(result[:, 36:] - source[:, 36:]).mean())
    measure(f"ControlNet unit + halves map: left columns 0..27 max diff {kept}, right columns 36.. mean change {changed:.1f} "
            f"({time.monotonic() - t0:.0f}s)")
    assert kept == 0, f"the black half changed under a ControlNet unit: max {kept}"
    assert changed > 2, f"the white half did not change: mean {changed:.2f}"
