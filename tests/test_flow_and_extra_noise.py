"""Flow-matching models (SD3's img2img start ``x (1 - sigma) + noise sigma``, x0 prediction) and
the host's "Extra noise" setting: pinned pixels are re-noised by the host's own rule, so a pixel
released at step k starts exactly where plain img2img at its strength starts.

The samplers are the real k-diffusion functions (and A1111's DDIM loop); the flow model is
``a1111_sampling.FlowDenoiser`` on SD3's shifted schedule, the start rule the host's
(``sample_img2img``) written out in ``a1111_sampling``, not the engine's.
"""

from __future__ import annotations

import pytest
import torch

from a1111_sampling import K_SAMPLERS, latents, uniform, Run, TinyEpsNet, ddim_img2img, kdiffusion_img2img, make_denoiser, make_flow_denoiser, sd3_add_noise_to_latent

H = W = 16
# Samplers whose state after the release step depends only on that state (no history, no sequential noise).
EXACT_SAMPLERS = ["Euler", "Heun", "DPM2"]


@pytest.fixture(scope="module")
def flow():
    return make_flow_denoiser()


@pytest.fixture(scope="module")
def eps():
    return make_denoiser()


@pytest.fixture(scope="module")
def eps_net():
    return TinyEpsNet()


def flow_run(strength: float, steps: int = 10, batch: int = 1, seed: int = 5, **kwargs) -> Run:
    init, noise = latents(batch)
    return Run(init, noise, strength=strength, steps=steps, seed=seed, add_noise_to_latent=sd3_add_noise_to_latent, **kwargs)


def test_the_flow_start_is_not_the_additive_one(flow):
    """The case this file exists for: on a flow model a pixel pinned at init + sigma * noise would be far off."""
    run = flow_run(1.0)
    sigma = float(flow.get_sigmas(10)[4])
    assert (sd3_add_noise_to_latent(run.init, run.noise, sigma) - (run.init + run.noise * sigma)).abs().mean() > 0.2


@pytest.mark.parametrize("name", list(K_SAMPLERS))
def test_flow_all_ones_is_plain_and_all_zeros_is_the_input(name, flow):
    run = flow_run(0.8, batch=2)
    plain, _ = kdiffusion_img2img(name, flow, run)
    ones, engine = kdiffusion_img2img(name, flow, run, pixel_strengths=uniform(1.0, 2) * 0.8)
    assert not engine.active and torch.equal(plain, ones)
    zeros, engine = kdiffusion_img2img(name, flow, run, pixel_strengths=uniform(0.0, 2))
    assert engine.active and torch.equal(zeros, run.init)
    assert (plain - run.init).abs().mean() > 0.05  # the sampler does change an unpinned image


@pytest.mark.parametrize("name", EXACT_SAMPLERS)
@pytest.mark.parametrize("value, strength, steps", [(0.5, 1.0, 10), (0.3, 1.0, 10), (0.6, 0.75, 20), (0.7, 1.0, 10)])
def test_flow_pinned_then_released_equals_plain_img2img_at_the_product_strength(name, value, strength, steps, flow):
    """No step skipping: every pixel is pinned for the first steps, then released; the result is plain
    img2img at value * strength, which starts later on the same schedule."""
    run = flow_run(strength, steps)
    with_map, engine = kdiffusion_img2img(name, flow, run, pixel_strengths=uniform(value) * strength)
    assert engine.active
    plain, _ = kdiffusion_img2img(name, flow, flow_run(value * strength, steps))
    assert (with_map - plain).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["Euler", "Euler a", "DPM++ 2M", "DPM++ SDE"])
def test_flow_change_grows_band_by_band(name, flow):
    run = flow_run(1.0, steps=12)
    strengths = torch.zeros(1, 1, H, W, dtype=torch.float64)
    for band, value in enumerate((0.0, 0.25, 0.5, 0.75)):
        strengths[..., band * 4 : band * 4 + 4] = value
    result, _ = kdiffusion_img2img(name, flow, run, pixel_strengths=strengths)
    change = [(result - run.init)[..., band * 4 : band * 4 + 4].abs().mean().item() for band in range(4)]
    assert change[0] == 0.0 and change[0] < change[1] < change[2] < change[3], change


@pytest.mark.parametrize("name", EXACT_SAMPLERS)
@pytest.mark.parametrize("extra_noise", [0.3, 1.0])
def test_extra_noise_released_pixels_start_where_img2img_starts(name, extra_noise, eps):
    """With "Extra noise", plain img2img adds noise * extra to its start; pinned pixels carry it too."""
    init, noise = latents()
    run = Run(init, noise, strength=1.0, steps=10, seed=2, extra_noise=extra_noise)
    with_map, engine = kdiffusion_img2img(name, eps, run, pixel_strengths=uniform(0.5))
    assert engine.active
    plain, _ = kdiffusion_img2img(name, eps, Run(init, noise, strength=0.5, steps=10, seed=2, extra_noise=extra_noise))
    assert (with_map - plain).abs().max() <= 1e-5
    without_extra, _ = kdiffusion_img2img(name, eps, Run(init, noise, strength=0.5, steps=10, seed=2))
    assert (plain - without_extra).abs().max() > 0.1  # the setting does change the start


def test_extra_noise_on_flow_models_and_timestep_samplers(flow, eps_net):
    run = flow_run(1.0, extra_noise=0.3)
    with_map, _ = kdiffusion_img2img("Euler", flow, run, pixel_strengths=uniform(0.5))
    plain, _ = kdiffusion_img2img("Euler", flow, flow_run(0.5, extra_noise=0.3))
    assert (with_map - plain).abs().max() <= 1e-5
    init, noise = latents()
    ddim_map, _ = ddim_img2img(eps_net, Run(init, noise, strength=1.0, steps=10, extra_noise=0.3), pixel_strengths=uniform(0.5))
    ddim_plain, _ = ddim_img2img(eps_net, Run(init, noise, strength=0.5, steps=10, extra_noise=0.3))
    assert (ddim_map - ddim_plain).abs().max() <= 1e-5
