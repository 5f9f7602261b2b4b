"""A1111 v1.10.1's img2img generation, rebuilt on the stand-in ``modules`` and a tiny model.

What the extension's hooks see is the host's: the ``p`` fields it reads
(``StableDiffusionProcessingImg2Img``), the order of ``process_images`` /
``process_images_inner`` / ``Img2Img.init`` / ``Img2Img.sample``, and samplers
shaped like ``KDiffusionSampler`` / ``CompVisSampler`` whose ``model_wrap_cfg``
is a ``torch.nn.Module`` with the CFG denoiser's ``forward(x, sigma, uncond,
cond, cond_scale, s_min_uncond, image_cond)``. The sampler functions are the
real PyPI ``k_diffusion.sampling`` ones and A1111's DDIM loop
(``tests/a1111_sampling.py``); the model is ``TinyEpsNet``, the "VAE" a fixed
linear map over 8x8 blocks.

Prompts are fixed 4-vectors in the host's conditioning containers (so
prompt editing schedules exist); left out: text encoding, extra networks, face
restoration, overlays and color correction, inpainting fill modes other than
"original", the refiner, hires fix (img2img has none), grids; saving is
recorded in ``images.saved``, not written.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from k_diffusion import sampling
from PIL import Image, ImageOps

import a1111_sampling as a1111
from modules import images, processing, prompt_parser, scripts, shared
from modules.sd_samplers_common import InterruptedException, setup_img2img_steps

OPT_F = 8
LATENT_CHANNELS = 4
COND = torch.tensor([0.5, -0.5, 0.25, 0.0])

# The stand-in "VAE": 8x8 block means of the [-1, 1] image, mixed to 4 channels; decode inverts the mix.
_ENCODE = torch.tensor([[0.6, 1.0, 0.4], [-0.8, 0.2, 0.6], [0.4, -0.6, 0.8], [0.2, 0.4, -1.0]])
_DECODE = torch.linalg.pinv(_ENCODE)


def encode(images_01: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, 4, H/8, W/8]."""
    pooled = F.avg_pool2d(images_01 * 2 - 1, OPT_F)
    return torch.einsum("oc,bchw->bohw", _ENCODE, pooled)


def decode(latent: torch.Tensor) -> torch.Tensor:
    """[B, 4, h, w] -> [B, 3, 8h, 8w] in [0, 1] (``decode_latent_batch`` then the host's clamp)."""
    pixels = torch.einsum("co,bohw->bchw", _DECODE, latent.float())
    pixels = F.interpolate(pixels, scale_factor=OPT_F, mode="nearest")
    return torch.clamp((pixels + 1.0) / 2.0, min=0.0, max=1.0)


# --- samplers -------------------------------------------------------------------


class CFGDenoiser(torch.nn.Module):
    """``sd_samplers_cfg_denoiser.CFGDenoiser.forward``, reduced: interrupt check, mask blend, CFG, last_latent.

    ``faults`` maps a call number (1-based) to an exception to raise there,
    to ``"interrupt"`` (the user pressing Interrupt before that call), or to a
    probe called with this denoiser.
    """

    renoise_masked_every_call = False  # True: a Forge-type denoiser (see forward)

    def __init__(self, sampler: Any, inner_model: Any, *, mask_before_denoising: bool = False) -> None:
        super().__init__()
        self.inner_model = inner_model
        self.sampler = sampler
        self.mask_before_denoising = mask_before_denoising
        self.mask = self.nmask = self.init_latent = self.p = None
        self.step = 0
        self.calls = 0
        self.faults: dict[int, Any] = {}
        self.wrapped_at_call: list[bool] = []  # whether this instance's forward was replaced, per call
        self.blends: list[bool] = []  # per in-sampling mask blend: whether scripts left the current latent as is

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.inner_model(x, sigma)

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        self.calls += 1
        self.wrapped_at_call.append("forward" in self.__dict__)
        fault = self.faults.get(self.calls)
        if isinstance(fault, BaseException):
            raise fault
        if fault == "interrupt":
            shared.state.interrupted = True
        elif callable(fault):
            fault(self)
        if shared.state.interrupted or shared.state.skipped:
            raise InterruptedException

        def apply_blend(current_latent):
            blended_latent = current_latent * self.nmask + self.init_latent * self.mask
            if self.p.scripts is not None:
                mba = scripts.MaskBlendArgs(current_latent, self.nmask, self.init_latent, self.mask, blended_latent, denoiser=self, sigma=sigma)
                self.p.scripts.on_mask_blend(self.p, mba)
                blended_latent = mba.blended_latent
            self.blends.append(blended_latent is current_latent)
            return blended_latent

        if self.mask_before_denoising and self.mask is not None:
            x = apply_blend(x)
        if self.renoise_masked_every_call and self.mask is not None:
            # Forge, Neo and Forge Classic: the kept area is re-noised with fresh noise before every call.
            noisy_initial_latent = torch.randn_like(self.init_latent) * sigma.reshape(-1, 1, 1, 1) + self.init_latent
            x = x * self.nmask + noisy_initial_latent * self.mask

        # CFG on the tiny model: one model call; each (possibly scheduled) prompt vector shifts the output.
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        guidance = uncond[:, 0].clone()
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                guidance[i] += (tensor[cond_index, 0] - uncond[i, 0]) * (weight * cond_scale)
        denoised = self.denoise(x, sigma) + 0.02 * guidance.reshape(-1, LATENT_CHANNELS, 1, 1).to(x.dtype)

        if not self.mask_before_denoising and self.mask is not None:
            denoised = apply_blend(denoised)

        self.sampler.last_latent = denoised
        self.step += 1
        return denoised


class KDiffusionSampler:
    """``sd_samplers_kdiffusion.KDiffusionSampler`` for one of ``a1111_sampling.K_SAMPLERS``."""

    def __init__(self, name: str) -> None:
        funcname, scheduler, discard, brownian, _ = a1111.K_SAMPLERS[name]
        self.funcname = funcname
        self.func = getattr(sampling, funcname)
        self.model_wrap = a1111.make_denoiser()
        self.model_wrap_cfg = CFGDenoiser(self, self.model_wrap)
        self.sigmas_for_steps = a1111.sigma_schedule(self.model_wrap, scheduler, discard)
        self.brownian = brownian
        self.last_latent = None
        self.p = None
        self.s_min_uncond = 0.0
        self.sample_calls: list[dict] = []

    def get_sigmas(self, p, steps):
        return self.sigmas_for_steps(steps)

    def callback_state(self, d):
        pass

    def launch_sampling(self, steps, func):
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def initialize(self, p) -> dict:
        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.mask = p.mask if hasattr(p, "mask") else None
        self.model_wrap_cfg.nmask = p.nmask if hasattr(p, "nmask") else None
        self.model_wrap_cfg.step = 0
        return {}

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = setup_img2img_steps(p, steps)

        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        xi = x + noise * sigma_sched[0]

        extra_params_kwargs = self.initialize(p)
        extra_params_kwargs.update(a1111.sampler_schedule_kwargs(self.func, sigma_sched))
        if self.brownian:
            sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
            extra_params_kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=list(p.seeds))

        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale, "s_min_uncond": self.s_min_uncond}
        self.sample_calls.append({"x": x, "noise": noise, "forward_replaced": "forward" in self.model_wrap_cfg.__dict__, "denoising_strength": p.denoising_strength, "calls_before": self.model_wrap_cfg.calls})
        torch.manual_seed(p.seeds[0])  # the host's TorchHijack draws ancestral noise from p's seeded RNG
        samples = self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, extra_args=self.sampler_extra_args, disable=True, callback=self.callback_state, **extra_params_kwargs))
        self.sample_calls[-1]["samples"] = samples
        self.sample_calls[-1]["model_calls"] = self.model_wrap_cfg.calls - self.sample_calls[-1]["calls_before"]
        return samples


class CFGDenoiserTimesteps(CFGDenoiser):
    """``sd_samplers_timesteps.CFGDenoiserTimesteps``: the model returns eps; mask blended before denoising."""

    def __init__(self, sampler: Any, net: a1111.TinyEpsNet) -> None:
        super().__init__(sampler, net, mask_before_denoising=True)

    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.inner_model(x, t)


class CompVisSampler(KDiffusionSampler):
    """``sd_samplers_timesteps.CompVisSampler`` with DDIM (``sd_samplers_timesteps_impl.ddim``)."""

    def __init__(self, name: str = "DDIM") -> None:
        self.funcname = "ddim"
        self.func = self.ddim
        self.model_wrap_cfg = CFGDenoiserTimesteps(self, a1111.TinyEpsNet())
        self.last_latent = None
        self.p = None
        self.s_min_uncond = 0.0
        self.sample_calls = []

    @staticmethod
    def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
        extra_args = extra_args or {}
        return a1111.ddim_loop(lambda x_, t_: model(x_, t_, **extra_args), x, timesteps, eta=eta)

    def get_timesteps(self, p, steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = setup_img2img_steps(p, steps)

        timesteps = self.get_timesteps(p, steps)
        timesteps_sched = timesteps[:t_enc]

        alphas_cumprod = shared.sd_model.alphas_cumprod
        sqrt_alpha_cumprod = torch.sqrt(alphas_cumprod[timesteps[t_enc]])
        sqrt_one_minus_alpha_cumprod = torch.sqrt(1 - alphas_cumprod[timesteps[t_enc]])
        xi = x * sqrt_alpha_cumprod + noise * sqrt_one_minus_alpha_cumprod

        extra_params_kwargs = self.initialize(p)
        parameters = inspect.signature(self.func).parameters
        if "timesteps" in parameters:
            extra_params_kwargs["timesteps"] = timesteps_sched
        if "is_img2img" in parameters:
            extra_params_kwargs["is_img2img"] = True

        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning, "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale, "s_min_uncond": self.s_min_uncond}
        self.sample_calls.append({"x": x, "noise": noise, "forward_replaced": "forward" in self.model_wrap_cfg.__dict__, "denoising_strength": p.denoising_strength, "calls_before": self.model_wrap_cfg.calls})
        torch.manual_seed(p.seeds[0])
        samples = self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state, **extra_params_kwargs))
        self.sample_calls[-1]["samples"] = samples
        self.sample_calls[-1]["model_calls"] = self.model_wrap_cfg.calls - self.sample_calls[-1]["calls_before"]
        return samples


def create_sampler(name: str) -> KDiffusionSampler:
    """``sd_samplers.create_sampler``: a new sampler object every time."""
    return CompVisSampler(name) if name == "DDIM" else KDiffusionSampler(name)


# --- p and the generation ---------------------------------------------------------


def _crop_region_v2(mask: Image.Image, pad: int = 0):
    """``masking.get_crop_region_v2``."""
    if box := mask.getbbox():
        x1, y1, x2, y2 = box
        return (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])) if pad else box
    return None


def _expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    """``masking.expand_crop_region``."""
    x1, y1, x2, y2 = crop_region
    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_crop_region > ratio_processing:
        desired_height = (x2 - x1) / ratio_processing
        desired_height_diff = int(desired_height - (y2 - y1))
        y1 -= desired_height_diff // 2
        y2 += desired_height_diff - desired_height_diff // 2
        if y2 >= image_height:
            diff = y2 - image_height
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        if y2 >= image_height:
            y2 = image_height
    else:
        desired_width = (y2 - y1) * ratio_processing
        desired_width_diff = int(desired_width - (x2 - x1))
        x1 -= desired_width_diff // 2
        x2 += desired_width_diff - desired_width_diff // 2
        if x2 >= image_width:
            diff = x2 - image_width
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        if x2 >= image_width:
            x2 = image_width
    return x1, y1, x2, y2


class StableDiffusionProcessingImg2Img:
    """The fields of v1.10.1's ``StableDiffusionProcessingImg2Img`` that the extension reads, and its init/sample."""

    def __init__(
        self,
        *,
        init_images: list[Image.Image],
        script_args: list,
        scripts: scripts.ScriptRunner | None,
        width: int = 64,
        height: int = 64,
        resize_mode: int = 0,
        denoising_strength: float = 0.75,
        steps: int = 10,
        sampler_name: str = "Euler",
        seed: int = 1,
        batch_size: int = 1,
        n_iter: int = 1,
        cfg_scale: float = 7.0,
        image_mask: Image.Image | None = None,
        mask_blur: int = 4,
        inpainting_fill: int = 1,
        inpaint_full_res: bool = False,
        inpaint_full_res_padding: int = 0,
        inpainting_mask_invert: int = 0,
        faults: dict[int, Any] | None = None,
        prompt_schedule: list[tuple[int, torch.Tensor]] | None = None,
        inpainting_model: bool = False,
        inpainting_mask_weight: float = 1.0,
    ) -> None:
        self.init_images = init_images
        # A model whose UNet takes a mask and the masked image (conditioning_key hybrid); the stand-in's
        # sampler does not read the conditioning, the tests read p.image_conditioning.
        self.inpainting_model = inpainting_model
        self.inpainting_mask_weight = inpainting_mask_weight
        self.is_using_inpainting_conditioning = False
        self.script_args = script_args
        self.scripts = scripts
        self.width, self.height = width, height
        self.resize_mode = resize_mode
        self.denoising_strength = denoising_strength
        self.steps = steps
        self.sampler_name = sampler_name
        self.seed = seed
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.cfg_scale = cfg_scale
        self.image_mask = image_mask
        self.mask_blur_x = self.mask_blur_y = mask_blur
        self.mask_round = True
        self.inpainting_fill = inpainting_fill
        self.inpaint_full_res = inpaint_full_res
        self.inpaint_full_res_padding = inpaint_full_res_padding
        self.inpainting_mask_invert = inpainting_mask_invert
        self.latent_mask = None
        self.mask = self.nmask = None
        self.paste_to = None
        self.mask_for_overlay = None
        self.overlay_images = None
        self.image_conditioning = None
        self.extra_generation_params: dict[str, Any] = {}
        self.sampler = None
        self.iteration = 0
        self.batch_index = 0
        self.faults = faults or {}
        # (end_at_step, prompt vector) pairs: more than one is prompt editing, e.g. "[a:b:5]"
        self.prompt_schedule = prompt_schedule or [(steps, COND)]
        self.all_seeds = [seed + i for i in range(batch_size * n_iter)]
        self.all_subseeds = list(self.all_seeds)
        self.all_prompts = [""] * (batch_size * n_iter)
        self.prompt = ""
        self.outpath_samples = "outputs/img2img-images"
        self.do_not_save_samples = False

    def save_samples(self) -> bool:
        """Returns whether generated images need to be written to disk"""
        return shared.opts.samples_save and not self.do_not_save_samples and (not shared.state.interrupted and not shared.state.skipped)

    def init(self, all_prompts, all_seeds, all_subseeds):
        import cv2  # the WebUI ships opencv; tests/standin/cv2_fallback where it is not installed

        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.sampler = create_sampler(self.sampler_name)
        self.sampler.model_wrap_cfg.faults = dict(self.faults)
        crop_region = None

        image_mask = self.image_mask
        if image_mask is not None:
            image_mask = processing.create_binary_mask(image_mask, round=self.mask_round)
            if self.inpainting_mask_invert:
                image_mask = ImageOps.invert(image_mask)
            if self.mask_blur_x > 0:
                np_mask = np.array(image_mask)
                kernel_size = 2 * int(2.5 * self.mask_blur_x + 0.5) + 1
                image_mask = Image.fromarray(cv2.GaussianBlur(np_mask, (kernel_size, 1), self.mask_blur_x))
            if self.mask_blur_y > 0:
                np_mask = np.array(image_mask)
                kernel_size = 2 * int(2.5 * self.mask_blur_y + 0.5) + 1
                image_mask = Image.fromarray(cv2.GaussianBlur(np_mask, (1, kernel_size), self.mask_blur_y))
            if self.inpaint_full_res:
                self.mask_for_overlay = image_mask
                mask = image_mask.convert("L")
                crop_region = _crop_region_v2(mask, self.inpaint_full_res_padding)
                if crop_region:
                    crop_region = _expand_crop_region(crop_region, self.width, self.height, mask.width, mask.height)
                    x1, y1, x2, y2 = crop_region
                    mask = mask.crop(crop_region)
                    image_mask = images.resize_image(2, mask, self.width, self.height)
                    self.paste_to = (x1, y1, x2 - x1, y2 - y1)
                else:
                    crop_region = None
                    image_mask = None
                    self.mask_for_overlay = None
                    self.inpaint_full_res = False
            else:
                image_mask = images.resize_image(self.resize_mode, image_mask, self.width, self.height)

        latent_mask = self.latent_mask if self.latent_mask is not None else image_mask

        imgs = []
        for img in self.init_images:
            image = images.flatten(img, shared.opts.img2img_background_color)
            if crop_region is None and self.resize_mode != 3:
                image = images.resize_image(self.resize_mode, image, self.width, self.height)
            if crop_region is not None:
                image = image.crop(crop_region)
                image = images.resize_image(2, image, self.width, self.height)
            if image_mask is not None and self.inpainting_fill != 1:
                raise NotImplementedError("the stand-in supports inpainting fill 'original' only")
            image = np.array(image).astype(np.float32) / 255.0
            imgs.append(np.moveaxis(image, 2, 0))

        if len(imgs) == 1:
            batch_images = np.expand_dims(imgs[0], axis=0).repeat(self.batch_size, axis=0)
        elif len(imgs) <= self.batch_size:
            self.batch_size = len(imgs)
            batch_images = np.array(imgs)
        else:
            raise RuntimeError(f"bad number of images passed: {len(imgs)}; expecting {self.batch_size} or less")

        image = torch.from_numpy(batch_images)
        self.init_latent = encode(image)
        if self.resize_mode == 3:
            self.init_latent = F.interpolate(self.init_latent, size=(self.height // OPT_F, self.width // OPT_F), mode="bilinear")

        if image_mask is not None:
            latmask = latent_mask.convert("RGB").resize((self.init_latent.shape[3], self.init_latent.shape[2]))
            latmask = np.moveaxis(np.array(latmask, dtype=np.float32), 2, 0) / 255
            latmask = latmask[0]
            if self.mask_round:
                latmask = np.around(latmask)
            latmask = np.tile(latmask[None], (self.init_latent.shape[1], 1, 1))
            self.mask = torch.asarray(1.0 - latmask)
            self.nmask = torch.asarray(latmask)

        self.image_conditioning = self.img2img_image_conditioning(image * 2 - 1, self.init_latent, image_mask, self.mask_round)

    def inpainting_image_conditioning(self, source_image, latent_image, image_mask=None, round_image_mask=True):
        """v1.10.1's, with the stand-in's encoder: [mask reduced to the latent (nearest), masked image's latent]."""
        self.is_using_inpainting_conditioning = True
        if image_mask is not None:
            if torch.is_tensor(image_mask):
                conditioning_mask = image_mask
            else:
                conditioning_mask = torch.from_numpy((np.array(image_mask.convert("L")).astype(np.float32) / 255.0)[None, None])
                if round_image_mask:
                    conditioning_mask = torch.round(conditioning_mask)
        else:
            conditioning_mask = source_image.new_ones(1, 1, *source_image.shape[-2:])
        conditioning_mask = conditioning_mask.to(device=source_image.device, dtype=source_image.dtype)
        conditioning_image = torch.lerp(source_image, source_image * (1.0 - conditioning_mask), self.inpainting_mask_weight)
        conditioning_image = encode(conditioning_image * 0.5 + 0.5)
        conditioning_mask = F.interpolate(conditioning_mask, size=latent_image.shape[-2:])
        conditioning_mask = conditioning_mask.expand(conditioning_image.shape[0], -1, -1, -1)
        return torch.cat([conditioning_mask, conditioning_image], dim=1)

    def img2img_image_conditioning(self, source_image, latent_image, image_mask=None, round_image_mask=True):
        if self.inpainting_model:
            return self.inpainting_image_conditioning(source_image, latent_image, image_mask=image_mask, round_image_mask=round_image_mask)
        return latent_image.new_zeros(latent_image.shape[0], 5, 1, 1)

    def setup_conds(self) -> None:
        """``setup_conds``: c (composable, scheduled) and uc (scheduled) for this batch's images."""
        schedule = [prompt_parser.ScheduledPromptConditioning(end, vector.reshape(1, LATENT_CHANNELS)) for end, vector in self.prompt_schedule]
        self.c = prompt_parser.MulticondLearnedConditioning(shape=(len(self.prompts),), batch=[[prompt_parser.ComposableScheduledPromptConditioning(schedule)] for _ in self.prompts])
        self.uc = [[prompt_parser.ScheduledPromptConditioning(self.steps, torch.zeros(1, LATENT_CHANNELS))] for _ in self.prompts]

    def rng_next(self) -> torch.Tensor:
        """``rng.ImageRNG.next``: one seeded normal draw per image of the batch."""
        shape = (LATENT_CHANNELS, self.init_latent.shape[2], self.init_latent.shape[3])
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed)) for seed in self.seeds])

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        x = self.rng_next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=self.init_latent, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample_img2img(self, self.init_latent, x, conditioning, unconditional_conditioning, image_conditioning=self.image_conditioning)

        if self.mask is not None:
            blended_samples = samples * self.nmask + self.init_latent * self.mask
            if self.scripts is not None:
                mba = scripts.MaskBlendArgs(samples, self.nmask, self.init_latent, self.mask, blended_samples)
                self.scripts.on_mask_blend(self, mba)
                blended_samples = mba.blended_latent
            samples = blended_samples
        return samples


@dataclass
class Processed:
    images: list[Image.Image]
    latents: list[torch.Tensor] = field(default_factory=list)  # after post_sample, one per batch
    infotext_params: dict[str, Any] = field(default_factory=dict)
    infotexts: list[str] = field(default_factory=list)  # one per image, like the host's


def process_images(p: StableDiffusionProcessingImg2Img) -> Processed:
    """``processing.process_images`` + ``process_images_inner`` (img2img path), hook order as in v1.10.1."""
    if p.scripts is not None:
        p.scripts.before_process(p)

    if p.scripts is not None:
        p.scripts.process(p)

    output_images: list[Image.Image] = []
    infotexts: list[str] = []
    latents: list[torch.Tensor] = []
    with torch.no_grad():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)

        for n in range(p.n_iter):
            p.iteration = n
            if shared.state.skipped:
                shared.state.skipped = False
            if shared.state.interrupted or shared.state.stopping_generation:
                break

            p.prompts = p.all_prompts[n * p.batch_size:(n + 1) * p.batch_size]
            p.seeds = p.all_seeds[n * p.batch_size:(n + 1) * p.batch_size]
            p.subseeds = p.all_subseeds[n * p.batch_size:(n + 1) * p.batch_size]
            p.setup_conds()

            samples_ddim = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds, subseed_strength=0.0, prompts=p.prompts)

            if p.scripts is not None:
                ps = scripts.PostSampleArgs(samples_ddim)
                p.scripts.post_sample(p, ps)
                samples_ddim = ps.samples
            latents.append(samples_ddim)

            x_samples_ddim = decode(samples_ddim)
            for i, x_sample in enumerate(x_samples_ddim):
                p.batch_index = i
                x_sample = 255.0 * np.moveaxis(x_sample.cpu().numpy(), 0, 2)
                image = Image.fromarray(x_sample.astype(np.uint8))
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    image = pp.image
                if p.paste_to is not None:
                    # processing.apply_overlay: the crop goes back into the full image, resampled
                    # (the host then composites the original over the unmasked part).
                    x, y, w, h = p.paste_to
                    base = images.flatten(p.init_images[i if len(p.init_images) > 1 else 0], "#ffffff")
                    base.paste(images.resize_image(1, image, w, h), (x, y))
                    image = base
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image_after_composite(p, pp)
                    image = pp.image
                text = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, None, p.iteration, i)
                if p.save_samples():
                    images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], shared.opts.samples_format, info=text, p=p)
                infotexts.append(text)
                output_images.append(image)

    res = Processed(output_images, latents, dict(p.extra_generation_params), infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
