"""``modules/scripts.py`` of A1111 v1.10.1, reduced to what the extension and the test driver use.

``Script`` keeps the host's hook names and signatures (defaults do nothing);
``ScriptRunner`` keeps the host's dispatch: every hook gets
``p.script_args[args_from:args_to]`` and an exception in a hook is only
reported (``errors.report``), never raised, as in the host.
"""

from __future__ import annotations

from collections import namedtuple

from modules import errors

AlwaysVisible = object()


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent

        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        pass

    def post_sample(self, p, ps: PostSampleArgs, *args):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo, *args):
        pass

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def describe(self):
        return ""

    def elem_id(self, item_id):
        return item_id


scripts_data = []
postprocessing_scripts_data = []
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


class ScriptRunner:
    """The host's per-tab runner: alwayson scripts only, hooks dispatched as in v1.10.1."""

    def __init__(self, scripts=(), selectable=()):
        self.alwayson_scripts = list(scripts)
        self.selectable_scripts = list(selectable)  # the Script dropdown; p.script_args[0] is its 1-based index

    def _each(self, hook, p, *args, **kwargs):
        for script in self.alwayson_scripts:
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                getattr(script, hook)(p, *args, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def on_mask_blend(self, p, mba: MaskBlendArgs):
        self._each("on_mask_blend", p, mba)

    def post_sample(self, p, ps: PostSampleArgs):
        self._each("post_sample", p, ps)

    def postprocess_image(self, p, pp: PostprocessImageArgs):
        self._each("postprocess_image", p, pp)

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs):
        self._each("postprocess_image_after_composite", p, pp)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)
