"""Real-host proofs for the strength fan (map source "fan").

A fan is an ordinary change map drawn by the extension, so a fan run must be
bit for bit the run of the same map uploaded; the labelled copies come after
every image the host returns and leave X/Y/Z grids alone. Bit-for-bit
comparisons prime the request (tests/webui/README.md).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from lib_differential_diffusion.fan import fan_map
from lib_differential_diffusion.maps import decode_map
from webui.host import SCRIPT_TITLE, decode_images, images_equal, make_init_image, max_change, mean_change, png_b64, post_img2img, response_info
from webui.host import xyz_args, xyz_axis_labels

pytestmark = pytest.mark.webui

SIZE = 64
COUNT = 4  # 64 px: four bands of 16 px, two latent columns each


def fan(**options) -> dict:
    return {SCRIPT_TITLE: {"args": [{"source": "fan", "fan_count": COUNT, **options}]}}


def fan_upload() -> Image.Image:
    """The default fan's own map as an 8-bit image (COUNT 4: 0, 85, 170, 255 decode to 0, 1/3, 2/3, 1 exactly)."""
    return Image.fromarray(np.rint(fan_map(SIZE, SIZE, COUNT, "vertical bands") * 255).astype(np.uint8), "L")


def ok(response) -> tuple[list[Image.Image], dict]:
    assert response.status_code == 200, response.text[:500]
    return decode_images(response), response_info(response)


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def test_fan_equals_its_map_uploaded_and_adds_a_labelled_copy(sd1_server):
    init = make_init_image(SIZE, SIZE)
    upload = fan_upload()
    assert np.array_equal(decode_map(upload), fan_map(SIZE, SIZE, COUNT, "vertical bands"))  # the upload is exact
    images, info = ok(post_img2img(sd1_server, init_image=init, prime=True, denoising_strength=0.8, alwayson_scripts=fan()))
    as_map_args = {SCRIPT_TITLE: {"args": [{"map": png_b64(upload)}]}}
    (as_map,), _ = ok(post_img2img(sd1_server, init_image=init, prime=True, denoising_strength=0.8, alwayson_scripts=as_map_args))
    assert len(images) == 2 and len(info["infotexts"]) == 2, (len(images), len(info["infotexts"]))
    result, copy = images
    assert max_change(result, as_map) == 0, "the fan run differs from its map uploaded"
    assert copy.size == result.size and not images_equal(copy, result)
    assert "DD source: fan" in info["infotexts"][1] and f"DD fan count: {COUNT}" in info["infotexts"][1]
    band = SIZE // COUNT
    assert np.array_equal(rgb(result)[:, : band - 4], rgb(init)[:, : band - 4]), "region #1 (strength 0) changed"
    changes = [mean_change(result, init, (i * band + 4, 0, (i + 1) * band - 4, SIZE)) for i in range(COUNT)]
    assert changes[0] == 0 and min(changes[1:]) > 1, changes


def test_fan_batch_copies_follow_the_images_and_grid(sd1_server):
    init = make_init_image(SIZE, SIZE)
    images, info = ok(post_img2img(sd1_server, init_image=init, batch_size=2, denoising_strength=0.8, alwayson_scripts=fan(fan_layout="radial sectors")))
    grid = 1 if len(images) == 5 else 0  # the host returns a grid first when its "return grid" option is on
    assert len(images) == grid + 4 and len(info["infotexts"]) == len(images)
    generated, copies = images[grid : grid + 2], images[grid + 2 :]
    assert not images_equal(generated[0], generated[1])
    for index in (0, 1):  # each copy is its own image, labelled: close to it, far from the other
        assert mean_change(copies[index], generated[index]) < mean_change(copies[index], generated[1 - index])
        assert "DD fan layout: radial sectors" in info["infotexts"][grid + 2 + index]


def test_fan_copies_are_saved_with_their_suffix(sd1_server):
    started = time.time()
    images, _ = ok(post_img2img(sd1_server, save_images=True, alwayson_scripts=fan(fan_layout="horizontal bands")))
    saved = [path for path in sd1_server.data_dir.rglob("*-dd-fan.png") if path.stat().st_mtime >= started - 1]
    assert len(saved) == 1, saved
    with Image.open(saved[0]) as copy:
        assert max_change(copy, images[1]) == 0
        assert "DD fan layout: horizontal bands" in copy.info.get("parameters", "")


def test_xyz_cells_of_a_fan_are_the_fan_runs_without_copies(ui_server):
    """X/Y/Z over "[Differential Diffusion] High" with a fan: one grid and one image per cell,
    each cell the fan run's image (the labelled copies stay out of the grid)."""
    labels = xyz_axis_labels(ui_server)
    axis = labels.index(f"[{SCRIPT_TITLE}] High")
    init = make_init_image(SIZE, SIZE)
    highs = (0.5, 1.0)
    post_img2img(ui_server, init_image=init)  # same seed and size before: cells are reproducible
    images, info = ok(post_img2img(ui_server, init_image=init, alwayson_scripts=fan(), script_name="x/y/z plot",
                                   script_args=xyz_args(ui_server, axis, ", ".join(str(h) for h in highs))))
    assert len(images) == 1 + len(highs), f"{len(images)} images: grid + cells expected"
    for high, cell, text in zip(highs, images[1:], info["infotexts"][1:]):
        assert f"DD high: {high}" in text and "DD source: fan" in text
        direct, _ = ok(post_img2img(ui_server, init_image=init, prime=True, alwayson_scripts=fan(high=high)))
        assert len(direct) == 2 and max_change(direct[0], cell) == 0, f"cell high={high} differs from its direct run"
