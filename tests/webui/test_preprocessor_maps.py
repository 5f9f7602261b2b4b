"""Maps made from the init image by the host's preprocessors (map source "preprocessor").

A1111 gets preprocessors from sd-webui-controlnet (its checkout in ``SD_WEBUI_TEST_EXTENSIONS``);
the Forge family has them built in. A weight-free one (``threshold``) and a depth model
(``depth_midas``: its weights, seeded random, are made at test time with the host's own copy of
the annotator code by ``make_midas_checkpoint.py``, where the preprocessor looks for them) make
maps; each map the run used must be the host's own output for that image (its
``/controlnet/detect`` route, with the parameters the run used), and its black part is kept exactly.
"""
from __future__ import annotations

import base64
import io
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.host import (MEASUREMENTS, ServerSpec, decode_images, images_equal, make_init_image, max_change, png_b64, post_img2img,
                        response_info, xyz_args, xyz_axis_labels)
from webui.test_controlnet import CN_EXTENSION, controlnet_checkout
from webui.test_extension import assert_ok, dd, last_run

pytestmark = pytest.mark.webui

HERE = Path(__file__).resolve().parent
SIZE = 128  # the Forge family's preprocessors work at 128 px and more
MIDAS = Path("midas") / "dpt_hybrid-midas-501f0c75.pt"
NAMES = ("threshold", "depth_midas")


def annotator_root(host) -> Path:
    """The folder holding the host's ``annotator/`` code."""
    if host.kind == "a1111":
        return controlnet_checkout()
    return host.root / "extensions-builtin" / "forge_legacy_preprocessors"


def annotator_models(host) -> Path:
    """A folder holding only the random MiDaS weights (made once per host kind: its timm builds them)."""
    cache = Path(os.environ.get("SD_WEBUI_CACHE", "").strip() or Path(tempfile.gettempdir()) / "sd-webui-differential-diffusion-cache")
    folder = cache / f"annotators-{host.kind}"
    if not (folder / MIDAS).is_file():
        root = annotator_root(host)
        if not (root / "annotator" / "midas").is_dir():
            pytest.skip(f"{host.profile.title}: no annotator/midas code in {root}")
        command = [str(host.python), str(HERE / "make_midas_checkpoint.py"), "--annotator-root", str(root), "--out", str(folder / MIDAS)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"could not make the MiDaS weights: {' '.join(command)}\n{done.stderr[-2000:]}")
    return folder


@pytest.fixture(scope="module")
def server(webui_host, webui_servers):
    models = annotator_models(webui_host)
    if webui_host.kind == "a1111":
        spec = ServerSpec("preprocessors", "sd1_graded", extensions=(CN_EXTENSION,), options=(("control_net_modules_path", str(models)),))
    else:
        spec = ServerSpec("preprocessors", "sd1_graded", extra_args=("--controlnet-preprocessor-models-dir", str(models)))
    server = webui_servers.acquire(spec)
    names = server.get("/differential-diffusion/v1/schema").json()["properties"]["preprocessor"]["enum"]
    if webui_host.kind == "a1111" and not names:
        pytest.skip(f"{CN_EXTENSION} did not load on the host (the schema lists no preprocessor)")
    missing = [name for name in NAMES if name not in names]
    if missing:
        pytest.skip(f"{webui_host.profile.title} has no {', '.join(missing)} preprocessor (it has: {', '.join(names) or 'none'})")
    return server


def detect(server, name: str, image: Image.Image, used: dict) -> np.ndarray:
    """The host's own output for ``image`` (its /controlnet/detect route), read as gray in [0, 1]."""
    body = {"controlnet_module": name, "controlnet_input_images": [png_b64(image)], "controlnet_processor_res": used["resolution"],
            "controlnet_threshold_a": used["slider_1"], "controlnet_threshold_b": used["slider_2"]}
    response = server.post("/controlnet/detect", body, timeout=600)
    assert response.status_code == 200, response.text[:500]
    (encoded,) = response.json()["images"]
    output = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded.partition(",")[2] or encoded))).convert("RGB"), dtype=np.float32)
    assert np.array_equal(output[..., 0], output[..., 1]) and np.array_equal(output[..., 0], output[..., 2]), "a gray map"
    return output[..., 0] / 255.0


def used_map(server, index: int = 0) -> tuple[np.ndarray, dict]:
    report = last_run(server)
    encoded = report["image_maps"][index]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))), dtype=np.float64) / 65535.0, report["preprocessor_parameters"][index]


def generate(server, alwayson=None, init=None, **payload):
    init = init or make_init_image(SIZE, SIZE)
    response = assert_ok(post_img2img(server, init_image=init, width=SIZE, height=SIZE, denoising_strength=0.75, steps=6, prime=True,
                                      **({} if alwayson is None else {"alwayson_scripts": alwayson}), **payload))
    return decode_images(response), response


@pytest.mark.parametrize("name", NAMES)
def test_the_map_is_the_preprocessors_own_output_and_its_black_is_kept(server, name):
    init = make_init_image(SIZE, SIZE)
    (out,), response = generate(server, dd(source="preprocessor", preprocessor=name))
    made, used = used_map(server)
    assert used["resolution"] == SIZE
    expected = detect(server, name, init, used)
    assert made.shape == expected.shape and np.abs(made - expected).max() < 1 / 65535 + 1e-9
    kept = made == 0
    assert kept.any() and not kept.all(), f"{name}: the map should keep some pixels and change others"
    assert np.array_equal(np.asarray(out.convert("RGB"))[kept], np.asarray(init.convert("RGB"))[kept])
    assert not images_equal(out, init)
    params = response_info(response)["extra_generation_params"]
    assert params["DD source"] == "preprocessor" and params["DD preprocessor"] == name
    MEASUREMENTS.append(f"preprocessor {name}: map mean {made.mean():.3f}, kept {kept.mean():.1%} of the pixels, ran with {used}")


def test_each_image_of_a_batch_gets_its_own_map(server):
    images = [make_init_image(SIZE, SIZE), make_init_image(SIZE, SIZE).transpose(Image.FLIP_LEFT_RIGHT)]
    response = assert_ok(post_img2img(server, init_image=images[0], width=SIZE, height=SIZE, steps=6, batch_size=2,
                                      init_images=[png_b64(image) for image in images], alwayson_scripts=dd(source="preprocessor", preprocessor="threshold")))
    assert len(decode_images(response)) == 2
    for index, image in enumerate(images):
        made, used = used_map(server, index)
        assert np.abs(made - detect(server, "threshold", image, used)).max() < 1 / 65535 + 1e-9
    assert not np.array_equal(used_map(server, 0)[0], used_map(server, 1)[0])


def test_the_schema_lists_the_hosts_preprocessors_and_an_unknown_one_is_refused(server):
    names = server.get("/differential-diffusion/v1/schema").json()["properties"]["preprocessor"]["enum"]
    assert set(NAMES) <= set(names) and "none" not in names and "None" not in names
    response = post_img2img(server, init_image=make_init_image(SIZE, SIZE), width=SIZE, height=SIZE, steps=2,
                            alwayson_scripts=dd(source="preprocessor", preprocessor="no such preprocessor"))
    assert response.status_code == 422, response.text[:300]
    assert "preprocessor: unknown preprocessor 'no such preprocessor'" in response.text
    assert server.get("/sdapi/v1/options").status_code == 200  # still serving


def test_missing_weights_fail_the_run_naming_the_preprocessor(server):
    """depth_zoe's weights are absent (and cannot be downloaded here): the run fails and says which."""
    response = post_img2img(server, init_image=make_init_image(SIZE, SIZE), width=SIZE, height=SIZE, steps=2,
                            alwayson_scripts=dd(source="preprocessor", preprocessor="depth_zoe"), timeout=900)
    assert response.status_code == 422, response.text[:300]
    assert "preprocessor: 'depth_zoe' could not make a map" in response.text
    MEASUREMENTS.append(f"missing weights: {response.json().get('detail', '')[:300]}")


def test_xyz_preprocessor_cells_are_their_direct_runs(server):
    labels = xyz_axis_labels(server)
    axis = labels.index("[Differential Diffusion] Preprocessor")
    init = make_init_image(SIZE, SIZE)
    run = dict(width=SIZE, height=SIZE, steps=6, denoising_strength=0.75)
    response = assert_ok(post_img2img(server, init_image=init, prime=True, **run, alwayson_scripts=dd(make_init_image(SIZE, SIZE).convert("L")),
                                      script_name="x/y/z plot", script_args=xyz_args(server, axis, ", ".join(NAMES))))
    _grid, *cells = decode_images(response)
    assert len(cells) == len(NAMES)
    for name, cell in zip(NAMES, cells):
        (direct,), _ = generate(server, dd(source="preprocessor", preprocessor=name), init=init)
        assert max_change(cell, direct) <= 1, name  # the hosts' VAE encode may draw from the global RNG (a hair)
