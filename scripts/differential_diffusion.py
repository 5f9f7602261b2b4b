"""Differential Diffusion for the AUTOMATIC1111 WebUI family: a per-pixel change map for img2img.

The WebUI runs every file in ``scripts/``; this one only declares the script
and hands each hook to ``differential_diffusion_webui`` (the host glue), which
calls ``lib_differential_diffusion`` (the algorithm, no host imports).
"""

from typing import Any

import gradio as gr

from differential_diffusion_webui import adapter, panel
from lib_differential_diffusion.errors import EXTENSION_NAME
from modules import script_callbacks, scripts


class Script(scripts.Script):
    def __init__(self) -> None:
        super().__init__()
        self.host_components: dict[str, Any] = {}

    def title(self) -> str:
        return EXTENSION_NAME

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible if is_img2img else False

    def after_component(self, component: Any, **kwargs: Any) -> None:
        adapter.remember_elements(kwargs.get("elem_id"), kwargs.get("elem_classes"))
        panel.remember_host_input(self.host_components, component, kwargs)

    def ui(self, is_img2img: bool) -> list:
        if not is_img2img:
            return []
        controls, self.infotext_fields, self.paste_field_names = panel.build(self.host_components)
        return controls

    def before_process(self, p: Any, *args: Any) -> None:
        adapter.before_process(p, args)

    def process(self, p: Any, *args: Any) -> None:
        adapter.process(p)

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        adapter.before_sampling(p, kwargs)

    def on_mask_blend(self, p: Any, mba: Any, *args: Any) -> None:
        adapter.on_mask_blend(p, mba)

    def post_sample(self, p: Any, ps: Any, *args: Any) -> None:
        adapter.post_sample(p, ps)

    def postprocess_image(self, p: Any, pp: Any, *args: Any) -> None:
        adapter.postprocess_image(p, pp)

    def postprocess_image_after_composite(self, p: Any, pp: Any, *args: Any) -> None:
        adapter.postprocess_image_after_composite(p, pp)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        adapter.postprocess(p, processed)


# At every script load. A full reload clears the host's callbacks and undoes our patch
# (on_script_unloaded); "reload script bodies" re-runs this file alone, so drop ours first.
script_callbacks.remove_current_script_callbacks()
adapter.install_global_patches()
# X/Y/Z (a root script, loaded before extensions) reads its axes when its UI is
# built: with --nowebui that happens before on_before_ui, so register now too.
adapter.add_xyz_axes()
script_callbacks.on_ui_settings(lambda: adapter.add_settings(gr), **adapter.callback_name(script_callbacks.on_ui_settings))
script_callbacks.on_before_ui(adapter.add_xyz_axes, **adapter.callback_name(script_callbacks.on_before_ui))
script_callbacks.on_app_started(adapter.add_routes, **adapter.callback_name(script_callbacks.on_app_started))
script_callbacks.on_script_unloaded(adapter.remove_global_patches, **adapter.callback_name(script_callbacks.on_script_unloaded))
