"""Differential Diffusion for the AUTOMATIC1111 WebUI: a per-pixel change map for img2img.

Thin glue between the WebUI and ``lib_differential_diffusion`` (which holds the
algorithm and imports nothing from the WebUI). One file on purpose: the WebUI
runs every file in ``scripts/``.
"""

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageOps

from lib_differential_diffusion.args import (
    ELEM_PREFIX,
    MAP_HASH_INFOTEXT_KEY,
    POSITIONAL_ORDER,
    SETTINGS,
    SETTINGS_BY_NAME,
    DifferentialDiffusionArgs,
    schema,
    values_from_infotext,
)
from lib_differential_diffusion.blend import DifferentialDiffusion
from lib_differential_diffusion.errors import EXTENSION_NAME, DifferentialDiffusionError
from lib_differential_diffusion.fan import FAN_LAYOUTS, MAX_FAN_COUNT, fan_denoising_strengths, fan_label_font_size, fan_map, label_fan
from lib_differential_diffusion.maps import align_map, apply_options, decode_map, gaussian_blur, to_latent
from lib_differential_diffusion.preview import preview_image
from lib_differential_diffusion.schedule import NEVER, SigmaLevels, TimestepLevels, skip_start_strength
from modules import images, processing, script_callbacks, scripts, shared
from modules.ui_components import InputAccordion

logger = logging.getLogger(__name__)

STATE_ATTRIBUTE = "differential_diffusion_state"
OVERRIDES_ATTRIBUTE = "differential_diffusion_overrides"  # set by X/Y/Z axes, per cell
# Samplers whose step ends with a model call at the next step's level.
BOUNDARY_CALL_SAMPLERS = {"sample_heun", "restart_sampler"}
# img2img inputs the preview reads, by elem_id, in the preview function's order.
PREVIEW_INPUTS = ("img2img_image", "img2img_width", "img2img_height", "img2img_steps", "img2img_denoising_strength", "resize_mode")
# Width, in output pixels, of the ramp from kept to generated pixels around
# zero-strength regions when unchanged pixels are preserved.
PRESERVE_FEATHER = 4.0

# Set by the project's real-host tests: serves what the last run's engine did.
TEST_HOOKS = os.environ.get("SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST") == "1"
_last_run_report: dict[str, Any] = {}

INFOTEXT_KEYS = frozenset([*(setting.infotext_key for setting in SETTINGS if setting.infotext_key), MAP_HASH_INFOTEXT_KEY])

# The one generation allowed to blend; set at the start of every run, so a
# wrapper left behind by a failed run can never act on a later one.
_active_run: str | None = None


class ArgumentsRefused(DifferentialDiffusionError):
    """Raised from the generation itself: script hooks' exceptions are only logged.

    ``status_code`` makes the WebUI's API answer 422 with this message (its
    exception handler reads the instance's attributes).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.status_code = 422


@dataclass
class FanCopy:
    """A fan output's labelled copy, with what saving it needs (p's seeds move on per batch)."""

    image: Image.Image
    infotext: str
    seed: int
    prompt: str


@dataclass
class RunState:
    """What one generation (one ``p``) needs between hooks."""

    run_id: str
    slider: float  # the denoising strength asked for (p's is lowered while sampling when steps are skipped)
    args: DifferentialDiffusionArgs
    map_array: np.ndarray | None  # decoded map (source "map"), at its own size
    map_hash: str | None
    pixel_strengths: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict)  # per init image: aligned map x mask, before the slider
    engine: DifferentialDiffusion | None = None
    wrapped_denoiser: Any = None
    inpaint_mask: Any = None  # the processed mask (None: no mask), once computed; see _pixel_strengths
    inpaint_mask_ready: bool = False
    fan_copies: list[FanCopy] = field(default_factory=list)  # source "fan": one per output image
    fan_labels: tuple[list[float], Any] | None = None  # the fan's strengths and font, the same for every image of the run


# --- hooking the sampler --------------------------------------------------------


def _install(state: RunState, sampler: Any) -> None:
    """Wrap this sampler's CFG denoiser: the instance only, so it dies with ``p``."""
    denoiser = sampler.model_wrap_cfg
    _uninstall(state)
    original = denoiser.forward
    blended = state.engine.wrap(original)
    run_id = state.run_id

    def forward(x: torch.Tensor, sigma: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if _active_run != run_id:  # a stale wrapper from an aborted run: plain sampling
            return original(x, sigma, *args, **kwargs)
        return blended(x, sigma, *args, **kwargs)

    denoiser.forward = forward
    state.wrapped_denoiser = (denoiser, forward, original)


def _uninstall(state: RunState) -> None:
    if state.wrapped_denoiser is None:
        return
    denoiser, forward, original = state.wrapped_denoiser
    if denoiser.__dict__.get("forward") is forward:
        if getattr(original, "__self__", None) is denoiser and getattr(original, "__func__", None) is type(denoiser).forward:
            del denoiser.forward
        else:
            denoiser.forward = original
    state.wrapped_denoiser = None


def _levels(p: Any) -> SigmaLevels | TimestepLevels:
    sampler = p.sampler
    if hasattr(sampler, "get_timesteps"):
        return TimestepLevels(lambda steps: sampler.get_timesteps(p, steps).cpu())
    return SigmaLevels(lambda steps: sampler.get_sigmas(p, steps))


def _has_prompt_schedules(conditioning: Any) -> bool:
    """Prompt editing ([a:b:step]) switches by step index, which skipping would shift.

    ``c`` is a MulticondLearnedConditioning (per image: composable prompts, each
    with its schedules); ``uc`` a list per image of scheduled conditionings.
    """
    for entries in getattr(conditioning, "batch", conditioning) or ():
        if not isinstance(entries, (list, tuple)):
            continue
        if any(len(getattr(entry, "schedules", ())) > 1 for entry in entries):
            return True
        if len(entries) > 1 and not any(hasattr(entry, "schedules") for entry in entries):
            return True
    return False


def _can_skip_steps(p: Any, sampling_kwargs: dict) -> bool:
    """Skip the all-pinned first steps unless something counts steps from the run's start."""
    opts = shared.opts
    if opts.img2img_fix_steps or getattr(opts, "skip_early_cond", 0) > 0:
        return False
    if getattr(p, "s_min_uncond", 0) > 0 and not getattr(opts, "s_min_uncond_all", False):
        return False  # negative guidance minimum sigma acts on every other model call
    if getattr(p, "refiner_checkpoint_info", None) is not None and getattr(opts, "refiner_switch_by_sample_steps", False):
        return False
    if _sampler_function_name(p.sampler) == "unipc":
        return False  # UniPC fails with fewer steps than its order
    return not (_has_prompt_schedules(sampling_kwargs.get("c")) or _has_prompt_schedules(sampling_kwargs.get("uc")))


def _sampler_function_name(sampler: Any) -> str:
    function = getattr(sampler, "funcname", None)
    return getattr(function, "__name__", function) or ""


# --- maps -------------------------------------------------------------------------


def _inpaint_mask(p: Any) -> np.ndarray | None:
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


def _crop_region(p: Any) -> tuple[int, int, int, int] | None:
    paste_to = getattr(p, "paste_to", None)
    if not getattr(p, "inpaint_full_res", False) or paste_to is None:
        return None
    x1, y1, width, height = paste_to
    return (x1, y1, x1 + width, y1 + height)


def _pixel_strengths(p: Any, state: RunState, image_index: int, full_size: bool = False) -> np.ndarray:
    """Aligned map (options applied) times the aligned inpaint mask, for one init image.

    ``full_size``: over the init image itself (inpaint "only masked" composites
    its result back there) instead of the image being generated.
    """
    key = (image_index, full_size)
    if key not in state.pixel_strengths:
        init_image = p.init_images[image_index if len(p.init_images) > 1 else 0]
        if full_size:
            geometry = dict(init_size=init_image.size, width=init_image.width, height=init_image.height, resize_mode=0)
        else:
            geometry = dict(init_size=init_image.size, width=p.width, height=p.height, resize_mode=p.resize_mode, crop_region=_crop_region(p))
        if not state.inpaint_mask_ready:  # the host's blur once per run, not per image and geometry
            state.inpaint_mask, state.inpaint_mask_ready = _inpaint_mask(p), True
        mask_aligned = None if state.inpaint_mask is None else align_map(state.inpaint_mask, **geometry)
        if state.args.source == "inpaint mask":
            source = mask_aligned
            mask_aligned = None
        elif state.args.source == "fan":
            source = _fan_over(init_image.size if full_size else (p.width, p.height), state.args, _crop_region(p) if full_size else None)
        else:
            source = align_map(state.map_array, **geometry)
        strengths = apply_options(source, state.args.map_options())
        if mask_aligned is not None:
            strengths = strengths * mask_aligned
        state.pixel_strengths[key] = strengths.astype(np.float32)
    return state.pixel_strengths[key]


def _fan_over(size: tuple[int, int], args: DifferentialDiffusionArgs, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The fan in the output's frame: the whole image, or the "only masked" crop box inside it."""
    if box is None:
        return fan_map(size[0], size[1], args.fan_count, args.fan_layout)
    canvas = np.zeros((size[1], size[0]), dtype=np.float32)
    left, top, right, bottom = box
    canvas[top:bottom, left:right] = fan_map(right - left, bottom - top, args.fan_count, args.fan_layout)
    return canvas


def _label_fan(p: Any, state: RunState, image: Image.Image) -> None:
    """Keep a labelled copy of this output (returned and saved after the run's images)."""
    args = state.args
    box = _crop_region(p)
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


def _save_fan_copies(p: Any, copies: list[FanCopy]) -> None:
    """Saved once the run's images are, so each copy numbers after its image, like the host's masks."""
    if not p.save_samples():
        return
    for copy in copies:
        images.save_image(copy.image, p.outpath_samples, "", copy.seed, copy.prompt, shared.opts.samples_format, info=copy.infotext, p=p, suffix="-dd-fan")


def _init_image_index(p: Any) -> int:
    """The init image of the batch image being post-processed (one init image serves them all)."""
    return getattr(p, "batch_index", 0) if len(p.init_images) > 1 else 0


def _kept_pixels(state: RunState, strengths: np.ndarray) -> np.ndarray:
    """Pixels never released: strength 0, or too small for the sampler to take a step."""
    if state.engine is None:
        return strengths <= 0
    release = state.engine.release_steps(torch.from_numpy(strengths).to(torch.float64) * state.slider)
    return (release == NEVER).numpy()


def _map_hash(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:10]


def _is_empty_image(value: Any) -> bool:
    return value is None or isinstance(value, (str, bytes)) and not value


def _unwrap_image(value: Any) -> Any:
    """Gradio image editors hand over dicts; the map is their image."""
    if isinstance(value, dict):
        return value.get("image")
    return value


# --- the img2img batch tab: one map per input file ------------------------------------

# Random per process: an uploaded PNG's text chunks land in ``info`` too, and must not pass for a tag.
SOURCE_PATH_INFO_KEY = f"differential_diffusion_source_path_{uuid.uuid4().hex}"
MAP_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


def _is_batch_input(path: Any, batch_input: Any) -> bool:
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = os.path.abspath(os.fspath(path))
    if isinstance(batch_input, (str, os.PathLike)):  # the input folder (walked recursively)
        return path.startswith(os.path.join(os.path.abspath(os.fspath(batch_input)), ""))
    return path in {os.path.abspath(getattr(item, "name", "")) for item in batch_input or ()}  # uploaded files


def _remember_source_paths() -> None:
    """While the batch tab runs, tag the input images it reads with their path.

    ``info`` survives the batch tab's EXIF transpose; ``before_process``
    removes the tag again, so it never reaches a saved file.
    """
    try:
        from modules import img2img as host_img2img
    except ImportError:
        logger.warning("%s: no img2img batch module; map folders are unavailable", EXTENSION_NAME)
        return
    if getattr(host_img2img.process_batch, "_differential_diffusion", False):
        return
    process_batch = host_img2img.process_batch

    def process_batch_with_paths(p: Any, batch_input: Any, *args: Any, **kwargs: Any) -> Any:
        read = images.read

        def read_and_tag(fp: Any, *read_args: Any, **read_kwargs: Any) -> Any:
            image = read(fp, *read_args, **read_kwargs)
            if _is_batch_input(fp, batch_input):
                image.info[SOURCE_PATH_INFO_KEY] = os.fspath(fp)
            return image

        images.read = read_and_tag
        try:
            return process_batch(p, batch_input, *args, **kwargs)
        finally:
            images.read = read

    process_batch_with_paths._differential_diffusion = True  # type: ignore[attr-defined]
    host_img2img.process_batch = process_batch_with_paths


def _map_for_batch_image(source_paths: list, folder: str, fallback: Any) -> Any:
    """The map in ``folder`` named like this batch image (any image extension), like the
    inpaint batch mask folder; the uploaded map when the folder has none for it."""
    if not folder:
        return fallback
    if not os.path.isdir(folder):
        raise DifferentialDiffusionError("map_folder", f"not a folder: {folder}")
    source = next((path for path in source_paths if path), None)
    if source is None:
        if not _is_empty_image(fallback):
            return fallback
        raise DifferentialDiffusionError("map_folder", "maps from a folder need the img2img batch tab (the input image has no file name)")
    stem = os.path.splitext(os.path.basename(source))[0]
    candidates = sorted(name for name in os.listdir(folder) if os.path.splitext(name)[0] == stem and name.lower().endswith(MAP_EXTENSIONS))
    if not candidates:
        if not _is_empty_image(fallback):
            return fallback
        raise DifferentialDiffusionError("map_folder", f"no map named {stem}.* in {folder}")
    with open(os.path.join(folder, candidates[0]), "rb") as file:
        return file.read()


# --- arguments and errors ----------------------------------------------------------


def _refuse(p: Any, error: DifferentialDiffusionError) -> None:
    """Make this generation fail with the message, from code no hook wrapper catches."""
    refusal = ArgumentsRefused(error.field, error.message)
    logger.error("%s", refusal)

    def refuse(*_: Any, **__: Any) -> None:
        raise refusal

    p.init = refuse


def _parse(p: Any, script_args: tuple) -> DifferentialDiffusionArgs:
    args = DifferentialDiffusionArgs.from_script_args(script_args)
    overrides = getattr(p, OVERRIDES_ATTRIBUTE, None)
    if overrides:
        args = args.with_overrides(**overrides)
    return args


def _state(p: Any) -> RunState | None:
    state = getattr(p, STATE_ATTRIBUTE, None)
    return state if isinstance(state, RunState) and state.run_id == _active_run else None


# --- the script ----------------------------------------------------------------------


class Script(scripts.Script):
    def __init__(self) -> None:
        super().__init__()
        self.host_components: dict[str, Any] = {}

    def title(self) -> str:
        return EXTENSION_NAME

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible if is_img2img else False

    def after_component(self, component: Any, **kwargs: Any) -> None:
        # img2img inputs the preview needs (created before this script's UI).
        elem_id = kwargs.get("elem_id")
        if elem_id in PREVIEW_INPUTS:
            self.host_components[elem_id] = component

    def ui(self, is_img2img: bool) -> list:
        if not is_img2img:
            return []
        defaults = {setting.name: _option_default(setting.name) for setting in SETTINGS}
        with InputAccordion(False, label=EXTENSION_NAME, elem_id=f"{ELEM_PREFIX}_enabled") as enabled:
            gr.Markdown(
                "Each pixel changes like img2img at **map value × denoising strength**: "
                "white changes fully, black keeps the input. Pixels wait on the re-noised "
                "input until their strength is due.",
                elem_classes=[f"{ELEM_PREFIX}-hint"],
            )
            change_map = gr.Image(label=SETTINGS_BY_NAME["map"].label, type="pil", image_mode="RGBA", source="upload", elem_id=f"{ELEM_PREFIX}_map")
            with gr.Row():
                source = gr.Radio(label=SETTINGS_BY_NAME["source"].label, choices=list(SETTINGS_BY_NAME["source"].choices), value="map", elem_id=SETTINGS_BY_NAME["source"].elem_id)
                invert = gr.Checkbox(label=SETTINGS_BY_NAME["invert"].label, value=defaults["invert"], elem_id=SETTINGS_BY_NAME["invert"].elem_id)
                preserve = gr.Checkbox(label=SETTINGS_BY_NAME["preserve"].label, value=defaults["preserve"], elem_id=SETTINGS_BY_NAME["preserve"].elem_id)
            with gr.Row():
                sliders = {
                    name: gr.Slider(
                        label=SETTINGS_BY_NAME[name].label,
                        minimum=SETTINGS_BY_NAME[name].minimum,
                        maximum=SETTINGS_BY_NAME[name].maximum,
                        step=SETTINGS_BY_NAME[name].step,
                        value=defaults[name],
                        elem_id=SETTINGS_BY_NAME[name].elem_id,
                    )
                    for name in ("gamma", "blur", "low", "high")
                }
            with gr.Group(visible=False, elem_id=f"{ELEM_PREFIX}_fan_group") as fan_group:
                gr.Markdown(
                    "**Strength fan**: the map is drawn for you, in regions from strength at black (region #1) "
                    "to strength at white (the last). The results come with a labelled copy: pick the region "
                    "you like and apply its strength.",
                    elem_classes=[f"{ELEM_PREFIX}-hint"],
                )
                with gr.Row():
                    fan_count = gr.Slider(
                        label=SETTINGS_BY_NAME["fan_count"].label,
                        minimum=SETTINGS_BY_NAME["fan_count"].minimum,
                        maximum=SETTINGS_BY_NAME["fan_count"].maximum,
                        step=1,
                        value=SETTINGS_BY_NAME["fan_count"].default,
                        elem_id=SETTINGS_BY_NAME["fan_count"].elem_id,
                    )
                    fan_layout = gr.Radio(label=SETTINGS_BY_NAME["fan_layout"].label, choices=list(FAN_LAYOUTS), value=SETTINGS_BY_NAME["fan_layout"].default, elem_id=SETTINGS_BY_NAME["fan_layout"].elem_id)
                with gr.Row():
                    fan_region = gr.Slider(label="Region to apply (#)", minimum=1, maximum=MAX_FAN_COUNT, step=1, value=1, elem_id=f"{ELEM_PREFIX}_fan_region")
                    fan_apply = gr.Button("Apply region's strength", elem_id=f"{ELEM_PREFIX}_fan_apply")
                fan_note = gr.HTML(elem_id=f"{ELEM_PREFIX}_fan_note")
            map_folder = gr.Textbox(label=SETTINGS_BY_NAME["map_folder"].label, value="", placeholder="optional: a folder of maps named like the batch's input images", elem_id=SETTINGS_BY_NAME["map_folder"].elem_id)
            preview_button = gr.Button("Preview", elem_id=f"{ELEM_PREFIX}_preview_button")
            preview_error = gr.HTML(elem_id=f"{ELEM_PREFIX}_preview_error")
            # Full width: the strip is about 8 tiles wide.
            preview = gr.Image(label="Preview: map over the image, strengths, then released regions step by step", interactive=False, height=200, elem_id=f"{ELEM_PREFIX}_preview")

        components = {
            "enabled": enabled, "map": change_map, "source": source, "invert": invert, "preserve": preserve,
            "map_folder": map_folder, "fan_count": fan_count, "fan_layout": fan_layout, **sliders,
        }  # fmt: skip
        ordered = [components[name] for name in POSITIONAL_ORDER]
        self._wire_preview(preview_button, ordered, preview, preview_error)
        source.change(fn=lambda value: gr.update(visible=value == "fan"), inputs=[source], outputs=[fan_group], show_progress=False)
        self._wire_fan_apply(fan_apply, fan_region, components, fan_note)

        self.infotext_fields = [(enabled, lambda params: values_from_infotext(params)["enabled"])]
        for setting in SETTINGS:
            if setting.infotext_key is not None and setting.name != "enabled":
                self.infotext_fields.append((components[setting.name], _infotext_reader(setting.name)))
        self.paste_field_names = [setting.infotext_key for setting in SETTINGS if setting.infotext_key]
        return ordered

    def _wire_preview(self, button: Any, ordered: list, preview: Any, preview_error: Any) -> None:
        host = [self.host_components.get(name) for name in PREVIEW_INPUTS]
        if any(component is None for component in host):
            button.visible = False  # the host's layout changed: no preview rather than a broken one
            return

        def run_preview(*values: Any) -> tuple[Any, str]:
            init_image, width, height, steps, strength, resize_mode = values[: len(host)]
            try:
                args = DifferentialDiffusionArgs.from_ui(*(True, *values[len(host) :]))  # preview as if enabled
                if args.source == "inpaint mask":
                    raise DifferentialDiffusionError("source", "the preview shows uploaded maps and fans only")
                init_image = _unwrap_image(init_image)
                init_size = init_image.size if init_image is not None else (int(width), int(height))
                geometry = dict(init_size=init_size, width=int(width), height=int(height), resize_mode=int(resize_mode or 0))
                if args.source == "fan":
                    aligned = _fan_over((int(width), int(height)), args, None)
                else:
                    aligned = align_map(decode_map(_unwrap_image(args.map)), **geometry)
                strengths = apply_options(aligned, args.map_options())
                base = None
                if init_image is not None:
                    mode = geometry["resize_mode"] if geometry["resize_mode"] != 3 else 0
                    base = images.resize_image(mode, images.flatten(init_image, shared.opts.img2img_background_color), int(width), int(height))
                return preview_image(strengths, steps=int(steps), strength=float(strength), fix_steps=bool(shared.opts.img2img_fix_steps), init_image=base), ""
            except DifferentialDiffusionError as error:
                return None, f"<div class='error'>{error}</div>"

        button.click(fn=run_preview, inputs=[*host, *ordered[1:]], outputs=[preview, preview_error], show_progress=False)

    def _wire_fan_apply(self, button: Any, region: Any, components: dict, note: Any) -> None:
        """One click: the img2img denoising strength becomes the region's, and the panel turns off
        (a uniform change everywhere is plain img2img, bit for bit)."""
        denoising = self.host_components.get("img2img_denoising_strength")
        if denoising is None:
            button.visible = False
            return
        names = ("fan_count", "fan_layout", "invert", "gamma", "low", "high")

        def apply(region_number: Any, slider: Any, *values: Any) -> tuple[Any, Any, str]:
            try:
                args = DifferentialDiffusionArgs(**dict(zip(names, values)))
                strengths = fan_denoising_strengths(args.fan_count, args.map_options(), float(slider))
                if not isinstance(region_number, (int, float)) or not 1 <= region_number <= args.fan_count or region_number != int(region_number):
                    raise DifferentialDiffusionError("fan region", f"must be a whole number from 1 to {args.fan_count} (the fan has {args.fan_count} regions), got {region_number!r}")
            except DifferentialDiffusionError as error:
                return gr.update(), gr.update(), f"<div class='error'>{error}</div>"
            strength = strengths[int(region_number) - 1]
            message = f"Denoising strength set to {strength:.2f} (region #{int(region_number)} of {args.fan_count}); {EXTENSION_NAME} turned off."
            return gr.update(value=strength), gr.update(value=False), f"<div>{message}</div>"

        button.click(
            fn=apply,
            inputs=[region, denoising, *(components[name] for name in names)],
            outputs=[denoising, components["enabled"], note],
            show_progress=False,
        )

    # --- generation hooks ---

    def before_process(self, p: Any, *script_args: Any) -> None:
        global _active_run
        _active_run = None  # reset at every start, whatever the last run left
        p.__dict__.pop(STATE_ATTRIBUTE, None)
        source_paths = [image.info.pop(SOURCE_PATH_INFO_KEY, None) for image in p.init_images or () if hasattr(image, "info")]
        # A fresh dict without our keys: X/Y/Z cells share the one they were copied from.
        p.extra_generation_params = {key: value for key, value in p.extra_generation_params.items() if key not in INFOTEXT_KEYS}
        try:
            args = _parse(p, script_args)
            if not args.enabled:
                return
            if args.map_folder and getattr(p, "is_api", False):
                raise DifferentialDiffusionError("map_folder", "is for the img2img batch tab only; the API cannot read folders on the server")
            map_array = None
            if args.source == "map":
                map_array = decode_map(_map_for_batch_image(source_paths, args.map_folder, _unwrap_image(args.map)))
            elif args.source == "inpaint mask" and getattr(p, "image_mask", None) is None:
                raise DifferentialDiffusionError("source", "'inpaint mask' needs an inpaint mask (use an inpaint tab, or upload a map)")
        except DifferentialDiffusionError as error:
            _refuse(p, error)
            return
        state = RunState(run_id=uuid.uuid4().hex, slider=float(p.denoising_strength), args=args, map_array=map_array, map_hash=None if map_array is None else _map_hash(map_array))
        setattr(p, STATE_ATTRIBUTE, state)
        _active_run = state.run_id
        p.extra_generation_params.update(args.infotext(state.map_hash))

    def process(self, p: Any, *script_args: Any) -> None:
        state = _state(p)
        if state is not None and getattr(p, "image_mask", None) is not None:
            p.mask_round = False  # strengths are map x soft mask: keep the WebUI's mask soft too

    def process_before_every_sampling(self, p: Any, *script_args: Any, **kwargs: Any) -> None:
        state = _state(p)
        if state is None:
            return
        _uninstall(state)
        init_latent, noise = kwargs["x"], kwargs["noise"]
        batch = init_latent.shape[0]
        latent_hw = (init_latent.shape[2], init_latent.shape[3])
        rows = [to_latent(_pixel_strengths(p, state, index), latent_hw)[0] for index in range(batch)]
        pixel_strengths = torch.stack(rows).to(torch.float64) * state.slider
        run_strength = state.slider
        if _can_skip_steps(p, kwargs):
            # Start where the first pixel is released: the steps before would pin every pixel.
            run_strength = skip_start_strength(pixel_strengths, state.slider, int(p.steps))
            p.denoising_strength = run_strength  # what sample_img2img reads; restored in post_sample
        state.engine = DifferentialDiffusion(
            pixel_strengths=pixel_strengths,
            init_latent=init_latent,
            noise=noise,
            levels=_levels(p),
            steps=int(p.steps),
            run_strength=run_strength,
            fix_steps=bool(shared.opts.img2img_fix_steps),
            boundary_call_ends_step=_sampler_function_name(p.sampler) in BOUNDARY_CALL_SAMPLERS,
            alphas_cumprod=getattr(shared.sd_model, "alphas_cumprod", None),
        )
        if state.engine.active:
            _install(state, p.sampler)

    def on_mask_blend(self, p: Any, mba: Any, *script_args: Any) -> None:
        # The change map (already multiplied by the mask) decides what is kept;
        # the WebUI's own latent mask blend would pin partly masked pixels forever.
        state = _state(p)
        if state is not None and state.engine is not None:
            mba.blended_latent = mba.current_latent

    def post_sample(self, p: Any, ps: Any, *script_args: Any) -> None:
        state = _state(p)
        if state is None or state.engine is None:
            return
        _uninstall(state)
        p.denoising_strength = state.slider
        ps.samples = state.engine.finalize(ps.samples)
        if TEST_HOOKS:
            _last_run_report.clear()
            _last_run_report.update(
                sampler=p.sampler_name,
                release=state.engine.release.cpu().tolist(),
                calls=[list(call) for call in state.engine.calls],
                active=state.engine.active,
            )

    def postprocess_image(self, p: Any, pp: Any, *script_args: Any) -> None:
        state = _state(p)
        if state is None or not state.args.preserve or _crop_region(p) is not None:
            return  # "only masked" is preserved after the WebUI pastes the crop back
        index = _init_image_index(p)
        kept = _kept_pixels(state, _pixel_strengths(p, state, index))
        if bool(kept.any()):
            original = images.flatten(p.init_images[index], shared.opts.img2img_background_color)
            original = images.resize_image(p.resize_mode if p.resize_mode != 3 else 0, original, p.width, p.height)
            pp.image = _preserve(pp.image, original, kept)

    def postprocess_image_after_composite(self, p: Any, pp: Any, *script_args: Any) -> None:
        # Inpaint "only masked" resamples the generated crop when pasting it back, so kept
        # pixels can only be the input's exactly here, over the whole init image.
        state = _state(p)
        if state is None:
            return
        if state.args.preserve and _crop_region(p) is not None:
            index = _init_image_index(p)
            kept = _kept_pixels(state, _pixel_strengths(p, state, index, full_size=True))
            if bool(kept.any()):
                pp.image = _preserve(pp.image, images.flatten(p.init_images[index], shared.opts.img2img_background_color), kept)
        if state.args.source == "fan":
            _label_fan(p, state, pp.image)  # of the finished image, as saved

    def postprocess(self, p: Any, processed: Any, *script_args: Any) -> None:
        global _active_run
        state = _state(p)
        if state is not None:
            _uninstall(state)
            p.denoising_strength = state.slider
            _active_run = None
            if state.fan_copies and processed.images:
                # After every image the host returns (and its grid, first): X/Y/Z and the
                # batch tab take theirs by position from the start.
                processed.images.extend(copy.image for copy in state.fan_copies)
                processed.infotexts.extend(copy.infotext for copy in state.fan_copies)
                _save_fan_copies(p, state.fan_copies)
            # p, its sampler and the denoiser form a cycle: free the map and latents now, not at the next GC.
            p.__dict__.pop(STATE_ATTRIBUTE, None)


def _preserve(generated: Image.Image, original: Image.Image, kept: np.ndarray) -> Image.Image:
    """Original pixels where ``kept``, with a short ramp into the generated ones (no seam)."""
    if generated.size != original.size or kept.shape != (generated.height, generated.width):
        return generated
    kept = kept.astype(np.float32)
    near_kept = gaussian_blur(kept, PRESERVE_FEATHER)
    weight = np.where(kept > 0, 0.0, np.clip(1.0 - 2.0 * near_kept, 0.0, 1.0))[..., None]
    mixed = np.asarray(original.convert("RGB"), dtype=np.float32) * (1.0 - weight) + np.asarray(generated.convert("RGB"), dtype=np.float32) * weight
    # Where the weight is 0 this is the original exactly: no rounding can touch it.
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))


def _option_default(name: str) -> Any:
    setting = SETTINGS_BY_NAME[name]
    return getattr(shared.opts, f"{ELEM_PREFIX}_default_{name}", setting.default) if name in OPTION_NAMES else setting.default


def _infotext_reader(name: str) -> Callable[[dict], Any]:
    def read(params: dict) -> Any:
        return values_from_infotext(params).get(name)

    return read


# --- settings, X/Y/Z axes, API route ------------------------------------------------

OPTION_NAMES = ("invert", "gamma", "blur", "low", "high", "preserve")


def _on_ui_settings() -> None:
    section = (ELEM_PREFIX, EXTENSION_NAME)
    for name in OPTION_NAMES:
        setting = SETTINGS_BY_NAME[name]
        if isinstance(setting.default, bool):
            info = shared.OptionInfo(setting.default, f"Default: {setting.label}", gr.Checkbox, section=section)
        else:
            info = shared.OptionInfo(setting.default, f"Default: {setting.label}", gr.Slider, {"minimum": setting.minimum, "maximum": setting.maximum, "step": setting.step}, section=section)
        shared.opts.add_option(f"{ELEM_PREFIX}_default_{name}", info)


def _xyz_module() -> Any:
    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "xyz_grid") and hasattr(data, "module"):
            return data.module
    return None


def _override(name: str, convert: Callable[[Any], Any]) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, _values: Any) -> None:
        # A new dict per cell: X/Y/Z shallow-copies p, so a shared dict would leak between cells.
        setattr(p, OVERRIDES_ATTRIBUTE, {**getattr(p, OVERRIDES_ATTRIBUTE, {}), name: convert(value)})

    return apply


def _confirm_range(name: str) -> Callable[[Any, list], None]:
    """Refuse out-of-range axis values before the grid starts (a failing cell would just be blank)."""
    setting = SETTINGS_BY_NAME[name]

    def confirm(_p: Any, values: list) -> None:
        for value in values:
            if not setting.minimum <= float(value) <= setting.maximum:
                raise ValueError(f"{EXTENSION_NAME}: {name}: must be between {setting.minimum:g} and {setting.maximum:g}, got {value}")

    return confirm


def _boolean_axis_value(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"{EXTENSION_NAME}: expected True or False, got {value!r}")
    return text == "true"


def _on_before_ui() -> None:
    xyz = _xyz_module()
    if xyz is None:
        logger.debug("%s: X/Y/Z plot not loaded (yet); no axes added", EXTENSION_NAME)
        return
    prefix = f"[{EXTENSION_NAME}]"
    if any(getattr(option, "label", "").startswith(prefix) for option in xyz.axis_options):
        return  # already registered (UI reload)
    choices = lambda: ["True", "False"]  # noqa: E731
    xyz.axis_options.extend(
        [
            xyz.AxisOptionImg2Img(f"{prefix} Enabled", str, _override("enabled", _boolean_axis_value), choices=choices),
            xyz.AxisOptionImg2Img(f"{prefix} Invert", str, _override("invert", _boolean_axis_value), choices=choices),
            *(
                xyz.AxisOptionImg2Img(f"{prefix} {name.capitalize()}", float, _override(name, float), confirm=_confirm_range(name))
                for name in ("gamma", "blur", "low", "high")
            ),
        ]
    )


# Requests whose "Differential Diffusion" entry the WebUI would answer or drop before the
# script runs: a 500 for "args" that is not a list, silence for a missing "args" or a
# non-dict entry, extra positional values cut off.
GUARDED_API_PATHS = ("/sdapi/v1/img2img", "/sdapi/v1/txt2img")


def _request_shape_error(body: bytes) -> DifferentialDiffusionError | None:
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        return None  # not JSON: the WebUI answers that itself
    entries = payload.get("alwayson_scripts") if isinstance(payload, dict) else None
    if not isinstance(entries, dict):
        return None
    for name, entry in entries.items():
        if str(name).lower() != EXTENSION_NAME.lower():
            continue
        if not isinstance(entry, dict) or "args" not in entry:
            return DifferentialDiffusionError("args", 'expected {"args": [{...}]} under "Differential Diffusion"')
        if not isinstance(entry["args"], list):
            return DifferentialDiffusionError("args", f"must be a list, got {type(entry['args']).__name__}")
        if len(entry["args"]) > len(POSITIONAL_ORDER):
            return DifferentialDiffusionError("args", f"expected at most {len(POSITIONAL_ORDER)} values ({', '.join(POSITIONAL_ORDER)}), got {len(entry['args'])}")
    return None


class _ArgsShapeGuard:
    """ASGI wrapper of one API route: refuses a malformed entry with 422, else replays the body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message.get("type") != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        error = _request_shape_error(body)
        if error is not None:
            # The WebUI's own error body (api.py handle_exception), so clients parse it alike.
            content = json.dumps({"error": "ArgumentsRefused", "detail": str(error), "body": "", "errors": str(error)}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
            await send({"type": "http.response.start", "status": 422, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _callback_counts() -> dict[str, int]:
    """Registered WebUI callbacks per category (all extensions'): the real-host tests check
    that generations never add any."""
    return {category: len(callbacks) for category, callbacks in getattr(script_callbacks, "callback_map", {}).items()}


def _on_app_started(_demo: Any, app: Any) -> None:
    for route in app.routes:
        if getattr(route, "path", None) in GUARDED_API_PATHS and not isinstance(getattr(route, "app", None), _ArgsShapeGuard):
            route.app = _ArgsShapeGuard(route.app)
    routes = {"/differential-diffusion/v1/schema": schema}
    if TEST_HOOKS:
        routes["/differential-diffusion/v1/test/last-run"] = lambda: dict(_last_run_report)
        routes["/differential-diffusion/v1/test/callbacks"] = _callback_counts
    present = {getattr(route, "path", None) for route in app.routes}
    for path, endpoint in routes.items():
        if path not in present:
            app.add_api_route(path, endpoint, methods=["GET"], summary=f"{EXTENSION_NAME}: {path.rsplit('/', 1)[-1]}")


_remember_source_paths()
# X/Y/Z (a root script, loaded before extensions) reads its axes when its UI is
# built: with --nowebui that happens before on_before_ui, so register now too.
_on_before_ui()
script_callbacks.on_ui_settings(_on_ui_settings, name=ELEM_PREFIX)
script_callbacks.on_before_ui(_on_before_ui, name=ELEM_PREFIX)
script_callbacks.on_app_started(_on_app_started, name=ELEM_PREFIX)
