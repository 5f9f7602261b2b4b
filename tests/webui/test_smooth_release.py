"""Smooth release on the real host: strengths between two levels of the step grid.

At 5 steps the grid's levels are 8-bit values (51 per step: 102/255 = 0.4, 153/255 = 0.6), so
uniform maps on them and between them can be compared with the host's own img2img:
* on a level, smooth or snapped, the run is plain img2img at that strength (test_extension.py
  proves it for every sampler at 10 steps);
* between two levels the amount of change lies strictly between the levels' and moves strictly
  with the map value, for every sampler family (graded checkpoints: there the amount means something);
* on any checkpoint, random weights too (the Forge family's stand-ins), the image moves between
  the two levels' images: strictly nearer the upper level's as the map value rises, and for
  deterministic samplers strictly farther from the lower level's too (samplers that draw noise per
  step give a pixel just above a level the sampler's own noise in the step before its release, not
  the original's re-noise: the same statistics, another sample of the texture);
* the run's release steps and partial shares are the Preview's (``preview.map_release``);
* smooth off snaps to the lower level, bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

from lib_differential_diffusion.maps import decode_map, to_latent
from lib_differential_diffusion.preview import map_release
from webui.host import MEASUREMENTS, decode_images, images_equal, make_init_image, make_map_image, mean_change, post_img2img, response_info
from webui.test_extension import assert_ok, band_map, band_width, dd, host_samplers, last_run, require_sampler  # noqa: F401 (fixtures)

pytestmark = pytest.mark.webui

STEPS = 5
LOWER, UPPER = 102, 153  # levels 2 and 3 of 5 steps
BETWEEN = (115, 128, 140)  # shares 0.25, 0.51, 0.75 of the way
# One per sampler family (first-order, ancestral, second-order, multistep, SDE, timestep, LCM).
FAMILY_SAMPLERS = ["Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "DDIM", "UniPC", "LCM"]


def measure(line: str) -> None:
    MEASUREMENTS.append(line)
    print(line)


def change_for(server, sampler: str, value8: int, smooth: bool = True, size: int = 64, **payload) -> tuple[float, object]:
    init = make_init_image(size, size)
    response = assert_ok(post_img2img(
        server, init_image=init, sampler_name=sampler, steps=STEPS, denoising_strength=1.0, prime=True, timeout=300,
        alwayson_scripts=dd(make_map_image(size, size, kind="constant", high=value8), smooth=smooth), **payload,
    ))  # fmt: skip
    (out,) = decode_images(response)
    return mean_change(out, init), out


def assert_strictly_between(family: str, sampler: str, series: list[float]) -> None:
    measure(f"{family} {sampler}, {STEPS} steps, uniform maps {LOWER}, {', '.join(map(str, BETWEEN))}, {UPPER}: "
            + " ".join(f"{value:.2f}" for value in series))  # fmt: skip
    rising = all(a < b for a, b in zip(series, series[1:]))
    falling = all(a > b for a, b in zip(series, series[1:]))
    assert rising or falling, f"{sampler}: change between two levels is not strictly between them and monotone: {series}"


@pytest.mark.needs("graded")
@pytest.mark.parametrize("sampler", FAMILY_SAMPLERS)
def test_change_between_two_levels_lies_strictly_between_them(sd1_server, require_sampler, sampler):
    require_sampler(sampler)
    series = [change_for(sd1_server, sampler, value)[0] for value in (LOWER, *BETWEEN, UPPER)]
    assert_strictly_between("SD1", sampler, series)
    if sampler in ("Euler", "DDIM"):  # smooth off snaps to the lower level, bit for bit
        _, lower = change_for(sd1_server, sampler, LOWER)
        _, snapped = change_for(sd1_server, sampler, BETWEEN[1], smooth=False)
        assert images_equal(lower, snapped)


# Samplers that draw no noise per step (the rest of FAMILY_SAMPLERS draw it).
DETERMINISTIC_SAMPLERS = ("Euler", "Heun", "DPM2", "DPM++ 2M", "DDIM", "UniPC")


def assert_moves_between_level_images(family: str, sampler: str, images: list, from_lower: bool = True) -> None:
    """``images`` for LOWER, *BETWEEN, UPPER: each nearer the upper level's image than the one before
    (mean absolute difference /255); for a deterministic sampler (and ``from_lower``), each farther
    from the lower's."""
    to_upper = [mean_change(image, images[-1]) for image in images]
    from_lower = [mean_change(image, images[0]) for image in images]
    measure(f"{family} {sampler}, {STEPS} steps, uniform maps {LOWER}, {', '.join(map(str, BETWEEN))}, {UPPER}: image distance "
            f"to the upper level's {' '.join(f'{v:.2f}' for v in to_upper)}, from the lower level's {' '.join(f'{v:.2f}' for v in from_lower)}")
    nearing = to_upper[1:]  # from the first value between on: noise-drawing samplers leave the lower level's texture at once
    assert all(a > b for a, b in zip(nearing, nearing[1:])), f"{sampler}: not strictly nearer the upper level's image: {to_upper}"
    if sampler in DETERMINISTIC_SAMPLERS and from_lower:
        assert all(a < b for a, b in zip(from_lower, from_lower[1:])), f"{sampler}: not strictly farther from the lower level's image: {from_lower}"


@pytest.mark.parametrize("sampler", FAMILY_SAMPLERS)
def test_image_between_two_levels_moves_from_one_level_to_the_other(sd1_server, require_sampler, sampler):
    require_sampler(sampler)
    images = [change_for(sd1_server, sampler, value)[1] for value in (LOWER, *BETWEEN, UPPER)]
    assert_moves_between_level_images("SD1", sampler, images)


@pytest.mark.needs("sdxl_refiner")
def test_sdxl_with_a_refiner_switch_moves_between_level_images(sdxl_server):
    refiner = dict(refiner_checkpoint=sdxl_server.model_name("sdxl_refiner_graded"), refiner_switch_at=0.5)
    images = [change_for(sdxl_server, "Euler", value, **refiner)[1] for value in (LOWER, *BETWEEN, UPPER)]
    # A random full-size pair (the Forge family's stand-in) leaves the lower level's look at once: measured
    # on Forge, distances from it 0.00 23.93 20.08 20.15 21.06 (to the upper's 21.06 20.20 12.70 6.80 0.00).
    assert_moves_between_level_images("SDXL + refiner", "Euler", images, from_lower=not sdxl_server.host.profile.cannot("graded"))


@pytest.mark.needs("graded", "sdxl_refiner")
def test_sdxl_with_a_refiner_switch_changes_strictly_between_levels(sdxl_server):
    refiner = dict(refiner_checkpoint=sdxl_server.model_name("sdxl_refiner_graded"), refiner_switch_at=0.5)
    series = [change_for(sdxl_server, "Euler", value, **refiner)[0] for value in (LOWER, *BETWEEN, UPPER)]
    assert_strictly_between("SDXL + refiner", "Euler", series)


def test_sd3_changes_strictly_between_levels(sd3_server):
    series = [change_for(sd3_server, "Euler", value)[0] for value in (LOWER, *BETWEEN, UPPER)]
    assert_strictly_between("SD3", "Euler", series)


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "DPM++ SDE"])
def test_the_run_releases_partly_where_the_preview_says(sd1_server, sampler):
    """Bands between levels (160x64, 4 latent columns each; band_width): the run's release steps and shares
    are the Preview's, reduced to the latent like the run's; the infotext says smooth. (The
    Preview shows k-diffusion's steps; the timestep samplers' table has fewer.)"""
    levels = (0, 20, 115, 128, 255)
    width = band_width(sd1_server)
    band_px = width // 5
    init = make_init_image(width, 64)
    response = assert_ok(post_img2img(sd1_server, init_image=init, sampler_name=sampler, steps=STEPS, denoising_strength=1.0,
                                      alwayson_scripts=dd(band_map(levels, width=width)), timeout=150))
    assert response_info(response)["extra_generation_params"]["DD smooth"] is True
    report = last_run(sd1_server)
    release, weight = np.array(report["release"]), np.array(report["release_weight"], dtype=np.float32)
    strengths = to_latent(decode_map(band_map(levels, width=width)), release.shape[-2:])[0, 0].numpy()
    expected = map_release(strengths, steps=STEPS, strength=1.0, fix_steps=False, smooth=True)
    assert np.array_equal(release[0, 0], expected.step.numpy())
    assert np.allclose(weight[0, 0], expected.weight.numpy(), atol=1e-6)
    assert (weight > 0).any() and (weight < 1).all()
    # Band 0 (black) is kept; band 1 (20/255: between nothing and the first level) changes, a little.
    (out,) = decode_images(response)
    assert mean_change(out, init, box=(0, 0, band_px, 64)) == 0.0
    assert 0 < mean_change(out, init, box=(band_px + 4, 0, 2 * band_px - 4, 64)) < mean_change(out, init, box=(4 * band_px + 4, 0, width, 64))


def test_smooth_is_an_api_key_with_a_schema_entry(sd1_server):
    """A value that is not true or false is refused naming the field; the schema lists it."""
    bad = post_img2img(sd1_server, init_image=make_init_image(64, 64), alwayson_scripts=dd(make_map_image(kind="constant", high=128), smooth="yes"))
    assert bad.status_code == 422 and "smooth" in bad.text
    schema = sd1_server.get("/differential-diffusion/v1/schema")
    if schema.status_code == 200:
        assert schema.json()["properties"]["smooth"]["type"] == "boolean"
