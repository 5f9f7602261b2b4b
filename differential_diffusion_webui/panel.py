"""The img2img panel: controls from the settings table, the Preview, the fan's apply button."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from lib_differential_diffusion.args import (
    ELEM_PREFIX,
    POSITIONAL_ORDER,
    SETTINGS,
    SETTINGS_BY_NAME,
    DifferentialDiffusionArgs,
    missing_map_note,
    unwrap_image,
    values_from_infotext,
)
from lib_differential_diffusion.errors import EXTENSION_NAME, DifferentialDiffusionError
from lib_differential_diffusion.fan import fan_denoising_strengths
from lib_differential_diffusion.maps import Geometry, decode_map
from lib_differential_diffusion.preview import preview_image
from lib_differential_diffusion.strengths import pixel_strengths
from modules import shared
from modules.ui_components import InputAccordion

from . import preprocessors
from .adapter import init_image_in_output_frame, panel_default

# img2img inputs the Preview reads, by elem_id, in the preview function's order.
PREVIEW_INPUTS = ("img2img_image", "img2img_width", "img2img_height", "img2img_steps", "img2img_denoising_strength", "resize_mode")
# On ForgeCanvas hosts "img2img_image" is the canvas's HTML; the image is the hidden component of
# this class created right after it.
CANVAS_IMAGE_CLASS = "logical_image_background"


def remember_host_input(host_components: dict[str, Any], component: Any, kwargs: dict) -> None:
    """Keep the img2img inputs the Preview reads (built before this panel)."""
    elem_id = kwargs.get("elem_id")
    if elem_id in PREVIEW_INPUTS:
        host_components[elem_id] = component
        return
    classes = kwargs.get("elem_classes") or ()
    classes = [classes] if isinstance(classes, str) else classes
    if CANVAS_IMAGE_CLASS in classes and "img2img_image" in host_components and "canvas_image" not in host_components:
        host_components["canvas_image"] = component


def _init_image(value: Any) -> Image.Image | None:
    """The init image as the Preview gets it: a PIL image, a gradio editor dict, a numpy array
    (ForgeCanvas) or a data URL; None when there is none (an HTML block's string, say)."""
    value = unwrap_image(value)
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray) and value.ndim in (2, 3):
        return Image.fromarray(value.astype(np.uint8))
    if isinstance(value, str) and value.startswith("data:image/"):
        try:
            return Image.open(io.BytesIO(base64.b64decode(value.partition(",")[2])))
        except (ValueError, OSError):
            return None
    return None
FAN_APPLY_INPUTS = ("fan_count", "fan_layout", "invert", "gamma", "low", "high")


def _setting_kwargs(name: str, defaults: dict) -> dict:
    setting = SETTINGS_BY_NAME[name]
    return {"label": setting.label, "value": defaults[name], "elem_id": setting.elem_id}


def hover_hints() -> dict[str, str]:
    """elem id -> help text, for the page's hover hints (the settings table's ``info``)."""
    hints = {setting.elem_id: setting.info for setting in SETTINGS if setting.info}
    hints[f"{ELEM_PREFIX}_fan_region"] = "The region number written on the labelled copy of a fan result."
    hints[f"{ELEM_PREFIX}_fan_apply"] = (
        "A fan result comes with a labelled copy: pick the region you like, and this sets the denoising strength to its "
        "strength and turns the panel off (a uniform change is plain img2img)."
    )
    return hints


def _slider(name: str, defaults: dict) -> Any:
    setting = SETTINGS_BY_NAME[name]
    return gr.Slider(minimum=setting.minimum, maximum=setting.maximum, step=setting.step, **_setting_kwargs(name, defaults))


def _error_html(error: DifferentialDiffusionError) -> str:
    return f"<div class='error'>{error}</div>"


def build(host_components: dict[str, Any]) -> tuple[list, list, list]:
    """The panel's components in ``POSITIONAL_ORDER``, and the infotext fields and keys it pastes."""
    defaults = {setting.name: panel_default(setting.name) for setting in SETTINGS}
    with InputAccordion(False, label=EXTENSION_NAME, elem_id=f"{ELEM_PREFIX}_enabled") as enabled:
        gr.Markdown(
            "Each pixel changes like img2img at **map value × denoising strength**: white changes fully, black keeps the input.",
            elem_classes=[f"{ELEM_PREFIX}-hint"],
        )
        # Long help goes into hover hints (javascript/differential_diffusion_hints.js sets them).
        gr.HTML(f"<div data-hints='{html.escape(json.dumps(hover_hints()), quote=True)}'></div>", elem_id=f"{ELEM_PREFIX}_hints", elem_classes=[f"{ELEM_PREFIX}-hidden"])
        paste_note = gr.HTML(elem_id=f"{ELEM_PREFIX}_paste_note")
        source = gr.Radio(choices=list(SETTINGS_BY_NAME["source"].choices), **_setting_kwargs("source", defaults))
        # Each source's own controls, shown with it only.
        with gr.Group(visible=defaults["source"] == "map", elem_id=f"{ELEM_PREFIX}_map_group") as map_group:
            change_map = gr.Image(label=SETTINGS_BY_NAME["map"].label, type="pil", image_mode="RGBA", source="upload", height=240, elem_id=SETTINGS_BY_NAME["map"].elem_id)
            map_folder = gr.Textbox(placeholder="optional: a folder of maps named like the batch's input images", **_setting_kwargs("map_folder", defaults))
        with gr.Group(visible=defaults["source"] == "draw", elem_id=f"{ELEM_PREFIX}_draw_group") as draw_group:
            gr.HTML(elem_id=f"{ELEM_PREFIX}_draw_editor")  # the drawing editor (javascript/) mounts here
        # Rendered but hidden by style.css: gradio 4 leaves invisible components out of the page,
        # and the editor's script writes the drawing into this textarea.
        drawn_map = gr.Textbox(elem_id=SETTINGS_BY_NAME["drawn_map"].elem_id, elem_classes=[f"{ELEM_PREFIX}-hidden"], show_label=False)
        with gr.Group(visible=defaults["source"] == "fan", elem_id=f"{ELEM_PREFIX}_fan_group") as fan_group:
            with gr.Row():
                fan_count = _slider("fan_count", defaults)
                fan_layout = gr.Radio(choices=list(SETTINGS_BY_NAME["fan_layout"].choices), **_setting_kwargs("fan_layout", defaults))
            with gr.Row():
                fan_region = gr.Slider(label="Region to apply (#)", minimum=1, maximum=defaults["fan_count"], step=1, value=1, elem_id=f"{ELEM_PREFIX}_fan_region")
                fan_apply = gr.Button("Apply region's strength", elem_id=f"{ELEM_PREFIX}_fan_apply")
            fan_note = gr.HTML(elem_id=f"{ELEM_PREFIX}_fan_note")
        with gr.Group(visible=defaults["source"] == "preprocessor", elem_id=f"{ELEM_PREFIX}_preprocessor_group") as preprocessor_group:
            with gr.Row():
                # Names pasted from another WebUI's infotext stay (the run then says this one lacks it).
                names = preprocessors.names()
                preprocessor = gr.Dropdown(choices=names, allow_custom_value=True, **_setting_kwargs("preprocessor", defaults))
                depth = background_preprocessor(names)
                background = gr.Button(
                    "Change the background (depth, inverted)", visible=depth is not None, elem_id=f"{ELEM_PREFIX}_change_background",
                )  # fmt: skip
        with gr.Row():
            invert = gr.Checkbox(**_setting_kwargs("invert", defaults))
            low, high = _slider("low", defaults), _slider("high", defaults)
        with gr.Accordion("More map options", open=False, elem_id=f"{ELEM_PREFIX}_more"):
            with gr.Row():
                gamma, blur = _slider("gamma", defaults), _slider("blur", defaults)
            with gr.Row():
                preserve = gr.Checkbox(**_setting_kwargs("preserve", defaults))
                smooth = gr.Checkbox(**_setting_kwargs("smooth", defaults))
                model_mask = gr.Checkbox(**_setting_kwargs("model_mask", defaults))
        sliders = {"gamma": gamma, "blur": blur, "low": low, "high": high}
        with gr.Row():
            preview_button = gr.Button("Preview", elem_id=f"{ELEM_PREFIX}_preview_button")
        preview_error = gr.HTML(elem_id=f"{ELEM_PREFIX}_preview_error")
        # Full width: the strip is about 8 tiles wide. Shown once there is one.
        preview = gr.Image(label="Preview: map over the image, strengths, then released regions step by step", interactive=False, height=200, visible=False, elem_id=f"{ELEM_PREFIX}_preview")

    components = {
        "enabled": enabled, "map": change_map, "source": source, "invert": invert, "preserve": preserve, "smooth": smooth, "model_mask": model_mask, "map_folder": map_folder,
        "fan_count": fan_count, "fan_layout": fan_layout, "drawn_map": drawn_map, "preprocessor": preprocessor, **sliders,
    }  # fmt: skip
    ordered = [components[name] for name in POSITIONAL_ORDER]
    _wire_preview(host_components, preview_button, ordered, preview, preview_error)
    _wire_fan_apply(host_components, fan_apply, fan_region, components, fan_note)
    source.change(
        fn=lambda value: tuple(gr.update(visible=value == shown) for shown in ("map", "fan", "draw", "preprocessor")),
        inputs=[source], outputs=[map_group, fan_group, draw_group, preprocessor_group], show_progress=False,
    )  # fmt: skip
    # One click for the commonest wish: depth is bright near, so inverted it changes the far things.
    background.click(
        fn=lambda: (True, "preprocessor", depth, True),
        inputs=[], outputs=[enabled, source, preprocessor, invert], show_progress=False,
    )  # fmt: skip
    fan_count.change(fn=lambda count: gr.update(maximum=int(count)), inputs=[fan_count], outputs=[fan_region], show_progress=False)
    # An uploaded map means "use it": switch the panel on and clear a paste note.
    change_map.upload(fn=lambda: (gr.update(value=True), ""), inputs=[], outputs=[enabled, paste_note], show_progress=False)

    infotext_fields = [(enabled, lambda params: values_from_infotext(params)["enabled"]), (paste_note, missing_map_note)]
    for setting in SETTINGS:
        if setting.infotext_key is not None and setting.name != "enabled":
            infotext_fields.append((components[setting.name], _infotext_reader(setting.name)))
    paste_field_names = [setting.infotext_key for setting in SETTINGS if setting.infotext_key]
    return ordered, infotext_fields, paste_field_names


# Preferred depth preprocessors for "change the background", best first (names of ControlNet and Forge).
DEPTH_PREFERENCE = ("depth_anything_v2", "depth_anything", "depth_midas", "depth_zoe", "depth_leres")


def background_preprocessor(names: list[str]) -> str | None:
    """The depth preprocessor the one-click background change uses (None: this host has none)."""
    for preferred in DEPTH_PREFERENCE:
        for name in names:
            if name.lower().startswith(preferred):
                return name
    return next((name for name in names if "depth" in name.lower()), None)


def _infotext_reader(name: str) -> Any:
    def read(params: dict) -> Any:
        return values_from_infotext(params).get(name)

    return read


def _ensure_temp_dir() -> None:
    """gradio saves the Preview image into the host's temp_dir; Neo's default (<data dir>/tmp) is not
    created until the option changes, so a fresh install's Preview would fail on the missing folder."""
    temp_dir = getattr(shared.opts, "temp_dir", "")
    if temp_dir:
        os.makedirs(temp_dir, exist_ok=True)


def _wire_preview(host_components: dict, button: Any, ordered: list, preview: Any, preview_error: Any) -> None:
    host = [host_components.get(name) for name in PREVIEW_INPUTS]
    if host_components.get("canvas_image") is not None:
        host[0] = host_components["canvas_image"]
    if any(component is None for component in host):
        button.visible = False  # the host's layout changed: no preview rather than a broken one
        return

    def run_preview(*values: Any) -> tuple[Any, str]:
        init_image, width, height, steps, strength, resize_mode = values[: len(host)]
        try:
            args = DifferentialDiffusionArgs.from_ui(*(True, *values[len(host) :]))  # preview as if enabled
            if args.source == "inpaint mask":
                raise DifferentialDiffusionError("source", "the preview shows uploaded or drawn maps, fans and preprocessor maps only")
            init_image = _init_image(init_image)
            init_size = init_image.size if init_image is not None else (int(width), int(height))
            geometry = Geometry(init_size, int(width), int(height), int(resize_mode or 0))
            if args.source == "preprocessor":
                if init_image is None:
                    raise DifferentialDiffusionError("preprocessor", "the preview of a preprocessor's map needs an init image")
                user_map = decode_map(preprocessors.make_map(args.preprocessor, init_image)[0])
            else:
                user_map = None if args.source == "fan" else decode_map(args.user_map())
            strengths = pixel_strengths(args, geometry, user_map=user_map).values
            base = None if init_image is None else init_image_in_output_frame(init_image, geometry)
            _ensure_temp_dir()
            strip = preview_image(
                strengths, steps=int(steps), strength=float(strength), fix_steps=bool(shared.opts.img2img_fix_steps), smooth=args.smooth, init_image=base
            )  # fmt: skip
            return gr.update(value=strip, visible=True), ""
        except DifferentialDiffusionError as error:
            return gr.update(value=None, visible=False), _error_html(error)

    button.click(fn=run_preview, inputs=[*host, *ordered[1:]], outputs=[preview, preview_error], show_progress=False)


def _wire_fan_apply(host_components: dict, button: Any, region: Any, components: dict, note: Any) -> None:
    """One click: the img2img denoising strength becomes the region's, and the panel turns off
    (a uniform change everywhere is plain img2img, bit for bit)."""
    denoising = host_components.get("img2img_denoising_strength")
    if denoising is None:
        button.visible = False
        return

    def apply(region_number: Any, slider: Any, *values: Any) -> tuple[Any, Any, str]:
        try:
            args = DifferentialDiffusionArgs(**dict(zip(FAN_APPLY_INPUTS, values)))
            strengths = fan_denoising_strengths(args.fan_count, args.map_options(), float(slider))
            if not isinstance(region_number, (int, float)) or not 1 <= region_number <= args.fan_count or region_number != int(region_number):
                raise DifferentialDiffusionError("fan region", f"must be a whole number from 1 to {args.fan_count} (the fan has {args.fan_count} regions), got {region_number!r}")
        except DifferentialDiffusionError as error:
            return gr.update(), gr.update(), _error_html(error)
        strength = strengths[int(region_number) - 1]
        message = f"Denoising strength set to {strength:.2f} (region #{int(region_number)} of {args.fan_count}); {EXTENSION_NAME} turned off."
        return gr.update(value=strength), gr.update(value=False), f"<div>{message}</div>"

    button.click(
        fn=apply,
        inputs=[region, denoising, *(components[name] for name in FAN_APPLY_INPUTS)],
        outputs=[denoising, components["enabled"], note],
        show_progress=False,
    )
