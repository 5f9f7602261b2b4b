"""A1111 v1.10.1's img2img sampling, rebuilt around the real k-diffusion samplers.

The WebUI cannot be imported in CI, so this module repeats the few lines of
``KDiffusionSampler.sample_img2img``, ``CompVisSampler.sample_img2img`` and
``sd_samplers_timesteps_impl.ddim`` that decide where img2img starts, on a
small deterministic denoiser. The sampler functions themselves are the PyPI
``k-diffusion`` package's, the same code A1111 pins; LCM's loop is A1111's own
(``sd_samplers_lcm.sample_lcm``), repeated here like DDIM's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from k_diffusion import external, sampling

from lib_differential_diffusion.blend import SAMPLERS_MIXING_STATES, SAMPLERS_WITH_NOISE_INSIDE_A_STEP, SAMPLERS_WITHOUT_HISTORY, DifferentialDiffusion
from lib_differential_diffusion.schedule import SigmaLevels, TimestepLevels, alpha_start_rule, img2img_start, sigma_start_rule
from tiny_denoiser import ALPHAS_CUMPROD, TinyEpsNet

class CompVisLikeModel(torch.nn.Module):
    """What k_diffusion.external.CompVisDenoiser expects: apply_model + alphas_cumprod."""

    def __init__(self, net: TinyEpsNet) -> None:
        super().__init__()
        self.net = net
        self.alphas_cumprod = ALPHAS_CUMPROD

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        return self.net(x, t)


def make_denoiser(seed: int = 1234) -> external.CompVisDenoiser:
    return external.CompVisDenoiser(CompVisLikeModel(TinyEpsNet(seed)), quantize=False)


def flow_sigmas(shift: float = 3.0, timesteps: int = 1000) -> torch.Tensor:
    """SD3's ModelSamplingDiscreteFlow table (A1111 ``modules/models/sd3/sd3_impls.py``): shifted t/1000."""
    t = torch.arange(1, timesteps + 1, 1) / timesteps
    return shift * t / (1 + (shift - 1) * t)


def sd3_add_noise_to_latent(x: torch.Tensor, noise: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """``SD3Inferencer.add_noise_to_latent`` (A1111 ``sd3_model.py``): the flow path."""
    return x * (1 - amount) + noise * amount


class FlowDenoiser(external.DiscreteSchedule):
    """What A1111's ``SD3Denoiser`` is to the samplers: a discrete flow schedule whose model returns x0.

    The model is the ideal x0 estimate of Gaussian latents on the path
    x = (1 - sigma) x0 + sigma noise, plus the tiny net's content-dependent wobble.
    """

    DATA_VARIANCE = 25.0

    def __init__(self, seed: int = 1234) -> None:
        super().__init__(flow_sigmas(), quantize=False)
        self.net = TinyEpsNet(seed)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        ideal = (1 - s) * self.DATA_VARIANCE * x / ((1 - s) ** 2 * self.DATA_VARIANCE + s**2)
        return ideal + 0.3 * self.net(x, sigma * 999)


def make_flow_denoiser(seed: int = 1234) -> FlowDenoiser:
    return FlowDenoiser(seed)


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """``sd_samplers_lcm.sample_lcm`` (A1111 v1.10.1), minus tqdm and the callback."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = sampling.default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        x = denoised
        if sigmas[i + 1] > 0:
            x += sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


SAMPLER_FUNCTIONS: dict[str, Callable] = {"sample_lcm": sample_lcm}  # besides k-diffusion's own


# name: (k-diffusion function, scheduler, discard penultimate sigma, brownian noise, evaluates at the next step's level)
K_SAMPLERS: dict[str, tuple[str, str, bool, bool, bool]] = {
    "Euler": ("sample_euler", "automatic", False, False, False),
    "Euler a": ("sample_euler_ancestral", "automatic", False, False, False),
    "Heun": ("sample_heun", "automatic", False, False, True),
    "DPM2": ("sample_dpm_2", "karras", True, False, False),
    "DPM2 a": ("sample_dpm_2_ancestral", "karras", True, False, True),
    "LMS": ("sample_lms", "automatic", False, False, False),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", "karras", False, False, False),
    "DPM++ 2M": ("sample_dpmpp_2m", "karras", False, False, False),
    "DPM++ SDE": ("sample_dpmpp_sde", "karras", False, True, False),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", "exponential", False, True, False),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", "exponential", True, True, False),
    "DPM fast": ("sample_dpm_fast", "automatic", False, False, False),
    "LCM": ("sample_lcm", "automatic", False, False, False),
}


def sigma_schedule(denoiser: external.CompVisDenoiser, scheduler: str, discard_penultimate: bool) -> Callable[[int], torch.Tensor]:
    """``KDiffusionSampler.get_sigmas`` for one scheduler."""
    sigma_min, sigma_max = float(denoiser.sigmas[0]), float(denoiser.sigmas[-1])

    def sigmas_for_steps(steps: int) -> torch.Tensor:
        steps += 1 if discard_penultimate else 0
        if scheduler == "automatic":
            sigmas = denoiser.get_sigmas(steps)
        elif scheduler == "karras":
            sigmas = sampling.get_sigmas_karras(steps, sigma_min, sigma_max)
        elif scheduler == "exponential":
            sigmas = sampling.get_sigmas_exponential(steps, sigma_min, sigma_max)
        else:
            raise ValueError(scheduler)
        if discard_penultimate:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.cpu()

    return sigmas_for_steps


def timesteps_for_steps(steps: int) -> torch.Tensor:
    """``CompVisSampler.get_timesteps``."""
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


class CallLog(list):
    """An engine observer: (step, level, at step start) of every model call."""

    def on_call(self, step: int, level: float, at_step_start: bool) -> None:
        self.append((step, level, at_step_start))


@dataclass
class Run:
    """One img2img run's inputs."""

    init: torch.Tensor
    noise: torch.Tensor
    strength: float
    steps: int
    fix_steps: bool = False
    seed: int = 0
    extra: dict = field(default_factory=dict)
    extra_noise: float = 0.0  # Settings -> img2img -> "Extra noise"
    add_noise_to_latent: Callable | None = None  # the model's own noise function (flow models)


def sampler_schedule_kwargs(function: Callable, sigma_sched: torch.Tensor) -> dict:
    """The schedule arguments ``KDiffusionSampler.sample_img2img`` passes, by the function's signature."""
    parameters = inspect.signature(function).parameters
    kwargs: dict = {}
    if "sigma_min" in parameters:
        kwargs["sigma_min"] = sigma_sched[-2]
    if "sigma_max" in parameters:
        kwargs["sigma_max"] = sigma_sched[0]
    if "n" in parameters:
        kwargs["n"] = len(sigma_sched) - 1
    if "sigma_sched" in parameters:
        kwargs["sigma_sched"] = sigma_sched
    if "sigmas" in parameters:
        kwargs["sigmas"] = sigma_sched
    return kwargs


def kdiffusion_img2img(
    name: str,
    denoiser: external.CompVisDenoiser,
    run: Run,
    *,
    pixel_strengths: torch.Tensor | None = None,
    scheduler: str | None = None,
    finalize: bool = True,
    keeps_history: bool | None = None,
    smooth: bool = False,
) -> tuple[torch.Tensor, DifferentialDiffusion | None]:
    """``KDiffusionSampler.sample_img2img`` with the engine wrapped around the denoiser
    (``keeps_history`` None: from the sampler's name, as the glue decides it)."""
    funcname, default_scheduler, discard, brownian, boundary = K_SAMPLERS[name]
    sigmas_for_steps = sigma_schedule(denoiser, scheduler or default_scheduler, discard)
    start = img2img_start(run.strength, run.steps, run.fix_steps)
    sigmas = sigmas_for_steps(start.total_steps)
    sigma_sched = sigmas[start.total_steps - start.t_enc - 1 :]
    # sample_img2img, as the host writes it:
    if run.add_noise_to_latent is not None:
        xi = run.add_noise_to_latent(run.init, run.noise, sigma_sched[0])
    else:
        xi = run.init + run.noise * sigma_sched[0]
    if run.extra_noise > 0:
        xi += run.noise * run.extra_noise

    function = SAMPLER_FUNCTIONS.get(funcname) or getattr(sampling, funcname)
    kwargs = sampler_schedule_kwargs(function, sigma_sched)
    if brownian:
        seeds = [run.seed + i for i in range(run.init.shape[0])]
        kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(run.init, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)
    kwargs.update(run.extra)

    engine = None
    model: Callable = denoiser
    if pixel_strengths is not None:
        engine = DifferentialDiffusion(
            pixel_strengths=pixel_strengths,
            init_latent=run.init,
            noise=run.noise,
            levels=SigmaLevels(sigmas_for_steps, sigma_start_rule(run.add_noise_to_latent, run.extra_noise)),
            steps=run.steps,
            run_strength=run.strength,
            fix_steps=run.fix_steps,
            boundary_call_ends_step=boundary,
            sampler_keeps_history=funcname not in SAMPLERS_WITHOUT_HISTORY if keeps_history is None else keeps_history,
            sampler_noises_inside_a_step=funcname in SAMPLERS_WITH_NOISE_INSIDE_A_STEP,
            sampler_mixes_states=funcname in SAMPLERS_MIXING_STATES,
            smooth=smooth,
            observer=CallLog(),
        )
        model = engine.wrap(denoiser)
    torch.manual_seed(run.seed)  # ancestral samplers draw with torch.randn_like
    with torch.no_grad():
        samples = function(model, xi, disable=True, **kwargs)
    if engine is not None and finalize:
        samples = engine.finalize(samples)
    return samples, engine


class EpsCFGLike(torch.nn.Module):
    """The eps model as A1111's CFGDenoiserTimesteps presents it: model(x, t) -> eps."""

    def __init__(self, net: TinyEpsNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t)


def ddim_loop(model: Callable, x: torch.Tensor, timesteps: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
    """``sd_samplers_timesteps_impl.ddim`` (A1111 v1.10.1), minus tqdm and the callback."""
    alphas_cumprod = ALPHAS_CUMPROD
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    s_in = x.new_ones((x.shape[0]))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        noise = sigma_t * torch.randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
    return x


def ddim_img2img(
    net: TinyEpsNet, run: Run, *, pixel_strengths: torch.Tensor | None = None, keeps_history: bool | None = None, smooth: bool = False
) -> tuple[torch.Tensor, DifferentialDiffusion | None]:
    """``CompVisSampler.sample_img2img`` with DDIM (A1111's function ``ddim``)."""
    start = img2img_start(run.strength, run.steps, run.fix_steps)
    timesteps = timesteps_for_steps(start.total_steps)
    timesteps_sched = timesteps[: start.t_enc]
    sqrt_alpha_cumprod = torch.sqrt(ALPHAS_CUMPROD[timesteps[start.t_enc]])
    sqrt_one_minus_alpha_cumprod = torch.sqrt(1 - ALPHAS_CUMPROD[timesteps[start.t_enc]])
    xi = run.init * sqrt_alpha_cumprod + run.noise * sqrt_one_minus_alpha_cumprod
    if run.extra_noise > 0:
        xi += run.noise * run.extra_noise * sqrt_alpha_cumprod

    engine = None
    model: Callable = EpsCFGLike(net)
    if pixel_strengths is not None:
        engine = DifferentialDiffusion(
            pixel_strengths=pixel_strengths,
            init_latent=run.init,
            noise=run.noise,
            levels=TimestepLevels(timesteps_for_steps, ALPHAS_CUMPROD, alpha_start_rule(run.extra_noise)),
            steps=run.steps,
            run_strength=run.strength,
            fix_steps=run.fix_steps,
            sampler_keeps_history="ddim" not in SAMPLERS_WITHOUT_HISTORY if keeps_history is None else keeps_history,
            sampler_mixes_states="ddim" in SAMPLERS_MIXING_STATES,
            smooth=smooth,
            observer=CallLog(),
        )
        model = engine.wrap(model)
    torch.manual_seed(run.seed)
    with torch.no_grad():
        samples = ddim_loop(model, xi, timesteps_sched, **run.extra)
    if engine is not None:
        samples = engine.finalize(samples)
    return samples, engine


def latents(batch: int = 1, seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded init latent and noise, [batch, 4, size, size]."""
    generator = torch.Generator().manual_seed(seed)
    init = torch.randn(batch, 4, size, size, generator=generator) * 0.8
    noise = torch.randn(batch, 4, size, size, generator=generator)
    return init, noise


def uniform(value: float, batch: int = 1, size: int = 16) -> torch.Tensor:
    """Pixel strengths of a uniform map, float64 as the glue builds them."""
    return torch.full((batch, 1, size, size), value, dtype=torch.float64)
