"""``modules/shared.py`` / ``modules/options.py`` of A1111 v1.10.1, reduced.

``opts`` behaves like the host's ``Options``: attribute reads give the saved
value, else the registered default; ``add_option`` registers a setting and
stores its default. ``sd_model`` carries the SD 1.x ``alphas_cumprod`` the
timestep samplers read; ``state`` the interrupt flags the CFG denoiser checks.
"""

from __future__ import annotations

import torch


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None, refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False, category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self


options_builtin_fields = {"data_labels", "data", "restricted_opts", "typemap"}


class Options:
    typemap = {int: float}

    def __init__(self, data_labels, restricted_opts=()):
        self.data_labels = data_labels
        self.data = {k: v.default for k, v in self.data_labels.items() if not v.do_not_save}
        self.restricted_opts = restricted_opts

    def __setattr__(self, key, value):
        if key in options_builtin_fields:
            return super().__setattr__(key, value)
        if self.data is not None and (key in self.data or key in self.data_labels):
            if self.data_labels[key].do_not_save:
                return
            self.data[key] = value
            return
        return super().__setattr__(key, value)

    def __getattr__(self, item):
        if item in options_builtin_fields:
            return super().__getattribute__(item)
        if self.data is not None and item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        return super().__getattribute__(item)

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default


# The host settings the extension (and the driver) read, with v1.10.1's defaults.
opts = Options(
    {
        "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies."),
        "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts of the input image with this color."),
        "upscaler_for_img2img": OptionInfo(None, "Upscaler for img2img"),
        "img2img_extra_noise": OptionInfo(0.0, "Extra noise multiplier for img2img and hires fix"),
        "samples_save": OptionInfo(True, "Always save all generated images"),
        "samples_format": OptionInfo("png", "File format for images"),
        "enable_pnginfo": OptionInfo(True, "Write infotext to metadata of the generated image"),
        "skip_early_cond": OptionInfo(0.0, "Ignore negative prompt during early sampling"),
        "s_min_uncond_all": OptionInfo(False, "Negative Guidance minimum sigma all steps"),
        "refiner_switch_by_sample_steps": OptionInfo(False, "Switch to refiner by sampling steps instead of model timesteps"),
    }
)

# SD 1.x noise schedule ("scaled linear" betas), as LatentDiffusion registers it.
_ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0).float()


class _SdModel:
    is_sdxl = False
    cond_stage_key = "crossattn"
    alphas_cumprod = _ALPHAS_CUMPROD


sd_model = _SdModel()
sd_upscalers: list = []


class State:
    interrupted = False
    skipped = False
    stopping_generation = False

    def interrupt(self):
        self.interrupted = True

    def begin(self):
        self.interrupted = self.skipped = self.stopping_generation = False

    def request_restart(self):
        self.interrupt()
        self.server_command = "restart"


state = State()
