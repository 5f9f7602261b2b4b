"""Model families on the real host: SD1, SDXL and the flow-matching families SD3, Flux.1 and Z-Image.

The promise checked on each: a pixel released at step k starts exactly where plain img2img at
its strength starts, the host's "Extra noise" included. A uniform map v at strength 1 is run
*without* step skipping (the prompt "[a:a:5]" is a schedule that switches to the same prompt,
which turns skipping off and changes nothing else), so every pixel is pinned for the first steps
and then released: the result must be plain img2img at v with the same prompt.

The flow families (``flow_server``: SD3, Flux.1, Z-Image Turbo, each where the host can load a small one) also
get the everyday properties (all-ones is plain img2img for every sampler the host lists, all-zeros
is the input, a half map keeps its half, batches, X/Y/Z) and the Preview's release steps against
the run's. Their checkpoints are generated (``host.GENERATED_CHECKPOINTS``); a VAE encode may draw
unseeded noise, so every compared request is primed. Requests carry the host's defaults for that
server (``HostProfile.request_defaults``: e.g. its own Flux preset's schedule and CFG).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib_differential_diffusion.maps import to_latent
from lib_differential_diffusion.preview import PREVIEW_LEVELS
from lib_differential_diffusion.schedule import release_steps
from webui.host import (FLUX, MEASUREMENTS, SD3, SCRIPT_TITLE, ZIMAGE, decode_images, images_equal, make_init_image,
                        make_map_image, max_change, mean_change, options_set_back, post_img2img, response_info, xyz_args,
                        xyz_axis_labels)
from webui.test_extension import NEVER, assert_ok, dd, last_run

pytestmark = pytest.mark.webui

NO_SKIP_PROMPT = "[a:a:5]"
# The host runs these with integer timesteps where SD3 needs sigmas (wrong results, the host's own
# limitation); all-ones must still be plain img2img there.
TIMESTEP_SAMPLERS = {"DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"}
# The flow-matching families: (name in measurements, server spec); each test runs once per family the
# host can load (marker ``needs``: a host without one skips with its profile's reason).
FLOW_FAMILIES = {"sd3": ("SD3", SD3), "flux": ("Flux", FLUX), "zimage": ("Z-Image", ZIMAGE)}


def measure(line: str) -> None:
    MEASUREMENTS.append(line)
    print(line)


def released_like_plain(server, family: str, extra_noise: float, value8: int = 153, size: int = 64) -> None:
    # value8 on a level of the 10-step grid (153/255 = 0.6, 102/255 = 0.4): with smooth release a
    # pixel between levels is released partly, and only a pixel on a level is plain img2img
    with options_set_back(server, ["img2img_extra_noise"]):  # an override the host may not restore
        compare_released_with_plain(server, family, extra_noise, value8, size)


def compare_released_with_plain(server, family: str, extra_noise: float, value8: int, size: int) -> None:
    init = make_init_image(size, size)
    options = {"override_settings": {"img2img_extra_noise": extra_noise}, "override_settings_restore_afterwards": True}
    v = value8 / 255
    plain = assert_ok(post_img2img(server, init_image=init, prompt=NO_SKIP_PROMPT, denoising_strength=v, prime=True, **options))
    with_map = assert_ok(post_img2img(
        server, init_image=init, prompt=NO_SKIP_PROMPT, denoising_strength=1.0, prime=True,
        alwayson_scripts=dd(make_map_image(size, size, kind="constant", high=value8)), **options,
    ))  # fmt: skip
    report = last_run(server)
    assert report["active"] and len(report["calls"]) == 10, "every step must run (no skipping): the pixels are pinned, then released"
    released_at = set(np.unique(report["release"]).tolist())
    assert len(released_at) == 1 and 0 < released_at.pop() < 10
    (a,), (b,) = decode_images(plain), decode_images(with_map)
    assert mean_change(a, init) > 2, "plain img2img did not change the image: the comparison would prove nothing"
    diff = max_change(a, b)
    measure(f"{family}: uniform map {value8}/255 at 1.0, pinned then released, vs plain img2img at {v:.3f} "
            f"(Euler, extra noise {extra_noise}): max diff {diff}, mean {mean_change(a, b):.3f}")
    assert diff <= 1, f"{family}: released pixels did not start where img2img starts (max diff {diff})"


@pytest.mark.needs("cfg_from_first_call")
@pytest.mark.parametrize("extra_noise", [0.0, 0.3])
def test_sd1_released_pixels_start_where_img2img_starts(sd1_server, extra_noise):
    released_like_plain(sd1_server, "SD1", extra_noise)


@pytest.mark.needs("cfg_from_first_call")
@pytest.mark.parametrize("extra_noise", [0.0, 0.3])
def test_sdxl_released_pixels_start_where_img2img_starts(sdxl_server, extra_noise):
    released_like_plain(sdxl_server, "SDXL", extra_noise)


# Module scope: pytest runs one family's tests together, so each family's server starts once.
@pytest.fixture(scope="module", params=[pytest.param(key, marks=pytest.mark.needs(key), id=key) for key in FLOW_FAMILIES])
def flow_family(request) -> str:
    return request.param


@pytest.fixture
def flow_server(flow_family, webui_servers):
    """The warmed-up server of the family (started, or restarted after another took its place)."""
    return webui_servers.acquire(FLOW_FAMILIES[flow_family][1])


@pytest.fixture
def flow_name(flow_family) -> str:
    return FLOW_FAMILIES[flow_family][0]


@pytest.mark.parametrize("extra_noise", [0.0, 0.3])
@pytest.mark.parametrize("value8", [153, 102])
def test_flow_released_pixels_start_where_img2img_starts(flow_server, flow_name, extra_noise, value8):
    released_like_plain(flow_server, flow_name, extra_noise, value8)


# --------------------------------------------------------------------------- flow families, everyday properties

@pytest.fixture
def flow_samplers(flow_server) -> list[str]:
    # DPM adaptive: its step count is its own (see test_extension.require_sampler).
    return [s["name"] for s in flow_server.get("/sdapi/v1/samplers").json() if s["name"] != "DPM adaptive"]


def test_flow_all_ones_is_plain_and_all_zeros_is_the_input_for_every_sampler(flow_server, flow_name, flow_samplers):
    init = make_init_image(64, 64)
    ones, zeros = make_map_image(kind="constant", high=255), make_map_image(kind="constant", high=0)
    differing, changed, host_fails = [], [], []
    for sampler in flow_samplers:
        plain = post_img2img(flow_server, init_image=init, sampler_name=sampler, prime=True)
        if plain.status_code != 200:  # the host cannot run it on this family at all (e.g. LCM: no inner_model)
            host_fails.append(f"{sampler} ({plain.json().get('errors', '')[:80]})")
            continue
        white = assert_ok(post_img2img(flow_server, init_image=init, sampler_name=sampler, prime=True, alwayson_scripts=dd(ones)))
        assert not last_run(flow_server)["active"]
        if not images_equal(decode_images(plain)[0], decode_images(white)[0]):
            differing.append(sampler)
        black = assert_ok(post_img2img(flow_server, init_image=init, sampler_name=sampler, alwayson_scripts=dd(zeros)))
        if not images_equal(decode_images(black)[0].convert("RGB"), init):
            changed.append(sampler)
    ran = [sampler for sampler in flow_samplers if not any(fail.startswith(f"{sampler} (") for fail in host_fails)]
    measure(f"{flow_name}: all-ones == plain and all-zeros == input for {len(ran)} samplers ({', '.join(ran)}); "
            f"plain img2img itself fails on the host for: {'; '.join(host_fails) or 'none'}")
    assert len(ran) >= 10, host_fails
    assert not differing, f"all-ones map differs from plain img2img for {differing}"
    assert not changed, f"all-zeros map changed the input for {changed}"


def test_flow_half_map_keeps_its_half_in_a_batch(flow_server):
    init = make_init_image(64, 64)
    r = assert_ok(post_img2img(flow_server, init_image=init, batch_size=2, denoising_strength=0.8, alwayson_scripts=dd(make_map_image(kind="halves"))))
    images = decode_images(r)
    assert len(images) == 2 and not images_equal(images[0], images[1])
    for image in images:
        assert max_change(image, init, box=(0, 0, 32, 64)) == 0, "the black half changed"
        assert mean_change(image, init, box=(32, 0, 64, 64)) > 1, "the white half did not change"
    assert response_info(r)["extra_generation_params"].get(SCRIPT_TITLE) is True


def test_flow_xyz_cells_are_their_direct_runs(flow_server):
    labels = xyz_axis_labels(flow_server)
    axis = labels.index(f"[{SCRIPT_TITLE}] Enabled")
    init, halves = make_init_image(64, 64), make_map_image(kind="halves")
    post_img2img(flow_server, init_image=init)
    r = assert_ok(post_img2img(flow_server, init_image=init, alwayson_scripts=dd(halves), script_name="x/y/z plot",
                               script_args=xyz_args(flow_server, axis, "True, False")))
    grid, on, off = decode_images(r)
    assert max_change(on, init, box=(0, 0, 32, 64)) == 0 and mean_change(off, init, box=(0, 0, 32, 64)) > 1
    (direct_off,) = decode_images(assert_ok(post_img2img(flow_server, init_image=init, prime=True)))
    assert max_change(off, direct_off) <= 1


def test_flow_preview_release_steps_are_the_runs(flow_server):
    """The Preview computes release steps without the model (an evenly falling schedule): on the
    family's shifted flow schedule they must still be the run's, step for step."""
    # 128 px wide: a size every host keeps (Forge Neo's build rounds sizes to multiples of 64, and a map
    # stretched from 96 to 128 px no longer has its bands on latent pixels)
    levels = (0, 40, 90, 128, 160, 200, 230, 255)
    bands = np.zeros((64, 128), np.uint8)
    for i, level in enumerate(levels):
        bands[:, i * 16:(i + 1) * 16] = level
    from PIL import Image

    for strength in (1.0, 0.75):
        assert_ok(post_img2img(flow_server, init_image=make_init_image(128, 64), width=128, height=64, denoising_strength=strength,
                               prompt=NO_SKIP_PROMPT, alwayson_scripts=dd(Image.fromarray(bands, "L"))))
        run_release = np.asarray(last_run(flow_server)["release"])[:, 0]
        latent = to_latent(bands.astype(np.float32) / 255, run_release.shape[1:])[0, 0].to(torch.float64) * strength
        preview = release_steps(latent, PREVIEW_LEVELS, steps=10, run_strength=strength, fix_steps=False).numpy()
        assert np.array_equal(preview, run_release[0]), (preview[0], run_release[0][0])
        assert NEVER in preview and 0 in preview
