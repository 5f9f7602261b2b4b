"""Proofs of the core engine on the real k-diffusion samplers and A1111's DDIM loop.

Each run rebuilds A1111 v1.10.1's img2img start (``a1111_sampling``) around a
small deterministic denoiser, with and without the engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiny_denoiser import ALPHAS_CUMPROD
from a1111_sampling import K_SAMPLERS, latents, uniform, Run, TinyEpsNet, ddim_img2img, kdiffusion_img2img, make_denoiser
from lib_differential_diffusion.blend import SAMPLERS_WITHOUT_HISTORY, DifferentialDiffusion, StepTracker
from lib_differential_diffusion.maps import MapValues, decode_map
from lib_differential_diffusion.schedule import NEVER, SigmaLevels, TimestepLevels, img2img_start, never_released, release_steps, skip_start_strength

ALL_SAMPLERS = [*K_SAMPLERS, "DDIM"]
# LCM on this (non-LCM) test denoiser: plain img2img itself changes less at strength 1 than at
# 0.75, so the band and closeness checks of plain-like behaviour below do not apply to it.
PLAIN_MONOTONE_SAMPLERS = [name for name in ALL_SAMPLERS if name != "LCM"]
# Samplers whose state after the release step depends only on that state
# (no sequential noise draws, no multistep history, Brownian-tree noise).
EXACT_SAMPLERS = ["Euler", "Heun", "DPM2", "DPM++ SDE", "DDIM"]
H = W = 16


@pytest.fixture(scope="module")
def denoiser():
    return make_denoiser()


@pytest.fixture(scope="module")
def eps_net():
    return TinyEpsNet()


def img2img(name, denoiser, eps_net, run, pixel_strengths=None, **kwargs):
    if name == "DDIM":
        return ddim_img2img(eps_net, run, pixel_strengths=pixel_strengths, keeps_history=kwargs.get("keeps_history"), smooth=kwargs.get("smooth", False))
    return kdiffusion_img2img(name, denoiser, run, pixel_strengths=pixel_strengths, **kwargs)


def model_calls(name, denoiser, eps_net) -> int:
    return eps_net.calls if name == "DDIM" else denoiser.inner_model.net.calls


# --- semantics --------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_all_ones_map_is_plain_img2img_bit_for_bit(name, denoiser, eps_net):
    init, noise = latents(batch=2)
    run = Run(init, noise, strength=0.75, steps=10, seed=7)
    plain, _ = img2img(name, denoiser, eps_net, run)
    with_map, engine = img2img(name, denoiser, eps_net, run, pixel_strengths=uniform(1.0, 2) * 0.75)
    assert not engine.active
    assert torch.equal(plain, with_map)


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_all_zeros_map_returns_the_input(name, denoiser, eps_net):
    init, noise = latents(batch=2)
    run = Run(init, noise, strength=0.9, steps=12, seed=3)
    result, engine = img2img(name, denoiser, eps_net, run, pixel_strengths=uniform(0.0, 2))
    assert engine.active
    assert (result - init).abs().max() <= 1e-5
    plain, _ = img2img(name, denoiser, eps_net, run)
    assert (plain - init).abs().mean() > 0.1  # the sampler does change an unpinned image


@pytest.mark.parametrize("name", [n for n in K_SAMPLERS if n != "DPM fast"])
def test_pinned_pixels_stay_on_the_renoised_original_during_sampling(name, denoiser):
    """Without the final pin, a k-diffusion sampler itself lands on the original (DPM fast stops at sigma_min)."""
    init, noise = latents()
    run = Run(init, noise, strength=0.9, steps=12, seed=3)
    result, _ = kdiffusion_img2img(name, denoiser, run, pixel_strengths=uniform(0.0), finalize=False)
    assert (result - init).abs().max() <= 1e-4


UNIFORM_CASES = [
    (0.5, 1.0, 10, None),
    (0.25, 0.8, 20, None),
    (0.7, 1.0, 10, "karras"),  # 0.7 * 10 floors to 7 only in float64
    (0.4, 0.9, 16, "exponential"),
    (0.3, 0.6, 25, "karras"),
]


@pytest.mark.parametrize(
    ("name", "value", "strength", "steps", "scheduler"),
    # DDIM has one timestep table: only the cases without a named scheduler.
    [(name, *case) for name in EXACT_SAMPLERS for case in UNIFORM_CASES if name != "DDIM" or case[3] is None],
)
def test_uniform_map_equals_plain_img2img_at_the_product_strength(name, value, strength, steps, scheduler, denoiser, eps_net):
    init, noise = latents(batch=2, seed=steps)
    extra = {"scheduler": scheduler} if scheduler and name != "DDIM" else {}
    with_map, engine = img2img(name, denoiser, eps_net, Run(init, noise, strength, steps, seed=5), uniform(value, 2) * strength, **extra)
    plain, _ = img2img(name, denoiser, eps_net, Run(init, noise, value * strength, steps, seed=5), **extra)
    assert engine.active
    assert (with_map - plain).abs().max() <= 1e-4
    full, _ = img2img(name, denoiser, eps_net, Run(init, noise, strength, steps, seed=5), **extra)
    assert (full - plain).abs().max() > 0.1  # the two strengths really differ


@pytest.mark.parametrize("name", [n for n in PLAIN_MONOTONE_SAMPLERS if n not in EXACT_SAMPLERS])
def test_uniform_map_is_close_to_plain_img2img_for_the_other_samplers(name, denoiser, eps_net):
    """Ancestral samplers draw their noise in sequence and multistep ones keep history,
    so a uniform map only approximates plain img2img: it must land far closer to the
    product strength than to the slider's strength (numbers: benchmarks/uniform_map_gap.py)."""
    init, noise = latents(batch=2)
    gaps_to_target, gaps_to_full = [], []
    for value in (0.3, 0.5, 0.7):
        with_map, _ = img2img(name, denoiser, eps_net, Run(init, noise, 1.0, 20, seed=5), uniform(value, 2))
        target, _ = img2img(name, denoiser, eps_net, Run(init, noise, value, 20, seed=5))
        full, _ = img2img(name, denoiser, eps_net, Run(init, noise, 1.0, 20, seed=5))
        gaps_to_target.append(float((with_map - target).abs().mean()))
        gaps_to_full.append(float((with_map - full).abs().mean()))
        change_target = float((target - init).abs().mean())
        change_map = float((with_map - init).abs().mean())
        assert abs(change_map - change_target) < 0.35 * change_target
    assert sum(gaps_to_target) < 0.6 * sum(gaps_to_full)


@pytest.mark.parametrize("name", PLAIN_MONOTONE_SAMPLERS)
def test_change_grows_with_the_map_value_band_by_band(name, denoiser, eps_net):
    init, noise = latents(batch=1, seed=11)
    bands = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    width = 8
    strengths = bands.repeat_interleave(width).reshape(1, 1, 1, -1).expand(1, 1, H, len(bands) * width)
    init = torch.randn(1, 4, H, len(bands) * width, generator=torch.Generator().manual_seed(2)) * 0.8
    noise = torch.randn(1, 4, H, len(bands) * width, generator=torch.Generator().manual_seed(3))
    result, _ = img2img(name, denoiser, eps_net, Run(init, noise, 1.0, 20, seed=1), strengths.clone())
    change = (result - init).abs().mean(dim=(0, 1, 2))
    # Drop the columns next to a band edge: the model's receptive field mixes neighbours.
    per_band = [float(change[i * width + 2 : (i + 1) * width - 2].mean()) for i in range(len(bands))]
    assert per_band[0] == 0.0
    assert all(a < b for a, b in zip(per_band, per_band[1:])), per_band


def test_per_image_maps_in_a_batch(denoiser):
    init, noise = latents(batch=2)
    run = Run(init, noise, 0.8, 10, seed=9)
    strengths = torch.stack([uniform(0.8)[0], uniform(0.0)[0]])  # image 0 free, image 1 kept
    result, _ = kdiffusion_img2img("Euler", denoiser, run, pixel_strengths=strengths)
    plain, _ = kdiffusion_img2img("Euler", denoiser, run)
    assert torch.equal(result[0], plain[0])
    assert torch.equal(result[1], init[1])


def test_blend_acts_before_the_cfg_row_layout(denoiser):
    """A1111's CFGDenoiser gets x [B,...] and builds its own rows (cond rows per image,
    AND-prompts adding rows, then B uncond rows); wrapping its forward keeps the engine
    out of that layout. Here a CFG-like wrapper with an AND-prompt on image 0."""
    init, noise = latents(batch=2)
    repeats = [2, 1]  # image 0 has "a AND b", image 1 one prompt

    def cfg_forward(x, sigma):
        x_in = torch.cat([torch.stack([x[i]] * n) for i, n in enumerate(repeats)] + [x])
        sigma_in = torch.cat([torch.stack([sigma[i]] * n) for i, n in enumerate(repeats)] + [sigma])
        out = denoiser(x_in, sigma_in)
        cond = torch.stack([out[0:2].mean(0), out[2]])
        uncond = out[3:]
        return uncond + (cond - uncond) * 7.0

    strengths = torch.stack([uniform(0.0)[0], uniform(0.8)[0]])
    levels = SigmaLevels(lambda n: denoiser.get_sigmas(n))
    engine = DifferentialDiffusion(pixel_strengths=strengths, init_latent=init, noise=noise, levels=levels, steps=10, run_strength=0.8)
    sigmas = denoiser.get_sigmas(10)[10 - 8 - 1 :]
    import k_diffusion.sampling as sampling

    with torch.no_grad():
        result = engine.finalize(sampling.sample_euler(engine.wrap(cfg_forward), init + noise * sigmas[0], sigmas, disable=True))
        plain = sampling.sample_euler(cfg_forward, init + noise * sigmas[0], sigmas, disable=True)
    assert torch.equal(result[0], init[0])
    assert torch.equal(result[1], plain[1])


def test_a_call_at_another_resolution_passes_through(denoiser):
    """Samplers that resample the latent inside a step (reForge's SMEA ones) call the model at
    another size: the blend leaves such a call alone, and an all-zeros map still returns the input."""
    init, noise = latents()
    levels = SigmaLevels(lambda n: denoiser.get_sigmas(n))
    engine = DifferentialDiffusion(pixel_strengths=uniform(0.0), init_latent=init, noise=noise, levels=levels, steps=10, run_strength=1.0)
    sigmas = denoiser.get_sigmas(10)
    seen = []

    def resampling_forward(x, sigma):
        seen.append(tuple(x.shape[-2:]))
        big = torch.nn.functional.interpolate(x, scale_factor=1.25, mode="nearest")
        inner = torch.nn.functional.interpolate(blended(big, sigma), size=x.shape[-2:], mode="nearest")
        return (denoiser(x, sigma) + inner) / 2

    blended = engine.wrap(lambda x, sigma: x * 0 + x.mean())
    outer = engine.wrap(resampling_forward)
    import k_diffusion.sampling as sampling

    with torch.no_grad():
        result = engine.finalize(sampling.sample_euler(outer, init + noise * sigmas[0], sigmas, disable=True))
    assert seen and all(shape == tuple(init.shape[-2:]) for shape in seen)
    assert torch.equal(result, init)


@pytest.mark.parametrize("levels_kind", ["sigma", "timestep"])
def test_a_call_sets_exactly_the_pixels_of_its_step_over_the_whole_latent(levels_kind):
    """Pinned pixels in a few boxes of the latent, per image: every call sets exactly the pixels
    released at its step or later (step 0: later) to the host's start latent at the call's
    level, and leaves every other pixel as the sampler left it."""
    import k_diffusion.sampling as sampling

    generator = torch.Generator().manual_seed(4)
    strengths = torch.full((2, 1, 12, 20), 0.9, dtype=torch.float64)
    strengths[0, :, 3:6, 4:9] = torch.linspace(0.0, 0.6, 5, dtype=torch.float64)
    strengths[1, :, 7:10, 11:15] = 0.3
    init, noise = torch.randn(2, 4, 12, 20, generator=generator), torch.randn(2, 4, 12, 20, generator=generator)
    if levels_kind == "sigma":
        levels = SigmaLevels(lambda n: sampling.get_sigmas_karras(n, 0.03, 14.6))
    else:
        levels = TimestepLevels(lambda n: torch.clip(torch.arange(0, 1000, 1000 // n) + 1, 0, 999), ALPHAS_CUMPROD)
    engine = DifferentialDiffusion(pixel_strengths=strengths, init_latent=init, noise=noise, levels=levels, steps=10, run_strength=1.0)
    call_levels = levels.eval_levels(engine.run).tolist()
    assert len(call_levels) >= 5
    for step, level in enumerate(call_levels):
        level_rows = torch.full((2,), level, dtype=torch.float32)
        x = torch.randn(2, 4, 12, 20, generator=generator)
        before = x.clone()
        engine.before_call(x, level_rows)
        first = step if step > 0 else 1  # step 0's released pixels already hold their start latent
        to_set = (engine.release >= first).expand_as(x)
        renoised = levels.renoise(init, noise, level_rows, engine.run)
        assert torch.equal(x[to_set], renoised[to_set]), step
        assert torch.equal(x[~to_set], before[~to_set]), step


# --- release schedule ---------------------------------------------------------


def karras_levels():
    import k_diffusion.sampling as sampling

    return SigmaLevels(lambda n: sampling.get_sigmas_karras(n, 0.03, 14.6))


def sampler_function(name: str) -> str:
    return "ddim" if name == "DDIM" else K_SAMPLERS[name][0]


@pytest.mark.parametrize("name", ALL_SAMPLERS)
def test_samplers_without_history_never_read_a_pinned_prediction_before_the_last_step(name, denoiser, eps_net):
    """Leaving pinned pixels' predictions as the model made them, but for the last step, gives the
    same samples bit for bit for the samplers said to keep no history (each prediction only moves
    the state the next call sets again); the samplers with history do read them."""
    init, noise = latents(batch=2, seed=5)
    strengths = uniform(0.0, 2)
    strengths[..., 4:8], strengths[..., 8:12], strengths[..., 12:] = 0.3, 0.6, 0.9  # never, late, mid, early
    outputs = {}
    for keeps_history in (True, False):
        run = Run(init, noise, strength=1.0, steps=12, seed=9)
        outputs[keeps_history], engine = img2img(name, denoiser, eps_net, run, strengths, keeps_history=keeps_history)
        assert engine.active
    if sampler_function(name) in SAMPLERS_WITHOUT_HISTORY:
        assert torch.equal(outputs[True], outputs[False])
    else:
        assert not torch.equal(outputs[True], outputs[False])
    assert {sampler_function(name) for name in ALL_SAMPLERS} >= SAMPLERS_WITHOUT_HISTORY  # each name is proven here



@pytest.mark.parametrize("steps", [4, 10, 20, 37])
@pytest.mark.parametrize("run_strength", [1.0, 0.75, 0.3])
def test_release_step_is_the_difference_of_a1111_start_steps(steps, run_strength):
    values = torch.linspace(0, 1, 257, dtype=torch.float64)
    strengths = values * run_strength
    release = release_steps(strengths, karras_levels(), steps=steps, run_strength=run_strength, fix_steps=False)
    run_t_enc = int(min(run_strength, 0.999) * steps)
    for strength, step in zip(strengths.tolist(), release.tolist()):
        if strength == 0:
            assert step == NEVER
        else:
            assert step == run_t_enc - int(min(strength, 0.999) * steps)


def test_release_uses_python_float_arithmetic_like_a1111():
    # 0.7 * 10 is 7.000000000000001 in float64 but 6.9999995 in float32.
    release = release_steps(torch.tensor([0.7], dtype=torch.float64), karras_levels(), steps=10, run_strength=1.0, fix_steps=False)
    assert int(release) == 9 - 7


def test_release_with_img2img_fix_steps_follows_noise_levels():
    levels = karras_levels()
    strengths = torch.linspace(0.05, 0.8, 64, dtype=torch.float64)
    release = release_steps(strengths, levels, steps=10, run_strength=0.8, fix_steps=True)
    run = img2img_start(0.8, 10, True)
    assert (run.total_steps, run.t_enc) == (12, 9)
    run_levels = levels.step_levels(run)
    for strength, step in zip(strengths.tolist(), release.tolist()):
        start_level = levels.start_level(img2img_start(strength, 10, True))
        expected = int((run_levels > start_level).sum())
        assert step == (expected if expected < len(run_levels) else NEVER)
    assert release[-1] == 0 and torch.all(release[:-1] >= release[1:])


def test_timestep_release_matches_ddim_start_levels():
    levels = TimestepLevels(lambda n: torch.clip(torch.arange(0, 1000, 1000 // n) + 1, 0, 999), ALPHAS_CUMPROD)
    release = release_steps(torch.tensor([1.0, 0.5, 0.2, 0.1, 0.05], dtype=torch.float64), levels, steps=10, run_strength=1.0, fix_steps=False)
    # The run has t_enc - 1 = 8 DDIM steps; a pixel whose own img2img would make none stays unchanged.
    assert release.tolist() == [0, 4, 7, NEVER, NEVER]


def test_heun_calls_at_the_next_level_stay_in_their_step(denoiser):
    init, noise = latents()
    _, engine = kdiffusion_img2img("Heun", denoiser, Run(init, noise, 1.0, 6), pixel_strengths=uniform(0.5))
    sigmas = denoiser.get_sigmas(6)
    expected = []
    for step in range(6):
        expected.append((step, float(sigmas[step]), True))
        if step < 5:
            expected.append((step, float(sigmas[step + 1]), False))
    assert [(s, round(level, 4), start) for s, level, start in engine.observer] == [(s, round(level, 4), start) for s, level, start in expected]


def test_midpoint_calls_belong_to_their_step(denoiser):
    init, noise = latents()
    _, engine = kdiffusion_img2img("DPM2", denoiser, Run(init, noise, 1.0, 6), pixel_strengths=uniform(0.5))
    steps = [step for step, _, _ in engine.observer]
    starts = [start for _, _, start in engine.observer]
    assert steps == sorted(steps) and steps.count(0) == 2 and steps[-1] == len(set(steps)) - 1
    assert starts[0::2] == [True] * len(starts[0::2]) and not any(starts[1::2])


def test_step_tracker_never_goes_back():
    tracker = StepTracker(torch.tensor([10.0, 5.0, 2.0, 1.0]))
    observed = [tracker.observe(level)[0] for level in (10.0, 5.0, 7.0, 2.0, 9.0, 1.0, 0.5)]
    assert observed == [0, 1, 1, 2, 2, 3, 3]


# --- work and randomness -----------------------------------------------------


def test_skip_start_strength_keeps_at_least_one_encoded_step():
    assert skip_start_strength(torch.zeros(1, 1, 2, 2, dtype=torch.float64), 0.8, 49) >= 1 / 49
    assert int(skip_start_strength(torch.zeros(1, 1, 2, 2, dtype=torch.float64), 0.8, 49) * 49) == 1
    assert skip_start_strength(torch.full((1, 1, 2, 2), 0.3, dtype=torch.float64), 0.8, 10) == 0.3
    assert skip_start_strength(torch.full((1, 1, 2, 2), 0.8, dtype=torch.float64), 0.8, 10) == 0.8


def test_no_work_and_no_random_draws_once_nothing_is_pinned(denoiser):
    init, noise = latents()
    strengths = uniform(1.0)
    strengths[..., :4] = 0.5  # t_enc 9 - 5: pinned in steps 0-3, released (reset) at step 4
    levels = SigmaLevels(lambda n: denoiser.get_sigmas(n))
    engine = DifferentialDiffusion(pixel_strengths=strengths, init_latent=init, noise=noise, levels=levels, steps=10, run_strength=1.0)
    sigmas = denoiser.get_sigmas(10)
    state = torch.get_rng_state()
    x = init + noise * sigmas[0]
    decisions, states = [], []
    for i in range(10):
        decisions.append(engine.before_call(x, sigmas[i].reshape(1)))
        states.append(x.clone())
        x += 0.01  # the sampler moves on
    assert torch.equal(torch.get_rng_state(), state)
    assert all(d is not None for d in decisions[:4]) and all(d is None for d in decisions[4:])
    assert torch.equal(states[4][..., :4], init[..., :4] + noise[..., :4] * sigmas[4])  # the release reset
    for i in range(5, 10):  # then the state is never touched again
        assert torch.equal(states[i], states[i - 1] + 0.01)
    assert not DifferentialDiffusion(pixel_strengths=uniform(1.0), init_latent=init, noise=noise, levels=levels, steps=10, run_strength=1.0).active


@pytest.mark.parametrize("name", EXACT_SAMPLERS)
def test_step_skipping_gives_identical_output_with_fewer_model_calls(name, denoiser, eps_net):
    init, noise = latents(batch=2, seed=4)
    strengths = uniform(0.5, 2) * 0.9
    strengths[..., 8:] = 0.2 * 0.9
    strengths[1, ..., :3, :] = 0.0
    calls_before = model_calls(name, denoiser, eps_net)
    full, _ = img2img(name, denoiser, eps_net, Run(init, noise, 0.9, 20, seed=2), strengths)
    calls_full = model_calls(name, denoiser, eps_net) - calls_before
    start = skip_start_strength(strengths, 0.9, 20)
    assert start == pytest.approx(0.45)
    skipped, _ = img2img(name, denoiser, eps_net, Run(init, noise, start, 20, seed=2), strengths)
    calls_skipped = model_calls(name, denoiser, eps_net) - calls_before - calls_full
    assert torch.equal(full, skipped)
    assert calls_skipped < calls_full
    if name in ("Euler", "DDIM"):  # one call per step: 18 -> 9 k-diffusion steps, 17 -> 8 DDIM steps
        assert calls_full - calls_skipped == 9


@pytest.mark.parametrize("fix_steps", [False, True])
@pytest.mark.parametrize("steps, run_strength, slider", [(10, 1.0, 1.0), (20, 0.45, 0.9), (49, 0.8, 0.8), (7, 0.3, 0.75), (10, 0.05, 0.05)])
def test_never_released_is_release_steps_never_at_pixel_resolution(steps, run_strength, slider, fix_steps):
    values = np.concatenate([np.linspace(0, 1, 4097, dtype=np.float32), np.float32([1e-9, 0.1, 0.7, 1 / 49, 0.0199, 0.02, 0.0201])])
    rng_values = np.random.default_rng(3).random(5000, dtype=np.float32) * 0.2
    strengths = np.concatenate([values, rng_values]).reshape(1, -1)
    levels = karras_levels()
    expected = (release_steps(torch.from_numpy(strengths).to(torch.float64) * slider, levels, steps=steps, run_strength=run_strength, fix_steps=fix_steps) == NEVER).numpy()
    kept = never_released(strengths, slider, levels, steps=steps, run_strength=run_strength, fix_steps=fix_steps)
    assert np.array_equal(kept, expected)
    assert kept[0, 0] and expected.any() and not expected.all()
    # An 8-bit map, through its stored values (an 8-bit threshold), and through its decoded floats.
    stored = np.concatenate([np.arange(256, dtype=np.uint8), np.random.default_rng(4).integers(0, 256, 3000).astype(np.uint8)]).reshape(1, -1)
    decoded = decode_map(stored)
    expected = (release_steps(torch.from_numpy(decoded).to(torch.float64) * slider, levels, steps=steps, run_strength=run_strength, fix_steps=fix_steps) == NEVER).numpy()
    by_stored = never_released(MapValues(stored_8bit=stored), slider, levels, steps=steps, run_strength=run_strength, fix_steps=fix_steps)
    assert np.array_equal(by_stored, expected) and np.array_equal(by_stored, never_released(decoded, slider, levels, steps=steps, run_strength=run_strength, fix_steps=fix_steps))
    assert by_stored[0, 0] and (fix_steps or not by_stored[0, 255])


@pytest.mark.parametrize("name", ["Euler", "DPM++ 2M", "DDIM"])
def test_one_device_sync_per_model_call(name, denoiser, eps_net, monkeypatch):
    """Reading a tensor's value on the host is what makes a GPU wait: the blend does it once per
    call (the call's level, to find its step); every per-step decision is precomputed on the CPU."""
    init, noise = latents()
    strengths = uniform(0.0)
    strengths[..., 4:8] = 0.3
    strengths[..., 8:] = 1.0  # pinned, staggered and free pixels: every branch of the blend runs
    methods = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")
    saved = {method: getattr(torch.Tensor, method) for method in methods}
    reads: list[int] = []
    counting = [False]

    def counted(method):
        def read(self, *args, **kwargs):
            if counting[0]:
                reads[-1] += 1
            return saved[method](self, *args, **kwargs)

        return read

    def blend_part(function, opens_call):
        def run(self, *args, **kwargs):
            if opens_call:
                reads.append(0)
            counting[0] = True
            try:
                return function(self, *args, **kwargs)
            finally:
                counting[0] = False

        return run

    monkeypatch.setattr(DifferentialDiffusion, "before_call", blend_part(DifferentialDiffusion.before_call, True))
    monkeypatch.setattr(DifferentialDiffusion, "after_call", blend_part(DifferentialDiffusion.after_call, False))
    for method in methods:
        monkeypatch.setattr(torch.Tensor, method, counted(method))
    img2img(name, denoiser, eps_net, Run(init, noise, 1.0, 10, seed=1), strengths)
    monkeypatch.undo()
    assert len(reads) >= 8 and set(reads) == {1}, reads
