"""The generation hooks: host objects in, core functions out.

Everything here reads or writes a host surface listed in ``surfaces.SURFACES``
and hands plain values to ``lib_differential_diffusion``. One run (one ``p``)
keeps a ``RunState`` between hooks.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from lib_differential_diffusion.api_guard import GUARDED_API_PATHS, ArgsShapeGuard
from lib_differential_diffusion.args import (
    ELEM_PREFIX,
    INFOTEXT_KEYS,
    MODEL_MASK_INFOTEXT_KEY,
    PANEL_DEFAULT_NAMES,
    SETTINGS_BY_NAME,
    XYZ_AXES,
    DifferentialDiffusionArgs,
    axis_label,
    axis_value,
    schema,
)
from lib_differential_diffusion.batch import is_batch_input, map_for_batch_image
from lib_differential_diffusion.blend import (
    BOUNDARY_CALL_SAMPLERS,
    SAMPLERS_MIXING_STATES,
    SAMPLERS_WITH_NOISE_INSIDE_A_STEP,
    SAMPLERS_WITHOUT_HISTORY,
    DifferentialDiffusion,
)
from lib_differential_diffusion.errors import EXTENSION_NAME, DifferentialDiffusionError
from lib_differential_diffusion.fan import fan_denoising_strengths, fan_label_font_size, label_fan
from lib_differential_diffusion.maps import Geometry, MapSource, MapValues, align_map, decode_map_and_hash, source_pixels, to_latent
from lib_differential_diffusion.schedule import (
    SigmaLevels,
    alpha_start_rule,
    sigma_start_rule,
    StepCounting,
    TimestepLevels,
    can_skip_steps,
    has_prompt_schedules,
    skip_start_strength,
)
from lib_differential_diffusion.strengths import pixel_strengths, preserve
from modules import images, processing, script_callbacks, scripts, shared

from . import preprocessors, surfaces

logger = logging.getLogger(__name__)

STATE_ATTRIBUTE = "differential_diffusion_state"
OVERRIDES_ATTRIBUTE = "differential_diffusion_overrides"  # set by X/Y/Z axes, per cell
# The WebUI's outpainting scripts: the init image is the grown canvas, the input somewhere inside.
CANVAS_GROWING_SCRIPTS = ("Outpainting mk2", "Poor man's outpainting")
SOFT_INPAINTING_INFOTEXT_KEY = "Soft inpainting enabled"  # the built-in soft inpainting's own key
WITH_SOFT_INPAINTING_INFOTEXT_KEY = "DD soft inpainting"
# Set by the project's real-host tests: serves what the last run did and which host surfaces exist.
TEST_HOOKS = os.environ.get("SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST") == "1"

HOST = surfaces.detect_host()

# The one generation allowed to blend; set at the start of every run, so a
# wrapper left behind by a failed run can never act on a later one.
_active_run: str | None = None
_last_run_report: dict[str, Any] = {}
_seen_elem_ids: set[str] = set()
_preprocessor_parameters: dict[int, dict[str, Any]] = {}  # test report: what each init image's preprocessor ran with
# Test mode: the extension's own time in the latest run, per hook and in the blend of the model
# calls; "decode_map_image" (the map's image decoding) is also part of "before_process".
_own_seconds: dict[str, float] = {}


def own_time(function: Callable | None = None, *, starts_run: bool = False) -> Callable:
    """In test mode, ``function`` adding its time to the latest run's own time (reported with the
    last run: ``benchmarks/host_speed.py`` sets it against the generation's); else ``function``.
    ``starts_run``: the hook that opens a run, which clears the last run's timings first."""
    if function is None:
        return functools.partial(own_time, starts_run=starts_run)
    if not TEST_HOOKS:
        return function
    name = function.__name__

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if starts_run:
            _own_seconds.clear()
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _own_seconds[name] = _own_seconds.get(name, 0.0) + time.perf_counter() - start

    return timed


class ArgumentsRefused(DifferentialDiffusionError):
    """Raised from the generation itself: script hooks' exceptions are only logged.

    ``status_code`` and ``detail`` make the WebUI's API answer 422 with this
    message in ``detail`` (its exception handler reads the instance's attributes).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.status_code = 422
        self.detail = str(self)


@dataclass
class FanCopy:
    """A fan output's labelled copy, with what saving it needs (p's seeds move on per batch)."""

    image: Image.Image
    infotext: str
    seed: int
    prompt: str


class CallLog(list):
    """Engine observer for the test route: (step, level, at step start) per model call."""

    def on_call(self, step: int, level: float, at_step_start: bool) -> None:
        self.append([step, level, at_step_start])


@dataclass
class RunState:
    """What one generation (one ``p``) needs between hooks."""

    run_id: str
    slider: float  # the denoising strength asked for (p's is lowered while sampling when steps are skipped)
    args: DifferentialDiffusionArgs
    user_map: MapValues | None  # decoded map (sources "map" and "draw"), at its own size
    map_hash: str | None
    image_maps: dict[int, MapValues] = field(default_factory=dict)  # source "preprocessor": each init image's own map
    strengths: dict[tuple[int, bool], MapValues] = field(default_factory=dict)  # per init image and frame, before the slider
    kept: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict)  # pixels the engine never releases, same keys
    engine: DifferentialDiffusion | None = None
    wrapped_denoiser: tuple[Any, Any, Any] | None = None
    inpaint_mask: np.ndarray | None = None  # the host's processed mask, once computed
    inpaint_mask_ready: bool = False
    resized_originals: dict[int, Image.Image] = field(default_factory=dict)  # init images in the output's frame
    fan_copies: list[FanCopy] = field(default_factory=list)
    fan_labels: tuple[list[float], Any] | None = None  # the fan's strengths and font, the same for every image


# --- arguments --------------------------------------------------------------------


def parse(p: Any, script_args: tuple) -> DifferentialDiffusionArgs:
    args = DifferentialDiffusionArgs.from_script_args(script_args)
    overrides = getattr(p, OVERRIDES_ATTRIBUTE, None)
    return args.with_overrides(**overrides) if overrides else args


def refuse(p: Any, error: DifferentialDiffusionError) -> None:
    """Make this generation fail with the message, from code no hook wrapper catches."""
    refusal = ArgumentsRefused(error.field, error.message)
    logger.error("%s", refusal)

    def refuse_init(*_: Any, **__: Any) -> None:
        raise refusal

    p.init = refuse_init


def active_run() -> str | None:
    """The run id allowed to blend now (None between runs)."""
    return _active_run


def state_of(p: Any) -> RunState | None:
    state = getattr(p, STATE_ATTRIBUTE, None)
    return state if isinstance(state, RunState) and state.run_id == _active_run else None


def selected_script(p: Any) -> str | None:
    """Title of the img2img script the user chose (the Script dropdown; None for none)."""
    try:
        index = p.script_args[0]
        return p.scripts.selectable_scripts[index - 1].title() if isinstance(index, int) and index > 0 else None
    except (AttributeError, IndexError, TypeError):
        return None


@own_time
def decode_map_image(source: MapSource) -> np.ndarray:
    """The map's pixels as stored: PNG (or other) bytes decoded; its own entry in the own time."""
    return source_pixels(source)


@own_time(starts_run=True)
def before_process(p: Any, script_args: tuple) -> None:
    global _active_run
    _active_run = None  # reset at every start, whatever the last run left
    p.__dict__.pop(STATE_ATTRIBUTE, None)
    source_paths = [image.info.pop(SOURCE_PATH_INFO_KEY, None) for image in p.init_images or () if hasattr(image, "info")]
    # A fresh dict without our keys: X/Y/Z cells share the one they were copied from.
    p.extra_generation_params = {key: value for key, value in p.extra_generation_params.items() if key not in INFOTEXT_KEYS and key != WITH_SOFT_INPAINTING_INFOTEXT_KEY}
    try:
        args = parse(p, script_args)
        if not args.enabled:
            return
        if getattr(p, "is_api", False):
            args.refuse_server_paths()
        script = selected_script(p)
        if script in CANVAS_GROWING_SCRIPTS and args.source != "inpaint mask":
            raise DifferentialDiffusionError(
                "script", f'"{script}" grows the canvas, so a map made for the input image cannot be placed on its result; '
                "use map source 'inpaint mask' (the new area is the masked part), or outpaint first and change the result with a map",
            )  # fmt: skip
        user_map = user_map_hash = pixels = None
        if args.source == "map":
            pixels = decode_map_image(map_for_batch_image(source_paths, args.map_folder, args.user_map()))
        elif args.source == "draw":
            pixels = decode_map_image(args.user_map())
        elif args.source == "inpaint mask" and getattr(p, "image_mask", None) is None:
            raise DifferentialDiffusionError("source", "'inpaint mask' needs an inpaint mask (use an inpaint tab, or upload a map)")
        image_maps = preprocessor_maps(p, args) if args.source == "preprocessor" else {}
        if pixels is not None:
            user_map, user_map_hash = decode_map_and_hash(pixels)
    except DifferentialDiffusionError as error:
        refuse(p, error)
        return
    state = RunState(
        run_id=uuid.uuid4().hex, slider=float(p.denoising_strength), args=args, user_map=user_map, map_hash=user_map_hash,
        image_maps=image_maps,
    )  # fmt: skip
    setattr(p, STATE_ATTRIBUTE, state)
    _active_run = state.run_id
    p.extra_generation_params.update(args.infotext(state.map_hash))


def preprocessor_maps(p: Any, args: DifferentialDiffusionArgs) -> dict[int, MapValues]:
    """Source "preprocessor": the map of each init image, made from it by the host's preprocessor
    (at the image's own size: it then takes the image's resize and crop like an uploaded map)."""
    maps = {}
    _preprocessor_parameters.clear()
    for index, image in enumerate(p.init_images):
        output, used = preprocessors.make_map(args.preprocessor, image)
        maps[index] = MapValues.decoded(output)  # no hash: the infotext names the preprocessor
        if TEST_HOOKS:
            _preprocessor_parameters[index] = used
    return maps


@own_time
def process(p: Any) -> None:
    state = state_of(p)
    if state is None:
        return
    if getattr(p, "image_mask", None) is not None:
        p.mask_round = False  # strengths are map x soft mask: keep the WebUI's mask soft too
    condition_with_map(p)


def condition_with_map(p: Any) -> None:
    """An inpainting model's mask (and masked image) from the map. The host calls
    ``p.inpainting_image_conditioning`` in ``p.init`` for models that take one (hybrid/concat, SDXL
    inpainting), with its own mask (none in the img2img tab: all masked); it gets the map's strengths
    instead, soft, so a kept pixel is context and a changing one is masked. The host's function builds
    the rest, its "Conditional mask weight" included. Other models never call it. For this ``p`` only.
    The patch holds ``p`` weakly and finds the run's state at call time: ``p`` holding it must not keep
    ``p`` (or the map, up to 256 MB) alive in a reference cycle once the run drops its state."""
    own = type(p).inpainting_image_conditioning  # the class's function: a bound method would hold p
    p_ref = weakref.ref(p)

    def inpainting_image_conditioning(source_image: torch.Tensor, latent_image: torch.Tensor, image_mask: Any = None, round_image_mask: bool = True) -> torch.Tensor:
        p_now = p_ref()
        run = state_of(p_now)
        if run is None:
            return own(p_now, source_image, latent_image, image_mask=image_mask, round_image_mask=round_image_mask)
        p_now.extra_generation_params[MODEL_MASK_INFOTEXT_KEY] = run.args.model_mask
        if not run.args.model_mask:
            return own(p_now, source_image, latent_image, image_mask=image_mask, round_image_mask=round_image_mask)
        return own(p_now, source_image, latent_image, image_mask=model_mask(p_now, run, source_image), round_image_mask=False)

    p.inpainting_image_conditioning = inpainting_image_conditioning


def model_mask(p: Any, state: RunState, source_image: torch.Tensor) -> torch.Tensor:
    """[batch, 1, h, w] strengths (before the slider) of each batch image, at the source image's size."""
    rows = [torch.from_numpy(np.ascontiguousarray(strengths_of(p, state, init_image_index(p, index)).values)) for index in range(source_image.shape[0])]
    mask = torch.stack(rows)[:, None].to(device=source_image.device, dtype=source_image.dtype)
    if mask.shape[-2:] != source_image.shape[-2:]:  # "latent upscale" encodes the init image at its own size
        mask = torch.nn.functional.interpolate(mask, size=source_image.shape[-2:], mode="bilinear", align_corners=False)
    return mask


# --- strengths ------------------------------------------------------------------------


def inpaint_mask(p: Any) -> np.ndarray | None:
    """The inpaint mask after the WebUI's own rounding, inversion and blur, at the init image's size."""
    if getattr(p, "image_mask", None) is None:
        return None
    mask = processing.create_binary_mask(p.image_mask, round=p.mask_round)
    if p.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    array = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    import cv2  # shipped with the WebUI; the same blur its img2img applies

    if p.mask_blur_x > 0:
        array = cv2.GaussianBlur(array, (2 * int(2.5 * p.mask_blur_x + 0.5) + 1, 1), p.mask_blur_x)
    if p.mask_blur_y > 0:
        array = cv2.GaussianBlur(array, (1, 2 * int(2.5 * p.mask_blur_y + 0.5) + 1), p.mask_blur_y)
    return np.clip(array, 0.0, 1.0)


def crop_region(p: Any) -> tuple[int, int, int, int] | None:
    """Inpaint "only masked": the box of the init image that is generated."""
    paste_to = getattr(p, "paste_to", None)
    if not getattr(p, "inpaint_full_res", False) or paste_to is None:
        return None
    x1, y1, width, height = paste_to
    return (x1, y1, x1 + width, y1 + height)


def init_image_index(p: Any, batch_index: int = 0) -> int:
    """The init image of a batch image (one init image serves them all)."""
    return batch_index if len(p.init_images) > 1 else 0


def strengths_of(p: Any, state: RunState, index: int, over_init_image: bool = False) -> MapValues:
    """Strengths of one init image's output, before the slider (cached per run).

    ``over_init_image``: in the init image's own frame (inpaint "only masked"
    composites its result back there) instead of the generated image's.
    """
    key = (index, over_init_image)
    if key not in state.strengths:
        init_image = p.init_images[index]
        if not state.inpaint_mask_ready:  # the host's blur once per run, not per image and frame
            state.inpaint_mask, state.inpaint_mask_ready = inpaint_mask(p), True
        tile = tile_box(init_image)
        if over_init_image:
            own = Geometry(init_image.size, init_image.width, init_image.height)
        else:
            own = Geometry(init_image.size, p.width, p.height, p.resize_mode, crop_region(p))
        # A tile of tiled upscaling takes its part of the map over the whole upscaled image;
        # its own inpaint mask (outpainting tiles) is its own.
        # A preprocessor's map is made from the tile itself.
        whole_image = tile is not None and not over_init_image and state.args.source != "preprocessor"
        geometry = Geometry(tile[1], p.width, p.height, 0, tile[0]) if whole_image else own
        mask = None if state.inpaint_mask is None else align_map(state.inpaint_mask, own)
        state.strengths[key] = pixel_strengths(
            state.args, geometry, user_map=state.image_maps.get(index, state.user_map), inpaint_mask=mask,
            fan_box=crop_region(p) if over_init_image else None, fan_over_init_image=tile is not None and not over_init_image,
        )  # fmt: skip
    return state.strengths[key]


# --- sampling ---------------------------------------------------------------------------


def model_noise_function(sampler: Any, model: Any) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``(x, noise, sigma) -> start latent`` as the host's k-diffusion img2img noises the original,
    where that is the model's own: Forge's predictor (``noise_scaling``: x + noise sigma, or the
    flow path), A1111's flow models (``add_noise_to_latent``); None: ``x + noise sigma``."""
    predictor = getattr(getattr(sampler, "model_wrap", None), "predictor", None)
    if callable(getattr(predictor, "noise_scaling", None)):
        return lambda x, noise, sigma: predictor.noise_scaling(sigma, noise, x, max_denoise=False)
    return getattr(model, "add_noise_to_latent", None)


def alphas_cumprod(model: Any) -> torch.Tensor:
    table = getattr(model, "alphas_cumprod", None)
    if table is None:  # Forge, Neo: the model's own is None; the predictor has the table
        table = model.forge_objects.unet.model.predictor.alphas_cumprod
    return table


def noise_levels(p: Any) -> SigmaLevels | TimestepLevels:
    """The sampler family's schedule and the host's img2img start rule (model noise function, extra noise)."""
    sampler, model = p.sampler, shared.sd_model
    extra_noise = float(getattr(shared.opts, "img2img_extra_noise", 0) or 0)
    if hasattr(sampler, "get_timesteps"):
        return TimestepLevels(lambda steps: sampler.get_timesteps(p, steps).cpu(), alphas_cumprod(model), alpha_start_rule(extra_noise))
    return SigmaLevels(lambda steps: sampler.get_sigmas(p, steps), sigma_start_rule(model_noise_function(sampler, model), extra_noise))


def sampler_function_name(sampler: Any) -> str:
    function = getattr(sampler, "funcname", None)
    return getattr(function, "__name__", function) or ""


def step_counting(p: Any, sampling_kwargs: dict) -> StepCounting:
    opts = shared.opts
    return StepCounting(
        fix_steps=bool(opts.img2img_fix_steps),
        skip_early_cfg=getattr(opts, "skip_early_cond", 0) > 0,
        uncond_every_other_call=getattr(p, "s_min_uncond", 0) > 0 and not getattr(opts, "s_min_uncond_all", False),
        refiner_switch_by_steps=getattr(p, "refiner_checkpoint_info", None) is not None
        and any(getattr(opts, name, False) for name in surfaces.refiner_by_steps_options(HOST)),
        sampler_needs_its_steps=sampler_function_name(p.sampler) in surfaces.UNIPC_FUNCTIONS,
        prompt_schedules=has_prompt_schedules([sampling_kwargs.get("c"), sampling_kwargs.get("uc")]),
    )


def install(state: RunState, sampler: Any) -> None:
    """Wrap this sampler's CFG denoiser: the instance only, so it dies with ``p``."""
    denoiser = sampler.model_wrap_cfg
    uninstall(state)
    original = denoiser.forward
    blended = state.engine.wrap(original)
    run_id = state.run_id

    def forward(x: torch.Tensor, sigma: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if _active_run != run_id:  # a stale wrapper from an aborted run: plain sampling
            return original(x, sigma, *args, **kwargs)
        # The strengths already hold the inpaint mask. The host's own use of it inside the call
        # (Forge-type denoisers re-noise the masked area with fresh noise every call; all blend
        # it back after) would fight the pinned pixels: set it aside for the call.
        mask, nmask = getattr(denoiser, "mask", None), getattr(denoiser, "nmask", None)
        if mask is None:
            return blended(x, sigma, *args, **kwargs)
        denoiser.mask = denoiser.nmask = None
        try:
            return blended(x, sigma, *args, **kwargs)
        finally:
            denoiser.mask, denoiser.nmask = mask, nmask

    denoiser.forward = forward
    state.wrapped_denoiser = (denoiser, forward, original)


def uninstall(state: RunState) -> None:
    if state.wrapped_denoiser is None:
        return
    denoiser, forward, original = state.wrapped_denoiser
    if denoiser.__dict__.get("forward") is forward:
        if getattr(original, "__self__", None) is denoiser and getattr(original, "__func__", None) is type(denoiser).forward:
            del denoiser.forward
        else:
            denoiser.forward = original
    state.wrapped_denoiser = None


@own_time
def before_sampling(p: Any, sampling_kwargs: dict) -> None:
    state = state_of(p)
    if state is None:
        return
    uninstall(state)
    init_latent, noise = sampling_kwargs["x"], sampling_kwargs["noise"]
    latent_hw = (init_latent.shape[2], init_latent.shape[3])
    rows = []
    for batch_index in range(init_latent.shape[0]):
        strengths = strengths_of(p, state, init_image_index(p, batch_index))
        rows.append(to_latent(strengths, latent_hw)[0])
    pixel_strengths_latent = torch.stack(rows).to(torch.float64) * state.slider
    run_strength = state.slider
    if can_skip_steps(step_counting(p, sampling_kwargs)):
        # Start where the first pixel is released: the steps before would pin every pixel.
        run_strength = skip_start_strength(pixel_strengths_latent, state.slider, int(p.steps), smooth=state.args.smooth)
        p.denoising_strength = run_strength  # what sample_img2img reads; restored in post_sample
    sampler_function = sampler_function_name(p.sampler)
    state.engine = DifferentialDiffusion(
        pixel_strengths=pixel_strengths_latent,
        init_latent=init_latent,
        noise=noise,
        levels=noise_levels(p),
        steps=int(p.steps),
        run_strength=run_strength,
        fix_steps=bool(shared.opts.img2img_fix_steps),
        boundary_call_ends_step=sampler_function in BOUNDARY_CALL_SAMPLERS,
        sampler_keeps_history=sampler_function not in SAMPLERS_WITHOUT_HISTORY,
        sampler_noises_inside_a_step=sampler_function in SAMPLERS_WITH_NOISE_INSIDE_A_STEP,
        sampler_mixes_states=sampler_function in SAMPLERS_MIXING_STATES,
        smooth=state.args.smooth,
        observer=CallLog() if TEST_HOOKS else None,
    )
    state.kept.clear()  # a new engine (the refiner's pass, say) may release other pixels
    if state.args.preserve and crop_region(p) is None:
        for index in sorted({init_image_index(p, batch_index) for batch_index in range(init_latent.shape[0])}):
            kept_of(p, state, index)  # now, while the strengths are still in the CPU's cache
    if TEST_HOOKS:  # the blend's own time in every model call
        state.engine.before_call, state.engine.after_call = own_time(state.engine.before_call), own_time(state.engine.after_call)
    if state.engine.active:
        install(state, p.sampler)
        if p.extra_generation_params.get(SOFT_INPAINTING_INFOTEXT_KEY):
            # Both want the in-sampling latent blend; the change map already holds the mask, so
            # ours is the only one (the mask is set aside inside our calls). Soft inpainting keeps
            # its final composite of the original over the result. Said in the infotext.
            p.extra_generation_params[WITH_SOFT_INPAINTING_INFOTEXT_KEY] = "final composite only"


@own_time
def on_mask_blend(p: Any, mba: Any) -> None:
    # The change map (already multiplied by the mask) decides what is kept;
    # the WebUI's own latent mask blend would pin partly masked pixels forever.
    state = state_of(p)
    if state is not None and state.engine is not None:
        mba.blended_latent = mba.current_latent


def post_sample(p: Any, ps: Any) -> None:
    state = end_sampling(p, ps)
    if TEST_HOOKS and state is not None:
        _record_run(p, state)  # outside the timed part: reporting is the test mode's work


@own_time
def end_sampling(p: Any, ps: Any) -> RunState | None:
    """post_sample's work: the run's model wrapper off, the slider back, the latents finalized."""
    state = state_of(p)
    if state is None or state.engine is None:
        return None
    uninstall(state)
    p.denoising_strength = state.slider
    ps.samples = state.engine.finalize(ps.samples)
    return state


# --- after sampling -------------------------------------------------------------------


def kept_pixels(state: RunState, strengths: MapValues) -> np.ndarray:
    """Pixels never released: strength 0, or too small for the sampler to take a step."""
    if state.engine is None:
        return strengths.values <= 0
    return state.engine.never_released_pixels(strengths, state.slider)


def kept_of(p: Any, state: RunState, index: int, over_init_image: bool = False) -> np.ndarray:
    """``kept_pixels`` of one init image's strengths, once per engine (a batch shares it)."""
    key = (index, over_init_image)
    if key not in state.kept:
        state.kept[key] = kept_pixels(state, strengths_of(p, state, index, over_init_image))
    return state.kept[key]


def init_image_in_output_frame(init_image: Image.Image, geometry: Geometry) -> Image.Image:
    """The init image as img2img places it in the output: flattened and resized like the host
    (the generation's preserve and the Preview both use it). Only to be read: it may be
    ``init_image`` itself."""
    if init_image.mode == "RGB" and init_image.size == (geometry.width, geometry.height):
        # Flattening an RGB image and resizing it to its own size (every mode, with or
        # without an upscaler) give its pixels unchanged: skip two copies.
        return init_image
    original = images.flatten(init_image, shared.opts.img2img_background_color)
    return images.resize_image(geometry.image_resize_mode, original, geometry.width, geometry.height)


def original_in_output_frame(p: Any, state: RunState, index: int) -> Image.Image:
    """The init image as img2img placed it in the output (cached per run)."""
    if index not in state.resized_originals:
        init_image = p.init_images[index]
        state.resized_originals[index] = init_image_in_output_frame(init_image, Geometry(init_image.size, p.width, p.height, p.resize_mode))
    return state.resized_originals[index]


@own_time
def postprocess_image(p: Any, pp: Any) -> None:
    state = state_of(p)
    if state is None or not state.args.preserve or crop_region(p) is not None:
        return  # "only masked" is preserved after the WebUI pastes the crop back
    index = init_image_index(p, getattr(p, "batch_index", 0))
    kept = kept_of(p, state, index)
    if kept.any():
        # pp.image is the image this hook chain hands on, made by the host from the samples and kept
        # by it only after the chain (every host): edited in place, no full-size copy (4-16 MB).
        pp.image = preserve(pp.image, original_in_output_frame(p, state, index), kept, in_place=True)


@own_time
def postprocess_image_after_composite(p: Any, pp: Any) -> None:
    # Inpaint "only masked" resamples the generated crop when pasting it back, so kept
    # pixels can only be the input's exactly here, over the whole init image.
    state = state_of(p)
    if state is None:
        return
    index = init_image_index(p, getattr(p, "batch_index", 0))
    if state.args.preserve and crop_region(p) is not None:
        kept = kept_of(p, state, index, over_init_image=True)
        if kept.any():
            # A copy here: Forge-based hosts keep this image (pixels_after_sampling) before the hook.
            pp.image = preserve(pp.image, images.flatten(p.init_images[index], shared.opts.img2img_background_color), kept)
    if state.args.source == "fan" and tile_box(p.init_images[index]) is None:
        # Of the finished image, as saved. Tiles of an upscale get none: the script reassembles
        # them from the returned images, and the whole result shows the fan's regions anyway.
        label_fan_copy(p, state, pp.image)


def label_fan_copy(p: Any, state: RunState, image: Image.Image) -> None:
    """Keep a labelled copy of this output (returned and saved after the run's images)."""
    args = state.args
    box = crop_region(p)
    if state.fan_labels is None:
        left, top, right, bottom = box if box is not None else (0, 0, image.width, image.height)
        font_size = fan_label_font_size(right - left, bottom - top, args.fan_count, args.fan_layout)
        state.fan_labels = (fan_denoising_strengths(args.fan_count, args.map_options(), state.slider), images.get_font(font_size))
    strengths, font = state.fan_labels
    labelled = label_fan(image, count=args.fan_count, layout=args.fan_layout, denoising_strengths=strengths, box=box, font=font)
    index = getattr(p, "batch_index", 0)
    info = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, None, getattr(p, "iteration", 0), index)
    if shared.opts.enable_pnginfo:
        labelled.info["parameters"] = info
    state.fan_copies.append(FanCopy(labelled, info, p.seeds[index], p.prompts[index]))


@own_time
def postprocess(p: Any, processed: Any) -> None:
    global _active_run
    state = state_of(p)
    if state is None:
        return
    uninstall(state)
    p.denoising_strength = state.slider
    _active_run = None
    if TEST_HOOKS:  # the last hook: every attribute of p the glue uses must exist by now
        _last_run_report["p_attributes_missing"] = [name for name in surfaces.P_ATTRIBUTES if not hasattr(p, name)]
    if state.fan_copies and processed.images:
        # After every image the host returns (and its grid, first): X/Y/Z and the
        # batch tab take theirs by position from the start.
        processed.images.extend(copy.image for copy in state.fan_copies)
        processed.infotexts.extend(copy.infotext for copy in state.fan_copies)
        if p.save_samples():  # after the run's images, so each copy numbers after its image
            for copy in state.fan_copies:
                images.save_image(copy.image, p.outpath_samples, "", copy.seed, copy.prompt, shared.opts.samples_format, info=copy.infotext, p=p, suffix="-dd-fan")
    # p, its sampler and the denoiser form a cycle: free the map and latents now, not at the next GC.
    p.__dict__.pop(STATE_ATTRIBUTE, None)


# --- global patches, undone on script unload ---------------------------------------------
#
# Both tag PIL images in ``info`` under a key that is random per process (an uploaded PNG's
# text chunks land in ``info`` too and must not pass for a tag) and stable across script
# reloads (this module is imported once).

SOURCE_PATH_INFO_KEY = f"differential_diffusion_source_path_{uuid.uuid4().hex}"
TILE_INFO_KEY = f"differential_diffusion_tile_{uuid.uuid4().hex}"
_ORIGINAL = "_differential_diffusion_original"


def _process_batch_with_paths(process_batch: Callable) -> Callable:
    """The img2img batch tab reads its files itself: tag each input with its path, for map folders."""

    def process_batch_with_paths(p: Any, batch_input: Any, *args: Any, **kwargs: Any) -> Any:
        read = images.read

        def read_and_tag(fp: Any, *read_args: Any, **read_kwargs: Any) -> Any:
            image = read(fp, *read_args, **read_kwargs)
            if is_batch_input(fp, batch_input):
                image.info[SOURCE_PATH_INFO_KEY] = os.fspath(fp)
            return image

        images.read = read_and_tag
        try:
            return process_batch(p, batch_input, *args, **kwargs)
        finally:
            images.read = read

    return process_batch_with_paths


def _split_grid_with_tile_boxes(split_grid: Callable) -> Callable:
    """Tiled upscaling (the SD upscale script) runs img2img on tiles of the upscaled image: tag
    each tile with its place, so it gets the part of the map under it."""

    def split_grid_with_tile_boxes(image: Any, *args: Any, **kwargs: Any) -> Any:
        grid = split_grid(image, *args, **kwargs)
        for y, _height, row in grid.tiles:
            for x, _width, tile in row:
                tile.info[TILE_INFO_KEY] = (x, y, grid.image_w, grid.image_h)
        return grid

    return split_grid_with_tile_boxes


def _global_patches() -> list[tuple[Any, str, Callable[[Callable], Callable]]]:
    patches: list[tuple[Any, str, Callable[[Callable], Callable]]] = [(images, "split_grid", _split_grid_with_tile_boxes)]
    try:
        from modules import img2img as host_img2img
    except ImportError:
        host_img2img = None
    if host_img2img is not None and hasattr(images, "read"):
        patches.append((host_img2img, "process_batch", _process_batch_with_paths))
    return patches


def install_global_patches() -> None:
    for module, name, make in _global_patches():
        current = getattr(module, name)
        if getattr(current, _ORIGINAL, None) is None:  # not installed yet (this module outlives script reloads)
            patched = make(current)
            setattr(patched, _ORIGINAL, current)
            setattr(module, name, patched)


def remove_global_patches() -> None:
    for module, name, _ in _global_patches():
        original = getattr(getattr(module, name), _ORIGINAL, None)
        if original is not None:
            setattr(module, name, original)


def tile_box(image: Any) -> tuple[tuple[int, int, int, int], tuple[int, int]] | None:
    """(box in the upscaled image, its size) of a tile of tiled upscaling; None for other images."""
    tag = getattr(image, "info", {}).get(TILE_INFO_KEY)
    if tag is None:
        return None
    x, y, full_w, full_h = tag
    if x < 0 or y < 0 or x + image.width > full_w or y + image.height > full_h:
        return None  # an image smaller than one tile: the tile is the (padded) whole image
    return (x, y, x + image.width, y + image.height), (full_w, full_h)


# --- settings, X/Y/Z axes, routes --------------------------------------------------------


def panel_default(name: str) -> Any:
    setting = SETTINGS_BY_NAME[name]
    return getattr(shared.opts, f"{ELEM_PREFIX}_default_{name}", setting.default) if name in PANEL_DEFAULT_NAMES else setting.default


def add_settings(gradio: Any) -> None:
    section = (ELEM_PREFIX, EXTENSION_NAME)
    for name in PANEL_DEFAULT_NAMES:
        setting = SETTINGS_BY_NAME[name]
        if isinstance(setting.default, bool):
            info = shared.OptionInfo(setting.default, f"Default: {setting.label}", gradio.Checkbox, section=section)
        else:
            info = shared.OptionInfo(setting.default, f"Default: {setting.label}", gradio.Slider, {"minimum": setting.minimum, "maximum": setting.maximum, "step": setting.step}, section=section)
        shared.opts.add_option(f"{ELEM_PREFIX}_default_{name}", info)


def xyz_module() -> Any:
    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "xyz_grid") and hasattr(data, "module"):
            return data.module
    return None


def _xyz_override(name: str) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, _values: Any) -> None:
        # A new dict per cell: X/Y/Z shallow-copies p, so a shared dict would leak between cells.
        override = {name: axis_value(name, value)}
        if name == "preprocessor":
            override["source"] = "preprocessor"  # sweeping preprocessors means the map comes from one
        setattr(p, OVERRIDES_ATTRIBUTE, {**getattr(p, OVERRIDES_ATTRIBUTE, {}), **override})

    return apply


def _xyz_confirm_preprocessors(_p: Any, values: list) -> None:
    for value in values:
        try:
            preprocessors.check_name(axis_value("preprocessor", value))
        except DifferentialDiffusionError as error:
            raise ValueError(str(error)) from None


def _xyz_confirm(name: str) -> Callable[[Any, list], None]:
    def confirm(_p: Any, values: list) -> None:
        for value in values:
            axis_value(name, value, check_range=True)  # raises ValueError naming the setting

    return confirm


def add_xyz_axes() -> None:
    """The extension's X/Y/Z axes, once; a changed or missing X/Y/Z plot never stops the extension."""
    try:
        xyz = xyz_module()
        if xyz is None:
            logger.debug("%s: X/Y/Z plot not loaded (yet); no axes added", EXTENSION_NAME)
            return
        labels = [axis_label(name) for name in XYZ_AXES]
        if any(getattr(option, "label", None) in labels for option in xyz.axis_options):
            return  # already registered (UI reload)
        axis_class = getattr(xyz, "AxisOptionImg2Img", None)
        if axis_class is None:  # Forge Classic keeps the X/Y/Z classes in its library
            import importlib

            axis_class = importlib.import_module("lib_xyz.classes").AxisOptionImg2Img
        choices = lambda: ["True", "False"]  # noqa: E731
        for name, label in zip(XYZ_AXES, labels):
            if name == "preprocessor":
                xyz.axis_options.append(axis_class(label, str, _xyz_override(name), choices=preprocessors.names, confirm=_xyz_confirm_preprocessors))
            elif isinstance(SETTINGS_BY_NAME[name].default, bool):
                xyz.axis_options.append(axis_class(label, str, _xyz_override(name), choices=choices))
            else:
                xyz.axis_options.append(axis_class(label, float, _xyz_override(name), confirm=_xyz_confirm(name)))
    except Exception:  # noqa: BLE001 - the host's X/Y/Z is not ours to break on
        logger.warning("%s: could not add X/Y/Z plot axes", EXTENSION_NAME, exc_info=True)


def remember_elements(elem_id: Any, elem_classes: Any) -> None:
    if TEST_HOOKS:
        names = [elem_id, *(elem_classes if isinstance(elem_classes, (list, tuple)) else [elem_classes])]
        _seen_elem_ids.update(name for name in names if isinstance(name, str))


def callback_name(registrar: Callable) -> dict[str, str]:
    """``name=`` for a script_callbacks registration, where the host takes one (Classic's do not)."""
    import inspect

    return {"name": ELEM_PREFIX} if "name" in inspect.signature(registrar).parameters else {}


def _record_run(p: Any, state: RunState) -> None:
    # The map is encoded now: holding it until the route is read would keep up to 256 MB alive.
    _last_run_report.clear()
    _last_run_report.update(
        sampler=p.sampler_name,
        release=state.engine.release.cpu().tolist(),
        release_weight=state.engine.release_weight.cpu().tolist(),
        calls=list(state.engine.observer or ()),
        active=state.engine.active,
        map_source=state.args.source,
        received_map=None if state.user_map is None else _png16_base64(state.user_map.values),
        image_maps=[_png16_base64(state.image_maps[index].values) for index in sorted(state.image_maps)],
        preprocessor_parameters=[_preprocessor_parameters.get(index) for index in sorted(state.image_maps)],
        model_mask=_model_mask_channel(p),
    )


def _model_mask_channel(p: Any) -> list | None:
    """The mask an inpainting model receives (the image conditioning's first channel), if it takes one."""
    conditioning = getattr(p, "image_conditioning", None)
    if not getattr(p, "is_using_inpainting_conditioning", False) or not isinstance(conditioning, torch.Tensor):
        return None
    return conditioning[:, 0].float().cpu().tolist()


def _last_run() -> dict[str, Any]:
    if not _last_run_report:
        return {}
    return dict(_last_run_report, own_seconds=dict(_own_seconds))


def _png16_base64(array: np.ndarray) -> str:
    import base64

    buffer = io.BytesIO()
    Image.fromarray(np.rint(array * 65535).astype(np.uint16)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _test_report_surfaces() -> dict[str, Any]:
    return {
        "static_problems": surfaces.check_static(xyz_module=xyz_module(), host=HOST),
        "elem_ids_missing": [name for name in surfaces.elem_ids(HOST) if name not in _seen_elem_ids] if _seen_elem_ids else None,
        "host": HOST,
        "surfaces": len(surfaces.SURFACES),
    }


def _callback_counts() -> dict[str, int]:
    """Registered WebUI callbacks per category (all extensions'): generations must never add any."""
    return {category: len(callbacks) for category, callbacks in getattr(script_callbacks, "callback_map", {}).items()}


def add_routes(_demo: Any, app: Any) -> None:
    for route in app.routes:
        if getattr(route, "path", None) in GUARDED_API_PATHS and not isinstance(getattr(route, "app", None), ArgsShapeGuard):
            route.app = ArgsShapeGuard(route.app)
    routes = {"/differential-diffusion/v1/schema": lambda: schema(preprocessors.names())}
    if TEST_HOOKS:
        routes["/differential-diffusion/v1/test/last-run"] = _last_run
        routes["/differential-diffusion/v1/test/callbacks"] = _callback_counts
        routes["/differential-diffusion/v1/test/surfaces"] = _test_report_surfaces
    present = {getattr(route, "path", None) for route in app.routes}
    for path, endpoint in routes.items():
        if path not in present:
            app.add_api_route(path, endpoint, methods=["GET"], summary=f"{EXTENSION_NAME}: {path.rsplit('/', 1)[-1]}")
    restart_path = "/differential-diffusion/v1/test/reload-ui"
    if TEST_HOOKS and restart_path not in present:
        # What Settings -> "Reload UI" does: scripts unload and load again in this process.
        app.add_api_route(restart_path, lambda: shared.state.request_restart(), methods=["POST"], summary=f"{EXTENSION_NAME}: reload-ui")
