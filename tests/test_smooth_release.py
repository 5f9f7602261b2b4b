"""Smooth release: a pixel between two levels of the host's step grid is released partly in the
step between them. Proofs on the real k-diffusion samplers, A1111's DDIM and LCM loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a1111_sampling import Run, latents, uniform
from lib_differential_diffusion.blend import SAMPLERS_WITHOUT_HISTORY
from lib_differential_diffusion.maps import MapValues, decode_map
from lib_differential_diffusion.preview import map_release, preview_image, released_share
from lib_differential_diffusion.schedule import NEVER, pixel_release, never_released, release_steps, skip_start_strength
from test_engine import ALL_SAMPLERS, EXACT_SAMPLERS, denoiser, eps_net, img2img, karras_levels, model_calls, sampler_function  # noqa: F401 (fixtures)

# DPM fast takes DPM-Solver's own steps, not the schedule's levels: partial steps are attributed
# only roughly there, and its own levels are not monotone (measured: it changes less at 1.0 than at 0.75).
SMOOTH_SAMPLERS = [name for name in ALL_SAMPLERS if name != "DPM fast"]
# Samplers whose state, once released, depends only on that state: no fresh noise per step.
DETERMINISTIC_SAMPLERS = ["Euler", "Heun", "DPM2", "LMS", "DPM++ 2M", "DDIM"]


def mean_change(name, denoiser, eps_net, value: float, steps: int, smooth: bool = True, batch: int = 1, size: int = 16) -> float:
    init, noise = latents(batch=batch, seed=1, size=size)
    out, _ = img2img(name, denoiser, eps_net, Run(init, noise, 1.0, steps, seed=5), uniform(value, batch, size), smooth=smooth)
    return float((out - init).abs().mean())


# --- the rule ---------------------------------------------------------------------


@pytest.mark.parametrize("steps", [4, 8, 10, 20, 37])
@pytest.mark.parametrize("run_strength", [1.0, 0.6])
def test_strengths_on_the_grid_are_released_as_without_smoothing(steps, run_strength):
    levels = karras_levels()
    grid = torch.tensor([0.0, *[k / steps for k in range(steps)], 1.0], dtype=torch.float64)
    smooth = pixel_release(grid, levels, steps=steps, run_strength=run_strength, fix_steps=False, smooth=True)
    snapped = release_steps(grid, levels, steps=steps, run_strength=run_strength, fix_steps=False)
    on_grid = grid <= run_strength + 1e-12
    assert torch.equal(smooth.step[on_grid], snapped[on_grid])
    assert not smooth.weight[on_grid].any()


def test_a_strength_near_a_level_is_the_host_s_own_level():
    """0.29 * 100 floors to 28 in the host's float arithmetic: the pixel gets the host's level 28."""
    levels = karras_levels()
    strength = torch.tensor([0.29, 0.57, 0.58], dtype=torch.float64)
    smooth = pixel_release(strength, levels, steps=100, run_strength=1.0, fix_steps=False, smooth=True)
    assert torch.equal(smooth.step, release_steps(strength, levels, steps=100, run_strength=1.0, fix_steps=False))
    assert not smooth.weight.any()


@pytest.mark.parametrize("steps", [4, 10])
def test_a_strength_between_two_levels_takes_its_fraction_in_the_step_between(steps):
    levels = karras_levels()
    fractions = np.array([0.1, 0.25, 0.5, 0.9])
    for key in range(1, steps - 1):
        strengths = torch.from_numpy((key + fractions) / steps)
        release = pixel_release(strengths, levels, steps=steps, run_strength=1.0, fix_steps=False, smooth=True)
        lower = release_steps(torch.tensor([key / steps], dtype=torch.float64), levels, steps=steps, run_strength=1.0, fix_steps=False)
        upper = release_steps(torch.tensor([(key + 1) / steps], dtype=torch.float64), levels, steps=steps, run_strength=1.0, fix_steps=False)
        assert int(upper) == int(lower) - 1  # one step earlier
        assert (release.step == lower).all()  # free from the lower level's step
        assert np.allclose(release.weight.numpy(), fractions, atol=1e-6)  # its fraction in the step before


def test_below_the_first_level_change_starts_from_zero():
    """Key 0 (the host's one step for any strength in (0, 1/steps)) sits at half a step: below it a
    pixel is released partly in the last step, from the input at strength 0."""
    levels, steps = karras_levels(), 4
    strengths = torch.tensor([0.0, 0.025, 0.0625, 0.125, 0.1875, 0.25], dtype=torch.float64)
    release = pixel_release(strengths, levels, steps=steps, run_strength=1.0, fix_steps=False, smooth=True)
    last = steps - 1
    assert release.step.tolist() == [NEVER, NEVER, NEVER, last, last, last - 1]
    assert np.allclose(release.weight.numpy(), [0.0, 0.2, 0.5, 0.0, 0.5, 0.0], atol=1e-6)


def test_the_run_s_own_level_is_the_top():
    """Strengths above the run's level (the slider's, 0.6 at 10 steps: level 6) are the run's level:
    an all-ones map is plain img2img at the slider."""
    levels = karras_levels()
    strengths = torch.tensor([0.6, 0.61, 0.65, 0.6 * 0.999], dtype=torch.float64)
    release = pixel_release(strengths, levels, steps=10, run_strength=0.6, fix_steps=False, smooth=True)
    assert release.step.tolist()[:3] == [0, 0, 0] and not release.weight[:3].any()


# --- the runs --------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_maps_on_levels_give_the_snapped_run_bit_for_bit(name, denoiser, eps_net):
    """Every pixel on a level (k/8 at 8 steps; 0 and 1 included): smooth release changes nothing."""
    init, noise = latents(batch=2, seed=3)
    strengths = uniform(0.0, 2)
    for column in range(16):
        strengths[..., column] = min(column, 8) / 8
    strengths[1] = strengths[1].flip(-1)
    run = Run(init, noise, strength=1.0, steps=8, seed=4)
    snapped, _ = img2img(name, denoiser, eps_net, run, strengths.clone())
    smooth, engine = img2img(name, denoiser, eps_net, run, strengths.clone(), smooth=True)
    assert not engine.release_weight.any()
    assert torch.equal(snapped, smooth)


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_all_ones_is_plain_img2img_and_all_zeros_the_input_with_smooth_release(name, denoiser, eps_net):
    init, noise = latents(batch=2)
    run = Run(init, noise, strength=0.75, steps=6, seed=7)
    plain, _ = img2img(name, denoiser, eps_net, run)
    ones, engine = img2img(name, denoiser, eps_net, run, pixel_strengths=uniform(1.0, 2) * 0.75, smooth=True)
    assert not engine.active and torch.equal(plain, ones)
    zeros, engine = img2img(name, denoiser, eps_net, run, pixel_strengths=uniform(0.0, 2), smooth=True)
    assert engine.active and (zeros - init).abs().max() <= 1e-5


@pytest.mark.parametrize("steps", [4, 8])
@pytest.mark.parametrize("name", SMOOTH_SAMPLERS)
def test_change_lies_strictly_between_the_two_levels_and_grows_with_the_value(name, steps, denoiser, eps_net):
    """Uniform maps between two adjacent levels k/steps and (k+1)/steps: the amount of change lies
    strictly between the levels' own and moves strictly from one to the other with the value; snapped,
    it stays on the lower level.

    Samplers that draw fresh noise every step give a partly released pixel the sampler's own draw
    (the same statistics as the original's noise, other samples), so what is measured is an expected
    change, on 4 images of 32x32 latents: the sampling noise of that mean (a few tenths of a percent)
    hides the change of the first eighth of an interval, so for them the series starts at 3/8, and
    levels closer than 2% (DPM++ 2M SDE's last two at 8 steps) are only checked to hold the series.
    """
    deterministic = name in DETERMINISTIC_SAMPLERS
    sample = dict(batch=1, size=16) if deterministic else dict(batch=4, size=32)
    fractions = (0.125, 0.375, 0.625, 0.875) if deterministic else (0.375, 0.625, 0.875)

    def change(value: float, smooth: bool = True) -> float:
        return mean_change(name, denoiser, eps_net, value / steps, steps, smooth=smooth, **sample)

    top = steps - 1  # the run's level: strengths above it are the same img2img (t_enc is capped)
    for key in range(0, top):
        start = 0.5 if key == 0 else key  # key 0 (any strength in (0, 1/steps)) is placed at half a step
        at_lower, at_upper = change(start), change(key + 1)
        series = [at_lower, *(change(start + f * (key + 1 - start)) for f in fractions), at_upper]
        if at_lower == at_upper:  # the host's own levels agree (DDIM's first levels sample nothing)
            assert all(value == at_lower for value in series), (key, series)
            continue
        if not deterministic and abs(at_upper - at_lower) < 0.02 * max(at_upper, at_lower):
            low, high = sorted((at_lower, at_upper))
            assert all(low - 0.01 * high <= value <= high * 1.01 for value in series), (key, series)
            continue
        rising, falling = (all(a < b for a, b in zip(series, series[1:])), all(a > b for a, b in zip(series, series[1:])))
        assert rising or falling, (key, series)
        assert change(start + 0.5 * (key + 1 - start), smooth=False) == at_lower
    # From strength 0 (the input) up to key 0's half step.
    series = [change(v) for v in (0.0, 0.1, 0.25, 0.4, 0.5)]
    assert series[0] == 0.0 and (all(a < b for a, b in zip(series, series[1:])) or series[-1] == 0.0), series


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_near_the_upper_level_the_change_is_the_upper_level_s(name, denoiser, eps_net):
    """A share near 1 takes almost all of the model's prediction in the upper level's release step,
    where the upper level starts from the same state: continuous there for every sampler."""
    steps = 8
    for key in (2, 5):
        upper = mean_change(name, denoiser, eps_net, (key + 1) / steps, steps)
        lower = mean_change(name, denoiser, eps_net, key / steps, steps)
        near = mean_change(name, denoiser, eps_net, (key + 0.999) / steps, steps)
        assert abs(near - upper) <= 0.02 * abs(upper - lower) + 1e-6, (key, lower, near, upper)


@pytest.mark.parametrize("name", DETERMINISTIC_SAMPLERS)
def test_near_the_lower_level_the_change_is_the_lower_level_s(name, denoiser, eps_net):
    """A share near 0 keeps the pixel on the original's path through the step between: for samplers
    without fresh noise per step the result is continuous at the lower level too (ancestral ones
    draw the step's noise for it instead of the original's: the same statistics, other samples)."""
    steps = 8
    for key in (2, 5):
        upper = mean_change(name, denoiser, eps_net, (key + 1) / steps, steps)
        lower = mean_change(name, denoiser, eps_net, key / steps, steps)
        near = mean_change(name, denoiser, eps_net, (key + 0.001) / steps, steps)
        assert abs(near - lower) <= 0.02 * abs(upper - lower), (key, lower, near, upper)


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_samplers_without_history_need_no_pinned_predictions_with_smooth_release_either(name, denoiser, eps_net):
    init, noise = latents(batch=2, seed=5)
    strengths = uniform(0.0, 2)
    strengths[..., 4:8], strengths[..., 8:12], strengths[..., 12:] = 0.33, 0.61, 0.87  # never, late, mid, early: all partial
    outputs = {}
    for keeps_history in (True, False):
        run = Run(init, noise, strength=1.0, steps=12, seed=9)
        outputs[keeps_history], engine = img2img(name, denoiser, eps_net, run, strengths, keeps_history=keeps_history, smooth=True)
        assert engine.release_weight.any()
    if sampler_function(name) in SAMPLERS_WITHOUT_HISTORY:
        assert torch.equal(outputs[True], outputs[False])


@pytest.mark.parametrize("name", EXACT_SAMPLERS)
def test_step_skipping_with_smooth_release_gives_identical_output(name, denoiser, eps_net):
    init, noise = latents(batch=2, seed=4)
    strengths = uniform(0.43, 2) * 0.9  # 0.387: between levels 7 and 8 of 20
    strengths[..., 8:] = 0.2 * 0.9
    strengths[1, ..., :3, :] = 0.0
    calls_before = model_calls(name, denoiser, eps_net)
    full, _ = img2img(name, denoiser, eps_net, Run(init, noise, 0.9, 20, seed=2), strengths, smooth=True)
    calls_full = model_calls(name, denoiser, eps_net) - calls_before
    start = skip_start_strength(strengths, 0.9, 20, smooth=True)
    assert int(start * 20) == 8 and skip_start_strength(strengths, 0.9, 20) == pytest.approx(0.387)  # the upper level's
    skipped, engine = img2img(name, denoiser, eps_net, Run(init, noise, start, 20, seed=2), strengths, smooth=True)
    calls_skipped = model_calls(name, denoiser, eps_net) - calls_before - calls_full
    assert engine.release_weight.any()
    assert torch.equal(full, skipped)
    assert calls_skipped < calls_full


@pytest.mark.parametrize("steps, run_strength, slider", [(10, 1.0, 1.0), (20, 0.45, 0.9), (49, 0.8, 0.8), (7, 0.3, 0.75), (4, 1.0, 1.0)])
def test_never_released_with_smooth_release_is_pixel_release_at_pixel_resolution(steps, run_strength, slider):
    values = np.concatenate([np.linspace(0, 1, 4097, dtype=np.float32), np.float32([1e-9, 1e-7, 0.1, 0.7, 1 / 49, 0.0199, 0.02])])
    strengths = np.concatenate([values, np.random.default_rng(3).random(3000, dtype=np.float32) * 0.05]).reshape(1, -1)
    levels = karras_levels()

    def expected(floats: np.ndarray) -> np.ndarray:
        release = pixel_release(torch.from_numpy(floats).to(torch.float64) * slider, levels, steps=steps, run_strength=run_strength, fix_steps=False, smooth=True)
        return ((release.step == NEVER) & (release.weight == 0)).numpy()

    kept = never_released(strengths, slider, levels, steps=steps, run_strength=run_strength, fix_steps=False, smooth=True)
    assert np.array_equal(kept, expected(strengths))
    assert kept[0, 0] and not kept[0, 1]  # only strength 0 (and what snaps to it) is never released
    stored = np.concatenate([np.arange(256, dtype=np.uint8), np.random.default_rng(4).integers(0, 256, 2000).astype(np.uint8)]).reshape(1, -1)
    by_stored = never_released(MapValues(stored_8bit=stored), slider, levels, steps=steps, run_strength=run_strength, fix_steps=False, smooth=True)
    assert np.array_equal(by_stored, expected(decode_map(stored)))
    assert by_stored[0, 0] and not by_stored[0, 1]


# --- the preview -------------------------------------------------------------------


def test_the_preview_shows_partial_release_in_the_step_between():
    steps = 4
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))
    smooth = map_release(ramp, steps=steps, strength=1.0, fix_steps=False, smooth=True)
    snapped = map_release(ramp, steps=steps, strength=1.0, fix_steps=False)
    for step in range(steps):
        share = released_share(smooth, step, steps)
        assert ((share > 0) & (share < 1)).any()  # gray: released partly in this step
        assert set(np.unique(released_share(snapped, step, steps)).tolist()) <= {0.0, 1.0}
        later = released_share(smooth, step + 1, steps) if step + 1 < steps else np.ones_like(share)
        assert (later >= share).all()  # what is released stays released
    strip = np.asarray(preview_image(ramp, steps=steps, strength=1.0, fix_steps=False, smooth=True))
    plain = np.asarray(preview_image(ramp, steps=steps, strength=1.0, fix_steps=False))
    assert not np.array_equal(strip, plain)
