"""The WebUI glue (``scripts/differential_diffusion.py``) on a stand-in host.

No WebUI runs in CI: ``tests/standin`` holds the few ``modules`` of A1111
v1.10.1 the script touches and a ``gradio`` stand-in; ``fake_img2img`` rebuilds
img2img's hook order and samplers around the real k-diffusion sampler
functions. The script is loaded the way A1111 loads it (file spec, extension
root first on ``sys.path``) and every generation goes through
``process_images`` with the hooks dispatched like the host's ``ScriptRunner``
(hook exceptions are only reported, never raised).
"""

from __future__ import annotations

import base64
import copy
import functools
import importlib.util
import inspect
import io
import json
import os
import re
import sys
import time
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lib_differential_diffusion.api_guard import ArgsShapeGuard
from lib_differential_diffusion.args import DifferentialDiffusionArgs
from lib_differential_diffusion.fan import fan_denoising_strengths, fan_map
from lib_differential_diffusion.maps import to_latent
from lib_differential_diffusion.schedule import NEVER
from lib_differential_diffusion.args import API_KEYS, FAN_SETTING_NAMES, MAP_HASH_INFOTEXT_KEY, POSITIONAL_ORDER, SETTINGS, SETTINGS_BY_NAME
from lib_differential_diffusion.args import missing_map_note, values_from_infotext
from lib_differential_diffusion.maps import Geometry, decode_map

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "standin"
SCRIPT_PATH = ROOT / "scripts" / "differential_diffusion.py"
STANDIN_TOP_LEVEL = {"modules", "gradio", "fake_img2img", "differential_diffusion_webui"}  # the glue imports the stand-in
SIZE = 64
# A map run's (the model mask's key only where the model takes an inpainting mask).
# The keys of a run with an uploaded map (fan options, the model mask and the preprocessor are written for their cases only).
DD_INFOTEXT_KEYS = {s.infotext_key for s in SETTINGS if s.infotext_key and s.name not in (*FAN_SETTING_NAMES, "model_mask", "preprocessor")} | {MAP_HASH_INFOTEXT_KEY}


# --- loading the script on the stand-in host -----------------------------------------


@dataclass
class Host:
    module: types.ModuleType  # the loaded script file
    adapter: types.ModuleType  # differential_diffusion_webui.adapter, as the script imported it
    panel: types.ModuleType
    script: Any  # its Script instance, set up like the host's ScriptRunner does
    controls: list  # what ui(True) returned
    host_inputs: dict  # img2img components the script picked up in after_component
    scripts: types.ModuleType
    shared: types.ModuleType
    script_callbacks: types.ModuleType
    errors: types.ModuleType
    gr: types.ModuleType
    driver: types.ModuleType  # fake_img2img

    @property
    def runner(self):
        return self.scripts.ScriptRunner([self.script])

    @property
    def components(self) -> dict:
        return dict(zip(POSITIONAL_ORDER, self.controls))


def load_script_file() -> types.ModuleType:
    """modules/scripts.py load_scripts + script_loading.load_module: execute the file, extension root
    first on sys.path while loading (also what the host does again on a script reload)."""
    syspath = sys.path
    sys.path = [str(ROOT)] + sys.path
    try:
        spec = importlib.util.spec_from_file_location(SCRIPT_PATH.name, str(SCRIPT_PATH))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path = syspath


def _is_standin(name: str, top_level: set[str]) -> bool:
    return name.split(".")[0] in top_level


@pytest.fixture(scope="module")
def host():
    top_level = set(STANDIN_TOP_LEVEL)
    extra_path = [str(STANDIN)]
    if importlib.util.find_spec("cv2") is None:  # the WebUI ships opencv; CI may not
        extra_path.append(str(STANDIN / "cv2_fallback"))
        top_level.add("cv2")
    saved_path = list(sys.path)
    saved_modules = {name: module for name, module in sys.modules.items() if _is_standin(name, top_level)}
    for name in saved_modules:
        del sys.modules[name]
    sys.path[:0] = extra_path
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is tiny: thread hand-offs would cost far more than the math
    try:
        import fake_img2img
        import gradio as gr
        from modules import errors, script_callbacks, scripts, shared

        # What the real-host harness switches on: the engine logs its calls, hooks time themselves.
        test_switch = os.environ.get("SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST")
        os.environ["SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST"] = "1"
        try:
            module = load_script_file()
        finally:
            if test_switch is None:
                del os.environ["SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST"]
            else:
                os.environ["SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST"] = test_switch
        assert sys.modules["differential_diffusion_webui.adapter"].TEST_HOOKS
        for value in module.__dict__.values():
            if inspect.isclass(value) and issubclass(value, scripts.Script):
                scripts.scripts_data.append(scripts.ScriptClassData(value, str(SCRIPT_PATH), str(ROOT), module))

        script = module.Script()
        # The script drops its per-run state in postprocess; keep what it was for the tests to read.
        postprocess = script.postprocess

        def postprocess_and_keep_state(p, processed, *args):
            p.differential_diffusion_state_seen = getattr(p, "differential_diffusion_state", None)
            postprocess(p, processed, *args)
            assert not hasattr(p, "differential_diffusion_state"), "the run's state outlived postprocess"

        script.postprocess = postprocess_and_keep_state
        script.filename = str(SCRIPT_PATH)
        script.is_img2img = True
        assert script.show(True) is scripts.AlwaysVisible and script.show(False) is False
        script.alwayson = True
        with gr.Blocks():
            host_inputs = _img2img_inputs(gr)
            for elem_id, component in host_inputs.items():
                script.after_component(component, elem_id=elem_id)
            controls = script.ui(True)
        script.args_from, script.args_to = 1, 1 + len(controls)
        yield Host(module, sys.modules["differential_diffusion_webui.adapter"], sys.modules["differential_diffusion_webui.panel"], script, controls, host_inputs, scripts, shared, script_callbacks, errors, gr, fake_img2img)
    finally:
        torch.set_num_threads(threads)
        sys.path[:] = saved_path
        for name in [name for name in sys.modules if _is_standin(name, top_level)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)


def _img2img_inputs(gr) -> dict:
    """The img2img tab's components the preview reads (created before scripts' UI in the host)."""
    return {
        "img2img_image": gr.Image(elem_id="img2img_image", type="pil"),
        "img2img_width": gr.Slider(64, 2048, value=512, step=8, elem_id="img2img_width"),
        "img2img_height": gr.Slider(64, 2048, value=512, step=8, elem_id="img2img_height"),
        "img2img_steps": gr.Slider(1, 150, value=20, step=1, elem_id="img2img_steps"),
        "img2img_denoising_strength": gr.Slider(0.0, 1.0, value=0.75, step=0.01, elem_id="img2img_denoising_strength"),
        "resize_mode": gr.Radio(choices=["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"], type="index", value="Just resize", elem_id="resize_mode"),
    }


@pytest.fixture(autouse=True)
def clean_host_state(request):
    if "host" in request.fixturenames:
        host = request.getfixturevalue("host")
        host.errors.reported.clear()
        host.shared.state.begin()
        host.shared.opts.img2img_fix_steps = False
    yield


# --- inputs -----------------------------------------------------------------------------


def photo(width: int = SIZE, height: int = SIZE, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)


def gray(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(np.asarray(array) * 255), 0, 255).astype(np.uint8), "L")


def columns(*values: float, width: int = SIZE, height: int = SIZE) -> Image.Image:
    """A map of equal vertical bands."""
    band = np.repeat(np.asarray(values, dtype=np.float64), width // len(values))
    return gray(np.tile(band, (height, 1)))


def ramp_map() -> Image.Image:
    """Black left quarter (kept), then a ramp to white: pinned, staggered and free pixels."""
    x = (np.arange(SIZE) + 0.5) / SIZE
    return gray(np.tile(np.clip((x - 0.25) / 0.75, 0, 1), (SIZE, 1)))


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def ui_values(**values: Any) -> list:
    """UI positional form, enabled unless told otherwise."""
    merged = {setting.name: setting.default for setting in SETTINGS} | {"enabled": True} | values
    return [merged[name] for name in POSITIONAL_ORDER]


def script_args(host: Host, values: list | None = None, api: Any = None) -> list:
    """``p.script_args``: the UI's defaults everywhere (api.init_default_script_args), then this script's."""
    args = [0, *[component.value for component in host.controls]]
    if api is not None:
        args[host.script.args_from] = api  # the API puts its "args"[0] where the first UI value goes
    elif values is not None:
        args[host.script.args_from : host.script.args_to] = values
    return args


def make_p(host: Host, values: list | None = None, api: Any = None, **kwargs: Any):
    kwargs.setdefault("init_images", [photo()])
    kwargs.setdefault("width", SIZE)
    kwargs.setdefault("height", SIZE)
    return host.driver.StableDiffusionProcessingImg2Img(script_args=script_args(host, values, api), scripts=host.runner, **kwargs)


def generate(host: Host, values: list | None = None, api: Any = None, **kwargs: Any):
    p = make_p(host, values, api, **kwargs)
    return p, host.driver.process_images(p)


def plain(host: Host, **kwargs: Any):
    return generate(host, ui_values(enabled=False), **kwargs)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def host_init_image(host: Host, p, index: int = 0) -> np.ndarray:
    """The init image as the host's img2img prepares it (flatten + resize_image)."""
    image = host.driver.images.flatten(p.init_images[index], host.shared.opts.img2img_background_color)
    return pixels(host.driver.images.resize_image(p.resize_mode, image, p.width, p.height))


def assert_no_hook_errors(host: Host) -> None:
    assert host.errors.reported == [], [message for message, _ in host.errors.reported]


def cfg_class_forward(host: Host):
    return host.driver.CFGDenoiser.__dict__["forward"]


# --- arguments ----------------------------------------------------------------------------


def test_api_dict_and_ui_values_parse_to_the_same_args(host):
    change_map = ramp_map()
    settings = dict(invert=True, preserve=False, gamma=2.0, blur=1.0, low=0.1, high=0.9)
    ui_p = make_p(host, ui_values(map=change_map, **settings))
    api_p = make_p(host, api={"map": png_b64(change_map), **settings, "gamma": 2})  # JSON ints are numbers too
    for p in (ui_p, api_p):
        host.runner.before_process(p)
    ui_state, api_state = ui_p.differential_diffusion_state, api_p.differential_diffusion_state
    for field in fields(ui_state.args):
        if field.name != "map":  # a PIL image on one side, base64 on the other
            assert getattr(ui_state.args, field.name) == getattr(api_state.args, field.name), field.name
    assert ui_state.map_hash == api_state.map_hash is not None  # the same pixels were decoded
    assert np.array_equal(ui_state.user_map.values, api_state.user_map.values)
    assert ui_p.extra_generation_params == api_p.extra_generation_params
    assert ui_p.extra_generation_params["DD gamma"] == 2.0 and ui_p.extra_generation_params["Differential Diffusion"] is True
    assert_no_hook_errors(host)


def test_api_dict_enabled_false_and_ui_defaults_leave_the_run_alone(host):
    for p in (make_p(host, api={"enabled": False}), make_p(host)):  # make_p(host): all UI defaults (panel closed)
        host.runner.before_process(p)
        assert not hasattr(p, "differential_diffusion_state") and getattr(p, "differential_diffusion_state_seen", None) is None
        assert p.extra_generation_params == {}
        assert p.init.__func__ is host.driver.StableDiffusionProcessingImg2Img.init
    assert host.adapter.active_run() is None


@functools.lru_cache(maxsize=1)
def _b64_map() -> str:
    """A valid map in the API's form."""
    return png_b64(ramp_map())


BAD_ARGS = [
    ("unknown key", lambda: {"map": _b64_map(), "strength": 0.5}, "strength"),
    ("string boolean", lambda: {"map": _b64_map(), "invert": "true"}, "invert"),
    ("string boolean preserve", lambda: {"map": _b64_map(), "preserve": "false"}, "preserve"),
    ("string enabled", lambda: {"map": _b64_map(), "enabled": "true"}, "enabled"),
    ("string number", lambda: {"map": _b64_map(), "gamma": "2"}, "gamma"),
    ("boolean number", lambda: {"map": _b64_map(), "blur": True}, "blur"),
    ("NaN", lambda: {"map": _b64_map(), "gamma": float("nan")}, "gamma"),
    ("inf", lambda: {"map": _b64_map(), "high": float("inf")}, "high"),
    ("negative gamma", lambda: {"map": _b64_map(), "gamma": -1.0}, "gamma"),
    ("zero gamma", lambda: {"map": _b64_map(), "gamma": 0}, "gamma"),
    ("low above high", lambda: {"map": _b64_map(), "low": 0.8, "high": 0.2}, "low"),
    ("high above 1", lambda: {"map": _b64_map(), "high": 1.5}, "high"),
    ("blur too big", lambda: {"map": _b64_map(), "blur": 1000}, "blur"),
    ("missing map", lambda: {}, "map"),
    ("empty map", lambda: {"map": ""}, "map"),
    ("map not an image", lambda: {"map": base64.b64encode(b"not an image").decode()}, "map"),
    ("map not base64", lambda: {"map": "%%%"}, "map"),
    ("unknown source", lambda: {"map": _b64_map(), "source": "sketch"}, "source"),
    ("inpaint mask source without a mask", lambda: {"source": "inpaint mask"}, "source"),
    ("UI: enabled without a map", lambda: ui_values(map=None), "map"),
    ("UI: text in a checkbox", lambda: ui_values(map=ramp_map(), invert="yes"), "invert"),
    ("UI: text in a slider", lambda: ui_values(map=ramp_map(), low="0.2"), "low"),
    ("UI: inpaint mask source without a mask", lambda: ui_values(source="inpaint mask"), "source"),
]


@pytest.mark.parametrize("make_args, field", [case[1:] for case in BAD_ARGS], ids=[case[0] for case in BAD_ARGS])
def test_bad_arguments_fail_the_generation_with_422(host, make_args, field):
    args = make_args()
    p = make_p(host, api=args) if isinstance(args, dict) else make_p(host, args)
    with pytest.raises(Exception) as caught:
        host.driver.process_images(p)
    error = caught.value
    assert str(error).startswith(f"Differential Diffusion: {field}: "), str(error)
    # modules/api/api.py handle_exception: status_code=vars(e).get('status_code', 500)
    assert vars(error).get("status_code", 500) == 422
    assert isinstance(error, ValueError)
    assert p.sampler is None  # refused in p.init, before anything was sampled
    assert host.adapter.active_run() is None
    assert not hasattr(p, "differential_diffusion_state") and getattr(p, "differential_diffusion_state_seen", None) is None
    assert "Differential Diffusion" not in p.extra_generation_params
    assert_no_hook_errors(host)  # raised from the generation, not swallowed as a hook error


def test_a_refused_run_does_not_affect_the_next_one(host):
    _, baseline = plain(host)
    with pytest.raises(ValueError):
        generate(host, api={"map": _b64_map(), "gamma": "x"})
    _, after = plain(host)
    assert torch.equal(after.latents[0], baseline.latents[0])
    p, _ = generate(host, ui_values(map=ramp_map()))
    assert p.extra_generation_params["Differential Diffusion"] is True
    assert_no_hook_errors(host)


# --- hook lifecycle ---------------------------------------------------------------------------

SAMPLERS = ["Euler", "Euler a", "Heun", "DPM++ 2M", "DPM++ SDE", "DDIM"]


def test_enabled_run_wraps_only_its_own_sampler_and_unwraps_after(host):
    class_forward = cfg_class_forward(host)
    seen = {}

    def probe(denoiser):  # at the 3rd model call, mid-sampling
        other = host.driver.create_sampler("Euler")
        seen["own instance wrapped"] = "forward" in denoiser.__dict__
        seen["other instance wrapped"] = "forward" in other.model_wrap_cfg.__dict__
        seen["class forward untouched"] = type(denoiser).__dict__["forward"] is class_forward
        seen["active run"] = host.adapter.active_run()

    p, processed = generate(host, ui_values(map=ramp_map()), faults={3: probe}, denoising_strength=0.8)
    state = p.differential_diffusion_state_seen
    assert seen == {"own instance wrapped": True, "other instance wrapped": False, "class forward untouched": True, "active run": state.run_id}
    cfg = p.sampler.model_wrap_cfg
    assert all(cfg.wrapped_at_call) and cfg.calls == len(state.engine.observer) > 0  # every model call went through the blend
    # post_sample/postprocess put the class's forward back and closed the run
    assert "forward" not in cfg.__dict__ and cfg.forward.__func__ is class_forward
    assert state.wrapped_denoiser is None and host.adapter.active_run() is None
    assert {"Differential Diffusion", "DD gamma", MAP_HASH_INFOTEXT_KEY} <= set(processed.infotext_params)
    assert_no_hook_errors(host)


@pytest.mark.parametrize("sampler_name", SAMPLERS)
@pytest.mark.parametrize("fix_steps", [False, True], ids=["", "fix_steps"])
def test_all_zeros_map_returns_the_init_exactly(host, sampler_name, fix_steps):
    host.shared.opts.img2img_fix_steps = fix_steps
    black = gray(np.zeros((SIZE, SIZE)))
    p, processed = generate(host, ui_values(map=black), sampler_name=sampler_name, denoising_strength=0.9)
    assert torch.equal(processed.latents[0], p.init_latent)  # post_sample's finalize
    assert np.array_equal(pixels(processed.images[0]), host_init_image(host, p))  # preserve: the input's own pixels
    p, processed = generate(host, ui_values(map=black, preserve=False), sampler_name=sampler_name, denoising_strength=0.9)
    assert torch.equal(processed.latents[0], p.init_latent)
    _, baseline = plain(host, sampler_name=sampler_name, denoising_strength=0.9)
    assert not torch.equal(baseline.latents[0], p.init_latent)  # plain img2img does change the image
    assert_no_hook_errors(host)


@pytest.mark.parametrize("sampler_name", SAMPLERS)
def test_all_ones_map_equals_the_plain_run_bit_for_bit(host, sampler_name):
    _, baseline = plain(host, sampler_name=sampler_name, seed=11)
    p, processed = generate(host, ui_values(map=gray(np.ones((SIZE, SIZE)))), sampler_name=sampler_name, seed=11)
    assert torch.equal(processed.latents[0], baseline.latents[0])
    assert np.array_equal(pixels(processed.images[0]), pixels(baseline.images[0]))
    assert not any(p.sampler.model_wrap_cfg.wrapped_at_call)  # nothing pinned: the denoiser is never wrapped
    assert processed.infotext_params.keys() - baseline.infotext_params.keys() == DD_INFOTEXT_KEYS
    assert_no_hook_errors(host)


@pytest.mark.parametrize("sampler_name", ["Euler", "DDIM"])
def test_change_map_pins_kept_pixels_and_changes_the_rest(host, sampler_name):
    p, processed = generate(host, ui_values(map=columns(0, 1), preserve=False), sampler_name=sampler_name, denoising_strength=0.8)
    _, baseline = plain(host, sampler_name=sampler_name, denoising_strength=0.8)
    latent, init = processed.latents[0], p.init_latent
    half = latent.shape[3] // 2
    assert torch.equal(latent[..., :half], init[..., :half])
    assert (latent[..., half + 1 :] - init[..., half + 1 :]).abs().mean() > 0.05
    # the changed side is img2img at full strength, nudged only near the seam by the model's 5x5 field
    assert (latent[..., half + 3 :] - baseline.latents[0][..., half + 3 :]).abs().max() < 0.1 * (baseline.latents[0] - init).abs().max()


@pytest.mark.parametrize("sampler_name", ["Euler", "Heun", "DPM++ SDE", "DDIM"])
def test_all_pinned_first_steps_are_skipped_with_the_same_result(host, sampler_name):
    """A map whose brightest pixel is 0.5 pins everything for the first half: the host samples less, same output."""
    values = ui_values(map=columns(0, 0.5), preserve=False)
    kwargs = dict(sampler_name=sampler_name, denoising_strength=0.8, steps=20, seed=50)

    class OtherExtension(host.scripts.Script):  # runs after ours, like any later alwayson script
        seen: list = []

        def postprocess_image(self, p, pp, *args):
            self.seen.append(p.denoising_strength)

    other = OtherExtension()
    other.args_from = other.args_to = host.script.args_to
    p = make_p(host, values, **kwargs)
    p.scripts = host.scripts.ScriptRunner([host.script, other])
    skipped = host.driver.process_images(p)
    assert other.seen == [0.8]  # other scripts see the slider's strength once sampling is over
    # Prompt editing with the same prompt on both sides: identical conditioning, but the step
    # count matters to a schedule, so the script must not skip here.
    cond = host.driver.COND
    q, full = generate(host, values, prompt_schedule=[(5, cond), (20, cond)], **kwargs)
    skip_call, full_call = p.sampler.sample_calls[0], q.sampler.sample_calls[0]
    assert full_call["denoising_strength"] == 0.8
    # The brightest pixel's strength, 0.8 * 128 / 255 = 0.4016, lies between the levels 8/20 and 9/20:
    # smooth release lets it go partly in level 9's step, so the run starts there.
    assert skip_call["denoising_strength"] == pytest.approx(9 / 20)
    assert skip_call["model_calls"] < full_call["model_calls"]
    assert torch.equal(skipped.latents[0], full.latents[0])
    assert p.denoising_strength == q.denoising_strength == 0.8  # restored after sampling
    assert skipped.infotext_params["Denoising strength"] == 0.8
    snapped = make_p(host, ui_values(map=columns(0, 0.5), preserve=False, smooth=False), **kwargs)
    host.driver.process_images(snapped)
    assert snapped.sampler.sample_calls[0]["denoising_strength"] == pytest.approx(0.8 * 128 / 255)  # snapped: the brightest pixel's own
    host.shared.opts.img2img_fix_steps = True  # counts steps from the slider: no skipping
    r, _ = generate(host, values, **kwargs)
    assert r.sampler.sample_calls[0]["denoising_strength"] == 0.8
    assert_no_hook_errors(host)


@pytest.mark.parametrize("host_kind", ["a1111", "forge", "reforge", "classic", "neo"])
def test_a_refiner_switching_by_step_count_forbids_step_skipping(host, monkeypatch, host_kind):
    """Each host's own switch-by-steps option (A1111's refiner_switch_by_sample_steps, Neo's
    refiner_use_steps) counts steps from the run's start; another host's option means nothing."""
    surfaces = host.adapter.surfaces
    monkeypatch.setattr(host.adapter, "HOST", host_kind)
    p = types.SimpleNamespace(refiner_checkpoint_info=object(), s_min_uncond=0, sampler=types.SimpleNamespace(funcname="sample_euler"))
    own = surfaces.refiner_by_steps_options(host_kind)
    for name in ("refiner_switch_by_sample_steps", "refiner_use_steps"):
        monkeypatch.setattr(host.shared.opts, name, True, raising=False)
        assert host.adapter.step_counting(p, {}).refiner_switch_by_steps == (name in own), name
        monkeypatch.setattr(host.shared.opts, name, False, raising=False)
    assert not host.adapter.step_counting(p, {}).refiner_switch_by_steps
    monkeypatch.setattr(host.shared.opts, own[0] if own else "refiner_use_steps", True, raising=False)
    p.refiner_checkpoint_info = None  # no refiner: nothing switches
    assert not host.adapter.step_counting(p, {}).refiner_switch_by_steps
    assert len(own) == (host_kind != "classic")  # Classic has no such option


def test_unipc_keeps_its_steps_as_a_timestep_sampler_and_as_a_sigma_function(host):
    """A1111 names UniPC's sampler "unipc"; Neo passes its k-diffusion function sample_unipc."""

    def sample_unipc(model, x, sigmas, **kwargs):  # Neo's modules/sd_samplers_extra.sample_unipc, by name
        return x

    for funcname in ("unipc", sample_unipc):
        p = types.SimpleNamespace(refiner_checkpoint_info=None, s_min_uncond=0, sampler=types.SimpleNamespace(funcname=funcname))
        assert host.adapter.step_counting(p, {}).sampler_needs_its_steps, funcname
    p.sampler.funcname = "sample_euler"
    assert not host.adapter.step_counting(p, {}).sampler_needs_its_steps


@pytest.mark.parametrize("resize_mode", [0, 1, 2, 3])
def test_kept_pixels_follow_the_hosts_resize_mode(host, resize_mode):
    """A 3:2 init image into 64x64: the map gets the init image's geometry, kept pixels stay exact."""
    p, processed = generate(host, ui_values(map=columns(0, 0, 1, 1)), init_images=[photo(96, 64, seed=2)], resize_mode=resize_mode)
    state = p.differential_diffusion_state_seen
    kept = state.strengths[(0, False)].values == 0
    assert kept.any() and not kept.all()
    assert kept[:, 0].all()  # the black left edge lands on the output's left edge in every mode
    never = state.engine.never_released.expand_as(processed.latents[0])
    assert bool(never.any()) and torch.equal(processed.latents[0][never], p.init_latent[never])
    # preserve: the host's own init pixels (mode 3 resizes the latent; its pixels are the plain stretch)
    image = host.driver.images.flatten(p.init_images[0], host.shared.opts.img2img_background_color)
    original = pixels(host.driver.images.resize_image(resize_mode if resize_mode != 3 else 0, image, SIZE, SIZE))
    assert np.array_equal(pixels(processed.images[0])[kept], original[kept])
    assert_no_hook_errors(host)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("resize_mode", [0, 1, 2])
def test_kept_pixels_of_an_init_image_at_the_output_size_are_the_hosts(host, resize_mode, mode):
    """At the output's size an RGB init image is used as it is (no flatten, no resize); other modes
    still go through the host's flatten: kept pixels equal the host's own init pixels either way."""
    init = photo(seed=5)
    if mode == "RGBA":
        alpha = Image.fromarray(np.tile(np.linspace(0, 255, SIZE).astype(np.uint8), (SIZE, 1)), "L")
        init = init.convert("RGBA")
        init.putalpha(alpha)
    p, processed = generate(host, ui_values(map=columns(0, 0, 1, 1)), init_images=[init], resize_mode=resize_mode)
    kept = p.differential_diffusion_state_seen.strengths[(0, False)].values == 0
    assert kept.any() and not kept.all()
    image = host.driver.images.flatten(init, host.shared.opts.img2img_background_color)
    original = pixels(host.driver.images.resize_image(resize_mode, image, SIZE, SIZE))
    assert np.array_equal(pixels(processed.images[0])[kept], original[kept])
    if mode == "RGBA":  # transparency flattened onto the background: not the RGBA image's own colour channels
        assert not np.array_equal(original[kept], np.asarray(init)[..., :3][kept])
    assert_no_hook_errors(host)


def test_exception_inside_sampling_leaves_no_active_wrapper(host):
    _, baseline = plain(host, seed=3)
    failing = make_p(host, ui_values(map=ramp_map()), faults={3: RuntimeError("CUDA out of memory")}, seed=3)
    with pytest.raises(RuntimeError, match="out of memory"):
        host.driver.process_images(failing)
    stale_cfg = failing.sampler.model_wrap_cfg
    stale_engine = failing.differential_diffusion_state.engine
    assert "forward" in stale_cfg.__dict__  # no hook ran after the failure: the wrapper is still on that object

    # The next generation (new p, new sampler) is exactly plain img2img.
    p, after = plain(host, seed=3)
    assert torch.equal(after.latents[0], baseline.latents[0])
    assert np.array_equal(pixels(after.images[0]), pixels(baseline.images[0]))
    assert not any(p.sampler.model_wrap_cfg.wrapped_at_call)

    # A new enabled run has started: the stale wrapper must not blend (gate on _active_run).
    new = make_p(host, ui_values(map=ramp_map()), seed=4)
    host.runner.before_process(new)
    assert host.adapter.active_run() == new.differential_diffusion_state.run_id
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5
    x_before = x.clone()
    sigma = torch.tensor([5.0])
    calls_before = len(stale_engine.observer)
    through_stale = stale_cfg(x, sigma, **failing.sampler.sampler_extra_args)
    direct = cfg_class_forward(host)(stale_cfg, x_before.clone(), sigma, **failing.sampler.sampler_extra_args)
    assert torch.equal(x, x_before)  # the blend writes pinned pixels into x in place; nothing was written
    assert torch.equal(through_stale, direct)
    assert len(stale_engine.observer) == calls_before
    host.runner.postprocess(new, None)
    assert_no_hook_errors(host)


def test_interrupt_inside_sampling_leaves_no_active_wrapper(host):
    _, baseline = plain(host, seed=5, steps=20)
    p, interrupted = generate(host, ui_values(map=columns(0, 0.5)), faults={4: "interrupt"}, seed=5, n_iter=2, steps=20)
    assert p.sampler.sample_calls[0]["denoising_strength"] < 0.75 and p.denoising_strength == 0.75  # skipped, then restored
    # launch_sampling caught InterruptedException (a BaseException) raised inside the wrapped forward;
    # the host went on with post_sample / postprocess_image / postprocess for that batch.
    assert len(interrupted.latents) == 1 and p.sampler.model_wrap_cfg.calls == 4
    assert "forward" not in p.sampler.model_wrap_cfg.__dict__
    assert host.adapter.active_run() is None
    half = SIZE // 16
    assert torch.equal(interrupted.latents[0][..., :half], p.init_latent[..., :half])  # kept pixels kept anyway
    host.shared.state.begin()  # the next job resets the flags
    _, after = plain(host, seed=5, steps=20)
    assert torch.equal(after.latents[0], baseline.latents[0])
    assert np.array_equal(pixels(after.images[0]), pixels(baseline.images[0]))
    assert_no_hook_errors(host)


# --- batches -------------------------------------------------------------------------------


def test_batch_size_two_blends_each_image_with_its_own_init_noise_and_map(host):
    wide = photo(2 * SIZE, SIZE, seed=9)
    square = photo(seed=8)
    # Crop and resize: the map is stretched over each init image, then cropped like it.
    # Its black left quarter survives on the square image (x < 16) and is cropped away on the wide one.
    values = ui_values(map=columns(0, 1, 1, 1))
    kwargs = dict(resize_mode=1, denoising_strength=0.8, seed=20)
    p, batch = generate(host, values, init_images=[square, wide], batch_size=2, **kwargs)
    assert p.init_latent.shape[0] == 2
    state = p.differential_diffusion_state_seen
    assert set(state.strengths) == {(0, False), (1, False)}
    assert (state.strengths[(0, False)].values[:, :16] == 0).all() and (state.strengths[(0, False)].values[:, 16:] > 0).all()
    assert (state.strengths[(1, False)].values > 0).all()
    latents = batch.latents[0]
    assert torch.equal(latents[0, ..., :2], p.init_latent[0, ..., :2])
    # Each row equals its own single-image run (row 1: seed 21's noise, its own init).
    for index, (image, seed) in enumerate([(square, 20), (wide, 21)]):
        single_p, single = generate(host, values, init_images=[image], **{**kwargs, "seed": seed})
        # (a batch of 2 runs the convolutions batched: equal up to float rounding, not bit for bit)
        assert torch.allclose(latents[index], single.latents[0][0], rtol=0, atol=1e-5), index
        assert np.abs(pixels(batch.images[index]).astype(int) - pixels(single.images[0])).max() <= 1, index
    # postprocess_image (batch_index) preserved each image's own kept pixels
    assert np.array_equal(pixels(batch.images[0])[:, :16], host_init_image(host, p, 0)[:, :16])
    assert_no_hook_errors(host)


def test_a_batch_of_one_init_image_finds_its_kept_pixels_once(host, monkeypatch):
    """Which pixels are never released depends on the init image and the engine, not on the batch
    image: found once per run (right after sampling starts), and every image of the batch keeps them."""
    from lib_differential_diffusion.blend import DifferentialDiffusion

    calls = []
    never_released_pixels = DifferentialDiffusion.never_released_pixels
    monkeypatch.setattr(DifferentialDiffusion, "never_released_pixels", lambda self, *a, **k: calls.append(1) or never_released_pixels(self, *a, **k))
    p, batch = generate(host, ui_values(map=columns(0, 1, 1, 1)), batch_size=3, denoising_strength=0.8, seed=20)
    assert len(batch.images) == 3 and len(calls) == 1
    original = host_init_image(host, p, 0)
    for image in batch.images:
        assert np.array_equal(pixels(image)[:, :16], original[:, :16])
        assert not np.array_equal(pixels(image)[:, 16:], original[:, 16:])
    assert_no_hook_errors(host)


def test_an_8bit_map_takes_its_stored_values_and_matches_the_same_map_in_16_bits(host, monkeypatch):
    """An 8-bit gray map used as it is reaches the latent and the kept pixels through its stored
    values (integer block sums, an 8-bit threshold); the same picture in 16 bits (u * 257 decodes to
    the same floats) through the floats. Same release steps, same kept pixels, same image."""
    from differential_diffusion_webui import adapter

    stored_seen = []
    to_latent = adapter.to_latent
    monkeypatch.setattr(adapter, "to_latent", lambda map_hw, latent_hw: stored_seen.append(map_hw.stored_8bit is not None) or to_latent(map_hw, latent_hw))
    eight = ramp_map()
    sixteen = Image.fromarray(np.asarray(eight).astype(np.uint16) * 257)  # mode I;16
    results = {}
    for name, change_map in (("8-bit", eight), ("16-bit", sixteen)):
        p, processed = generate(host, ui_values(map=change_map), seed=40)
        state = p.differential_diffusion_state_seen
        results[name] = (state.engine.release, state.kept[(0, False)], pixels(processed.images[0]), state.user_map.stored_8bit is not None)
    assert stored_seen == [True, False]
    (release8, kept8, image8, stored8), (release16, kept16, image16, stored16) = results["8-bit"], results["16-bit"]
    assert stored8 and not stored16 and kept8.any() and not kept8.all()
    assert torch.equal(release8, release16) and np.array_equal(kept8, kept16) and np.array_equal(image8, image16)
    # Anything that changes the decoded map (here: invert) takes the floats again.
    stored_seen.clear()
    generate(host, ui_values(map=eight, invert=True), seed=40)
    assert stored_seen == [False]
    assert_no_hook_errors(host)


@pytest.mark.parametrize("sampler_name", ["Euler a", "DDIM"])
@pytest.mark.parametrize("change_map", [ramp_map, lambda: columns(0, 0.5)], ids=["ramp", "max 0.5 (skips steps)"])
def test_batch_count_two_rebuilds_the_blend_for_each_batch(host, sampler_name, change_map):
    values = ui_values(map=change_map())
    p, both = generate(host, values, n_iter=2, seed=30, sampler_name=sampler_name)
    sampler = p.sampler
    assert len(sampler.sample_calls) == 2 and all(call["forward_replaced"] for call in sampler.sample_calls)
    assert sampler.sample_calls[0]["denoising_strength"] == sampler.sample_calls[1]["denoising_strength"]
    assert p.denoising_strength == 0.75  # the slider again after each batch
    assert not torch.equal(sampler.sample_calls[0]["noise"], sampler.sample_calls[1]["noise"])
    for iteration, seed in enumerate([30, 31]):
        _, single = generate(host, values, seed=seed, sampler_name=sampler_name)
        assert torch.equal(both.latents[iteration], single.latents[0]), iteration
        assert np.array_equal(pixels(both.images[iteration]), pixels(single.images[0]))
    assert "forward" not in sampler.model_wrap_cfg.__dict__
    assert_no_hook_errors(host)


# --- inpainting -----------------------------------------------------------------------------


def test_inpaint_mask_source_keeps_unmasked_pixels_and_bypasses_the_host_blend(host):
    mask = columns(1, 0)  # inpaint the left half (the host blurs the edge by 4 px)
    p, processed = generate(host, ui_values(source="inpaint mask"), image_mask=mask, denoising_strength=0.8)
    assert p.mask_round is False  # `process` ran before the host's init: its latent mask is soft like the strengths
    assert bool(((p.nmask > 0) & (p.nmask < 1)).any())
    cfg = p.sampler.model_wrap_cfg
    # The wrapped calls ran with the denoiser's mask set aside (the strengths hold it): the host
    # blended nothing inside sampling, and got its mask back afterwards.
    assert cfg.calls > 0 and cfg.blends == [] and cfg.mask is not None
    latent, init = processed.latents[0], p.init_latent
    sampled = p.sampler.sample_calls[0]["samples"]
    engine = p.differential_diffusion_state_seen.engine
    never = engine.never_released.expand_as(latent)
    # Euler mixes states: pixels below the first level (the blurred edge) are mixed with the original at the end.
    at_end = ((engine.release == NEVER) & (engine.release_weight > 0)).expand_as(latent)
    free = ~never & ~at_end
    assert bool(never.any()) and bool(free.any()) and bool(at_end.any())
    assert torch.equal(latent[never], init[never])  # strength 0 (outside the mask): the input exactly
    assert torch.equal(latent[free], sampled[free])  # the host's final blend was bypassed too ...
    weight = engine.release_weight.expand_as(latent)
    assert torch.equal(latent[at_end], torch.lerp(init, sampled, weight)[at_end])
    host_blend = sampled * p.nmask + init * p.mask
    assert not torch.equal(host_blend[free], latent[free])  # ... and it would have changed the result
    assert (latent[..., :2] - init[..., :2]).abs().mean() > 0.05
    assert np.array_equal(pixels(processed.images[0])[:, 48:], host_init_image(host, p)[:, 48:])  # preserve
    assert_no_hook_errors(host)


@pytest.mark.parametrize("forge_denoiser", [False, True], ids=["a1111-denoiser", "forge-denoiser"])
def test_inpaint_mask_as_source_is_the_same_strengths_as_an_uploaded_map(host, monkeypatch, forge_denoiser):
    """Forge-type denoisers re-noise the masked area with fresh noise before every call; with the
    mask set aside inside the blend's calls, "inpaint mask" as the source gives exactly what the
    same strengths uploaded as a map give, on either kind of denoiser."""
    monkeypatch.setattr(host.driver.CFGDenoiser, "renoise_masked_every_call", forge_denoiser)
    mask = columns(1, 1, 0, 0)  # inpaint the left half; no blur: strengths are exactly 0/1
    kwargs = dict(denoising_strength=0.8, seed=31, sampler_name="Euler a")
    _, as_source = generate(host, ui_values(source="inpaint mask", preserve=False), image_mask=mask, mask_blur=0, **kwargs)
    _, uploaded = generate(host, ui_values(map=mask, preserve=False), **kwargs)
    assert torch.equal(as_source.latents[0], uploaded.latents[0])
    assert_no_hook_errors(host)


@pytest.mark.parametrize("title", ["Outpainting mk2", "Poor man's outpainting"])
def test_outpainting_scripts_take_only_the_inpaint_mask_as_source(host, title):
    """They grow the canvas: a map made for the input cannot be placed on it (refused, naming the
    script); the inpaint mask, whose masked part is the new area, is placed already."""

    class Outpainting(host.scripts.Script):
        def title(self):
            return title

    def run(values, **kwargs):
        p = make_p(host, values, **kwargs)
        p.scripts = host.scripts.ScriptRunner([host.script], selectable=[Outpainting()])
        p.script_args[0] = 1  # the Script dropdown: the first selectable script
        return p, host.driver.process_images(p)

    for values in (ui_values(map=ramp_map()), ui_values(source="fan")):
        with pytest.raises(ValueError, match=f'^Differential Diffusion: script: "{re.escape(title)}" grows the canvas') as caught:
            run(values)
        assert caught.value.status_code == 422
    mask = columns(0, 0, 0, 1)  # the "new area" on the right
    p, processed = run(ui_values(source="inpaint mask"), image_mask=mask, mask_blur=0)
    assert np.array_equal(pixels(processed.images[0])[:, :40], host_init_image(host, p)[:, :40])
    assert_no_hook_errors(host)


def test_map_times_inpaint_mask_with_only_masked(host):
    image_mask = gray(np.pad(np.ones((24, 24)), 20))  # a centred square
    p, processed = generate(
        host, ui_values(map=gray(np.ones((SIZE, SIZE))), preserve=False), image_mask=image_mask, mask_blur=0, inpaint_full_res=True, init_images=[photo(128, 128, seed=4)]
    )
    assert p.paste_to is not None  # the host cropped to the mask ("only masked")
    state = p.differential_diffusion_state_seen
    strengths = state.strengths[(0, False)].values
    assert strengths.shape == (SIZE, SIZE) and 0 < strengths.mean() < 1
    kept = torch.from_numpy(to_latent(strengths, (8, 8))[0, 0].numpy() == 0)
    assert kept.any()
    assert torch.equal(processed.latents[0][..., kept], p.init_latent[..., kept])
    assert_no_hook_errors(host)


# --- X/Y/Z plot ---------------------------------------------------------------------------------


def _fake_xyz(host: Host) -> types.ModuleType:
    """scripts/xyz_grid.py as A1111 loads it: module named 'xyz_grid.py', AxisOption classes, axis_options."""
    xyz = types.ModuleType("xyz_grid.py")

    class AxisOption:
        def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
            self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
            self.confirm, self.cost, self.choices, self.prepare = confirm, cost, choices, prepare

    class AxisOptionImg2Img(AxisOption):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.is_img2img = True

    class Script(host.scripts.Script):
        def title(self):
            return "X/Y/Z plot"

    Script.__module__ = "xyz_grid.py"
    xyz.AxisOption, xyz.AxisOptionImg2Img, xyz.Script = AxisOption, AxisOptionImg2Img, Script
    xyz.axis_options = [AxisOption("Nothing", str, lambda p, x, xs: None), AxisOptionImg2Img("Denoising", float, lambda p, x, xs: setattr(p, "denoising_strength", x))]
    return xyz


@pytest.fixture
def xyz(host):
    module = _fake_xyz(host)
    entry = host.scripts.ScriptClassData(module.Script, "/webui/scripts/xyz_grid.py", "/webui", module)
    host.scripts.scripts_data.append(entry)
    yield module
    host.scripts.scripts_data.remove(entry)


def _axis(xyz, name: str):
    return next(option for option in xyz.axis_options if option.label == f"[Differential Diffusion] {name}")


def test_xyz_axes_are_registered_once(host, xyz):
    assert _registered(host, "before_ui")
    host.script_callbacks.before_ui_callback()
    host.script_callbacks.before_ui_callback()  # UI reload
    labels = [option.label for option in xyz.axis_options if option.label.startswith("[Differential Diffusion]")]
    assert labels == [f"[Differential Diffusion] {name}" for name in ("Enabled", "Invert", "Gamma", "Blur", "Low", "High", "Smooth", "Model mask", "Preprocessor")]
    assert all(isinstance(option, xyz.AxisOptionImg2Img) for option in xyz.axis_options[2:])
    assert [option.type for option in xyz.axis_options[2:]] == [str, str, float, float, float, float, str, str, str]
    assert _axis(xyz, "Smooth").choices() == ["True", "False"]
    assert _axis(xyz, "Enabled").choices() == ["True", "False"]
    assert_no_hook_errors(host)


def test_without_xyz_no_axes_and_no_error(host):
    host.adapter.add_xyz_axes()
    assert_no_hook_errors(host)


def _xyz_cells(xyz, p, axis_name: str, values: list) -> list:
    """What scripts/xyz_grid.py does per cell: pc = copy(p); opt.apply(pc, opt.type(value), values)."""
    option = _axis(xyz, axis_name)
    typed = [option.type(value) for value in values]
    cells = []
    for value in typed:
        pc = copy.copy(p)
        option.apply(pc, value, typed)
        cells.append(pc)
    return cells


def test_xyz_axis_values_do_not_leak_between_cells(host, xyz):
    host.script_callbacks.before_ui_callback()
    p = make_p(host, ui_values(map=ramp_map()))
    gamma_cells = _xyz_cells(xyz, p, "Gamma", ["0.5", "3"])
    enabled_cells = [_xyz_cells(xyz, cell, "Enabled", ["False"])[0] for cell in gamma_cells]  # a Y axis over X
    invert_cells = _xyz_cells(xyz, p, "Invert", ["True", "false"])
    assert not hasattr(p, "differential_diffusion_overrides")
    assert [cell.differential_diffusion_overrides for cell in gamma_cells] == [{"gamma": 0.5}, {"gamma": 3.0}]
    assert [cell.differential_diffusion_overrides for cell in enabled_cells] == [{"gamma": 0.5, "enabled": False}, {"gamma": 3.0, "enabled": False}]
    assert [cell.differential_diffusion_overrides for cell in invert_cells] == [{"invert": True}, {"invert": False}]
    for cell, gamma in zip(gamma_cells, [0.5, 3.0]):
        host.runner.before_process(cell)
        assert cell.differential_diffusion_state.args.gamma == gamma
    for cell in enabled_cells:
        host.runner.before_process(cell)
        assert not hasattr(cell, "differential_diffusion_state") and getattr(cell, "differential_diffusion_state_seen", None) is None
    host.runner.before_process(p)
    assert p.differential_diffusion_state.args.gamma == 1.0 and not p.differential_diffusion_state.args.invert
    with pytest.raises(ValueError, match="Differential Diffusion: enabled: expected True or False"):
        _xyz_cells(xyz, p, "Enabled", ["maybe"])
    assert_no_hook_errors(host)


def test_xyz_cells_generate_with_their_own_values(host, xyz):
    host.script_callbacks.before_ui_callback()
    p = make_p(host, ui_values(map=columns(0, 1), preserve=False), seed=40)
    on, off = _xyz_cells(xyz, p, "Enabled", ["True", "False"])
    on_result = host.driver.process_images(on)
    off_result = host.driver.process_images(off)
    _, baseline = plain(host, seed=40)
    assert torch.equal(off_result.latents[0], baseline.latents[0])
    assert torch.equal(on_result.latents[0][..., :4], on.init_latent[..., :4])
    bad = _xyz_cells(xyz, p, "Gamma", ["0"])[0]  # X/Y/Z lets any float through; the run refuses it
    with pytest.raises(ValueError, match="^Differential Diffusion: gamma: ") as caught:
        host.driver.process_images(bad)
    assert caught.value.status_code == 422
    assert_no_hook_errors(host)


def test_xyz_disabled_cell_after_enabled_cell_has_no_dd_infotext(host, xyz):
    host.script_callbacks.before_ui_callback()
    p = make_p(host, ui_values(map=columns(0, 1)), seed=41)
    on, off = _xyz_cells(xyz, p, "Enabled", ["True", "False"])
    assert "Differential Diffusion" in host.driver.process_images(on).infotext_params
    assert "Differential Diffusion" not in host.driver.process_images(off).infotext_params


# --- infotext ------------------------------------------------------------------------------------

# modules/infotext_utils.py (v1.10.1)
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _infotext(params: dict) -> str:
    """processing.create_infotext's parameter line."""
    generation_params = {"Steps": 10, "Sampler": "Euler", "Size": "64x64", **params}
    line = ", ".join([k if k == v else f"{k}: {_quote(v)}" for k, v in generation_params.items() if v is not None])
    return f"a prompt\nNegative prompt: blurry\n{line}"


def _parse_infotext(text: str) -> dict:
    """infotext_utils.parse_generation_parameters, the key/value part."""
    lastline = text.strip().split("\n")[-1]
    result = {}
    for k, v in RE_PARAM.findall(lastline):
        if v and v[0] == '"' and v[-1] == '"':
            v = json.loads(v)
        result[k] = v
    return result


def _paste(host: Host, params: dict) -> dict:
    """infotext_utils.connect_paste's paste_func: the value each component would be updated to (missing: no update)."""
    names = {id(component): name for name, component in host.components.items()}
    names[id(_block(host, "differential_diffusion_paste_note"))] = "paste note"
    updates = {}
    for output, key in host.script.infotext_fields:
        v = key(params) if callable(key) else params.get(key)
        if v is None or v == "" and names[id(output)] == "paste note":
            continue
        valtype = type(output.value)
        updates[names[id(output)]] = False if valtype == bool and v == "False" else (float(v) if valtype == int else valtype(v))
    return updates


def test_infotext_round_trip_restores_the_settings(host):
    """A fan's infotext restores the run completely; an uploaded map's restores the settings,
    leaves the panel off (its pixels are not in the infotext) and says so."""
    settings = dict(invert=True, preserve=False, gamma=2.5, blur=3.0, low=0.1, high=0.9, smooth=False)
    change_map = ramp_map()
    p = make_p(host, ui_values(map=change_map, **settings))
    host.runner.before_process(p)
    params = _parse_infotext(_infotext(p.extra_generation_params))
    assert params["Differential Diffusion"] == "True" and len(params[MAP_HASH_INFOTEXT_KEY]) == 10
    assert params["DD smooth"] == "False"
    restored = _paste(host, params)
    note = restored.pop("paste note")
    assert restored == {"enabled": False, "source": "map", **settings}  # no inpainting model: the model mask as the panel has it
    # An inpainting model's run from before the setting existed: the host's own mask.
    assert _paste(host, {**params, "Conditional mask weight": "1.0"})["model_mask"] is False
    assert _paste(host, {**params, "Conditional mask weight": "1.0", "DD model mask": "True"})["model_mask"] is True
    # Smooth on is restored on; an infotext from before the setting existed was made snapped.
    assert _paste(host, {**params, "DD smooth": "True"})["smooth"] is True
    assert _paste(host, {key: value for key, value in params.items() if key != "DD smooth"})["smooth"] is False
    assert "uploaded map" in note and params[MAP_HASH_INFOTEXT_KEY] in note and "upload the change map" in note
    assert set(host.script.paste_field_names) == {s.infotext_key for s in SETTINGS if s.infotext_key}
    # Fed back with the same map and switched on, the restored values reproduce the run's settings.
    again = make_p(host, ui_values(**{**restored, "enabled": True, "map": change_map}))
    host.runner.before_process(again)
    assert again.extra_generation_params == p.extra_generation_params
    # Uploading a map switches the panel on and clears the note.
    (event, handler), = [(event, handler) for event, handler in host.components["map"].events if event == "upload"]
    assert handler["outputs"] == [host.components["enabled"], _block(host, "differential_diffusion_paste_note")]
    assert handler["fn"]() == ({"__type__": "update", "value": True}, "")

    fan = make_p(host, ui_values(source="fan", fan_count=5, fan_layout="radial sectors", **settings))
    host.runner.before_process(fan)
    restored = _paste(host, _parse_infotext(_infotext(fan.extra_generation_params)))
    assert restored == {"enabled": True, "source": "fan", "fan_count": 5, "fan_layout": "radial sectors", **settings}
    assert_no_hook_errors(host)


def test_infotext_without_the_key_turns_the_panel_off(host):
    params = _parse_infotext(_infotext({"Denoising strength": 0.75}))
    assert _paste(host, params) == {"enabled": False}
    # a stray DD key without the main one changes nothing but the switch
    assert _paste(host, _parse_infotext(_infotext({"DD gamma": 3.0}))) == {"enabled": False}


# --- settings, schema route -----------------------------------------------------------------------


def _registered(host: Host, category: str) -> bool:
    """Registered through script_callbacks.on_<category>(..., name="differential_diffusion")."""
    return any(c.name.endswith(f"/differential_diffusion.py/{category}/differential_diffusion") for c in host.script_callbacks.callback_map[f"callbacks_{category}"])


def test_settings_register_defaults_that_the_panel_uses(host):
    assert _registered(host, "ui_settings")
    host.script_callbacks.ui_settings_callback()
    labels = host.shared.opts.data_labels
    for name in ("invert", "gamma", "blur", "low", "high", "preserve"):
        info = labels[f"differential_diffusion_default_{name}"]
        assert info.default == SETTINGS_BY_NAME[name].default and info.section == ("differential_diffusion", "Differential Diffusion")
    host.shared.opts.differential_diffusion_default_gamma = 2.0
    try:
        script = host.module.Script()  # a fresh panel: the fixture's stays as built
        with host.gr.Blocks():
            controls = script.ui(True)
        assert dict(zip(POSITIONAL_ORDER, controls))["gamma"].value == 2.0
    finally:
        host.shared.opts.differential_diffusion_default_gamma = 1.0
    assert_no_hook_errors(host)


class FakeApp:
    """The FastAPI app as far as the route registration needs it."""

    def __init__(self) -> None:
        self.routes: list = []

    def add_api_route(self, path, endpoint, **kwargs):
        self.routes.append(types.SimpleNamespace(path=path, endpoint=endpoint, **kwargs))


def test_schema_route_is_added_once_and_lists_every_setting(host):
    assert _registered(host, "app_started")
    app = FakeApp()
    host.script_callbacks.app_started_callback(None, app)
    host.script_callbacks.app_started_callback(None, app)
    routes = [route for route in app.routes if route.path == "/differential-diffusion/v1/schema"]
    assert len(routes) == 1 and routes[0].methods == ["GET"]
    schema = json.loads(json.dumps(routes[0].endpoint()))
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(API_KEYS)  # map_folder is UI-only (a server path)
    for setting in SETTINGS:
        if setting.name not in API_KEYS:
            continue
        entry = schema["properties"][setting.name]
        if setting.minimum is not None:
            assert (entry["minimum"], entry["maximum"], entry["default"]) == (setting.minimum, setting.maximum, setting.default)
    assert schema["properties"]["source"]["enum"] == ["map", "inpaint mask", "fan", "preprocessor"]
    assert schema["properties"]["fan_count"]["type"] == "integer"
    assert schema["properties"]["fan_layout"]["enum"] == ["vertical bands", "horizontal bands", "radial sectors"]
    assert_no_hook_errors(host)


def test_last_run_route_only_with_the_test_switch(host, monkeypatch):
    app = FakeApp()
    monkeypatch.setattr(host.adapter, "TEST_HOOKS", False)
    host.adapter.add_routes(None, app)
    assert [route.path for route in app.routes] == ["/differential-diffusion/v1/schema"]
    monkeypatch.setattr(host.adapter, "TEST_HOOKS", True)
    host.adapter.add_routes(None, app)
    host.adapter.add_routes(None, app)
    assert [route.path for route in app.routes] == [
        "/differential-diffusion/v1/schema", "/differential-diffusion/v1/test/last-run",
        "/differential-diffusion/v1/test/callbacks", "/differential-diffusion/v1/test/surfaces",
        "/differential-diffusion/v1/test/reload-ui",
    ]  # fmt: skip
    counts_before = app.routes[2].endpoint()
    assert counts_before["callbacks_app_started"] >= 1 and counts_before == {category: len(callbacks) for category, callbacks in host.script_callbacks.callback_map.items()}
    start = time.perf_counter()
    p, _ = generate(host, ui_values(map=columns(0, 1)), sampler_name="Heun")
    elapsed = time.perf_counter() - start
    assert app.routes[2].endpoint() == counts_before  # a generation registers nothing
    report = json.loads(json.dumps(app.routes[1].endpoint()))
    engine = p.differential_diffusion_state_seen.engine
    assert report["sampler"] == "Heun" and report["active"] is True
    assert report["release"] == engine.release.tolist() and len(report["calls"]) == len(engine.observer) == p.sampler.model_wrap_cfg.calls
    # The extension's own time in that run, per hook and in the blend of its model calls (host_speed reads it).
    own = report["own_seconds"]
    assert {"before_process", "decode_map_image", "before_sampling", "end_sampling", "postprocess_image", "postprocess", "before_call", "after_call"} <= set(own)
    assert all(seconds > 0 for seconds in own.values()) and own["decode_map_image"] < own["before_process"]
    assert sum(seconds for part, seconds in own.items() if part != "decode_map_image") < elapsed  # the decoding is inside before_process


# --- preview ----------------------------------------------------------------------------------------


def _blocks_under(root):
    stack = [root]
    while stack:
        block = stack.pop()
        yield block
        stack.extend(getattr(block, "children", []))


def _preview_handler(host: Host):
    button = next(block for block in _blocks_under(host.controls[0].accordion) if block.elem_id == "differential_diffusion_preview_button")
    return button, button.events


def preview_result(answer: tuple) -> tuple[Image.Image | None, str]:
    """The Preview's (image update, error html) as (the image it shows, or None while hidden; error)."""
    update, error = answer
    assert update["__type__"] == "update" and update["visible"] is (update["value"] is not None)
    return update["value"], error


def test_preview_button_runs_on_the_img2img_inputs(host):
    button, events = _preview_handler(host)
    assert button.visible and [event for event, _ in events] == ["click"]
    handler = events[0][1]
    assert handler["inputs"][:6] == [host.host_inputs[name] for name in host.panel.PREVIEW_INPUTS]
    assert handler["inputs"][6:] == host.controls[1:]
    values = [photo(), 64, 64, 10, 0.75, 0]
    image, error = preview_result(handler["fn"](*values, ramp_map(), "map", False, 1.0, 0.0, 0.0, 1.0, True))
    assert error == "" and isinstance(image, Image.Image)
    assert image.height > 0 and image.width > 6 * image.height  # the map panel and the release steps, side by side
    host.shared.opts.img2img_fix_steps = True  # black pixels (strength 0) with fix_steps: no schedule of 0 steps is built
    image, error = preview_result(handler["fn"](*values, ramp_map(), "map", False, 1.0, 0.0, 0.0, 1.0, True))
    assert error == "" and isinstance(image, Image.Image)
    image, error = preview_result(handler["fn"](*values, None, "map", False, 1.0, 0.0, 0.0, 1.0, True))
    assert image is None and "Differential Diffusion: map: " in error
    image, error = preview_result(handler["fn"](*values, ramp_map(), "inpaint mask", False, 1.0, 0.0, 0.0, 1.0, True))
    assert image is None and "Differential Diffusion: source: " in error


def test_preview_makes_the_hosts_temp_dir_it_is_saved_to(host, tmp_path, monkeypatch):
    """gradio saves the returned image into opts.temp_dir, which Neo names but does not create."""
    _, events = _preview_handler(host)
    temp_dir = tmp_path / "data" / "tmp"
    monkeypatch.setattr(host.shared.opts, "temp_dir", str(temp_dir), raising=False)
    image, error = preview_result(events[0][1]["fn"](photo(), 64, 64, 10, 0.75, 0, ramp_map(), "map", False, 1.0, 0.0, 0.0, 1.0, True))
    assert error == "" and isinstance(image, Image.Image)
    assert temp_dir.is_dir()


def test_preview_on_a_forge_canvas_reads_the_canvas_image(host):
    """Forge and Neo: "img2img_image" is the canvas's HTML block; the init image is the hidden
    component of class logical_image_background created right after it (a numpy array or a data URL)."""
    gr = host.gr
    script = host.module.Script()
    with gr.Blocks():
        components = _img2img_inputs(gr)
        html = gr.HTML("<div>canvas</div>", elem_id="img2img_image")
        for elem_id, component in components.items():
            if elem_id == "img2img_image":
                component = html
            script.after_component(component, elem_id=elem_id)
            if elem_id == "img2img_image":
                background = gr.Textbox(elem_id="uuid_0123", elem_classes=["logical_image_background"])
                script.after_component(background, elem_id="uuid_0123", elem_classes=["logical_image_background"])
        controls = script.ui(True)
    button = next(block for block in _blocks_under(controls[0].accordion) if block.elem_id == "differential_diffusion_preview_button")
    handler = button.events[0][1]
    assert handler["inputs"][0] is background
    wide = photo(128, 64)
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    for init in (np.asarray(wide), "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), wide):
        image, error = preview_result(handler["fn"](init, 64, 64, 10, 0.75, 1, ramp_map(), "map", False, 1.0, 0.0, 0.0, 1.0, True))
        assert error == "" and isinstance(image, Image.Image)
    image, error = preview_result(handler["fn"]("<div>canvas</div>", 64, 64, 10, 0.75, 1, ramp_map(), "map", False, 1.0, 0.0, 0.0, 1.0, True))
    assert error == "" and isinstance(image, Image.Image)  # no image yet: the map alone, over the output size


def test_preview_button_hidden_without_the_host_inputs(host):
    script = host.module.Script()  # no after_component calls: the host's layout "changed"
    assert script.ui(False) == []
    with host.gr.Blocks():
        controls = script.ui(True)
    button = next(block for block in _blocks_under(controls[0].accordion) if block.elem_id == "differential_diffusion_preview_button")
    assert button.visible is False and button.events == []


# --- preserve -----------------------------------------------------------------------------------------


def test_batch_tab_map_folder_matches_maps_by_file_name(host, tmp_path):
    """The batch tab reads files itself; each gets the map with its file name, and the tag never stays on the image."""
    from modules import img2img

    inputs, maps = tmp_path / "in", tmp_path / "maps"
    inputs.mkdir()
    maps.mkdir()
    photo(seed=1).save(inputs / "a.png")
    photo(seed=2).save(inputs / "b.png")
    columns(0, 0).save(maps / "a.webp", lossless=True)  # keep everything
    columns(0, 1).save(maps / "b.png")  # keep the left half
    img2img.process_images = host.driver.process_images
    p = make_p(host, ui_values(map=None, map_folder=str(maps)))
    first, second = img2img.process_batch(p, str(inputs), "", "", p.script_args)
    assert np.array_equal(pixels(first.images[0]), np.asarray(Image.open(inputs / "a.png").convert("RGB")))
    left = slice(0, SIZE // 2 - 6)
    assert np.array_equal(pixels(second.images[0])[:, left], np.asarray(Image.open(inputs / "b.png").convert("RGB"))[:, left])
    assert not np.array_equal(pixels(second.images[0]), np.asarray(Image.open(inputs / "b.png").convert("RGB")))
    assert all(module.SOURCE_PATH_INFO_KEY not in image.info for module in [host.adapter] for image in p.init_images)
    assert_no_hook_errors(host)


def test_reloads_leave_one_patch_and_one_set_of_callbacks_and_map_folders_keep_working(host, tmp_path):
    """Reload UI (scripts unload, the host clears callbacks, files run again) and "reload script
    bodies" (files run again): the batch tab's map folder still works after both."""
    from modules import img2img

    counts = {category: len(callbacks) for category, callbacks in host.script_callbacks.callback_map.items()}
    patched = img2img.process_batch
    assert getattr(patched, "_differential_diffusion_original", None) is not None

    host.script_callbacks.script_unloaded_callback()  # Reload UI, first half
    assert getattr(img2img.process_batch, "_differential_diffusion_original", None) is None  # no patch left behind
    host.script_callbacks.clear_callbacks()
    load_script_file()
    assert {category: len(callbacks) for category, callbacks in host.script_callbacks.callback_map.items()} == counts
    load_script_file()  # reload script bodies: no callbacks are cleared by the host
    assert {category: len(callbacks) for category, callbacks in host.script_callbacks.callback_map.items()} == counts
    assert getattr(img2img.process_batch, "_differential_diffusion_original", None) is getattr(patched, "_differential_diffusion_original")

    inputs, maps = tmp_path / "in", tmp_path / "maps"
    inputs.mkdir()
    maps.mkdir()
    photo(seed=3).save(inputs / "a.png")
    columns(0, 1).save(maps / "a.png")
    img2img.process_images = host.driver.process_images
    p = make_p(host, ui_values(map=None, map_folder=str(maps)))
    (processed,) = img2img.process_batch(p, str(inputs), "", "", p.script_args)
    left = slice(0, SIZE // 2 - 6)
    assert np.array_equal(pixels(processed.images[0])[:, left], np.asarray(Image.open(inputs / "a.png").convert("RGB"))[:, left])
    assert_no_hook_errors(host)


def test_batch_tab_map_folder_without_a_match_is_refused(host, tmp_path):
    from modules import img2img

    inputs, maps = tmp_path / "in", tmp_path / "maps"
    inputs.mkdir()
    maps.mkdir()
    photo().save(inputs / "c.png")
    img2img.process_images = host.driver.process_images
    p = make_p(host, ui_values(map=None, map_folder=str(maps)))
    with pytest.raises(Exception) as caught:
        img2img.process_batch(p, str(inputs), "", "", p.script_args)
    assert "Differential Diffusion: map_folder: no map named c.*" in str(caught.value)


def test_preserve_keeps_pixels_too_weak_for_a_sampling_step(host):
    """DDIM at 10 steps gives strength 0.05 no sampling step (t_enc 0): such pixels are never released,
    their latent is the original, and with preserve their pixels are the input's exactly."""
    p, processed = generate(host, ui_values(map=columns(0.05, 1)), sampler_name="DDIM", steps=10, denoising_strength=1.0)
    half = SIZE // 2
    assert np.array_equal(pixels(processed.images[0])[:, : half - 8], host_init_image(host, p)[:, : half - 8])
    assert not np.array_equal(pixels(processed.images[0])[:, half + 8 :], host_init_image(host, p)[:, half + 8 :])


def test_only_masked_preserves_kept_pixels_after_the_crop_is_pasted_back(host):
    """The host resamples the generated crop when pasting it back: kept pixels are exact only after that."""
    init = photo(128, 128, seed=4)
    image_mask = gray(np.pad(np.ones((48, 48)), 40))  # a centred square
    p, processed = generate(host, ui_values(map=columns(0, 1, width=128, height=128)), image_mask=image_mask, mask_blur=0, inpaint_full_res=True, init_images=[init])
    assert p.paste_to is not None
    result, original = pixels(processed.images[0]), pixels(init)
    assert result.shape == original.shape
    assert np.array_equal(result[40:88, 40:58], original[40:88, 40:58])  # inside the mask, map 0
    assert not np.array_equal(result[40:88, 70:88], original[40:88, 70:88])  # inside the mask, map 1
    assert_no_hook_errors(host)


def test_route_guard_is_installed_once_and_refuses_or_replays(host):
    """The ASGI guard wraps /sdapi/v1/img2img once (also after a UI reload): shapes the WebUI would
    drop or crash on get 422 naming "args"; anything else reaches the route with its body intact."""
    import asyncio

    received = []

    async def route_app(scope, receive, send):
        message = await receive()
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    class Route:
        path = "/sdapi/v1/img2img"
        app = staticmethod(route_app)

    app = FakeApp()
    route = Route()
    app.routes.append(route)
    host.adapter.add_routes(None, app)
    host.adapter.add_routes(None, app)  # a UI reload: still one guard
    guarded = route.app
    assert isinstance(guarded, ArgsShapeGuard) and guarded.app is route_app

    def call(body: bytes) -> list:
        chunks = [body[:7], body[7:]]
        sent = []

        async def receive():
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message):
            sent.append(message)

        asyncio.run(guarded({"type": "http", "method": "POST", "path": Route.path, "headers": []}, receive, send))
        return sent

    good = json.dumps({"prompt": "x", "alwayson_scripts": {"Differential Diffusion": {"args": [{"map": "x"}]}}}).encode()
    assert call(good)[0]["status"] == 200 and received == [good]
    refused = call(json.dumps({"alwayson_scripts": {"Differential Diffusion": {"args": None}}}).encode())
    assert refused[0]["status"] == 422 and b"Differential Diffusion: args:" in refused[1]["body"]
    assert received == [good]


# --- strength fan -------------------------------------------------------------------------------------


def _saved_since(host: Host, start: int, suffix: str) -> list[dict]:
    return [entry for entry in host.driver.images.saved[start:] if entry["suffix"] == suffix]


def test_fan_is_the_same_map_drawn_for_you_plus_labelled_copies(host):
    """A fan run is bit for bit the run of its map uploaded; each output gets a labelled copy,
    returned after every image and saved beside it with suffix "-dd-fan"."""
    count, settings = 5, dict(low=0.0, high=1.0)
    saved_before = len(host.driver.images.saved)
    p, fan = generate(host, api={"source": "fan", "fan_count": count, **settings}, batch_size=2, n_iter=2)
    uploaded = fan_map(SIZE, SIZE, count, "vertical bands")
    _, as_map = generate(host, api={"map": uploaded, **settings}, batch_size=2, n_iter=2)
    assert len(fan.images) == 8 and len(fan.infotexts) == 8
    for mine, theirs in zip(fan.latents, as_map.latents):
        assert torch.equal(mine, theirs)
    for index in range(4):
        assert np.array_equal(pixels(fan.images[index]), pixels(as_map.images[index]))
        copy = pixels(fan.images[4 + index])
        assert copy.shape == pixels(fan.images[index]).shape and not np.array_equal(copy, pixels(fan.images[index]))
        assert "DD source: fan" in fan.infotexts[4 + index] and "DD fan count: 5" in fan.infotexts[4 + index]
        assert fan.images[4 + index].info["parameters"] == fan.infotexts[4 + index] == fan.infotexts[index]
    # Region #1 has strength 0: kept, and with preserve it is the input's pixels exactly.
    band = SIZE // count
    assert np.array_equal(pixels(fan.images[0])[:, : band - 4], host_init_image(host, p)[:, : band - 4])
    copies = _saved_since(host, saved_before, "-dd-fan")
    assert [entry["seed"] for entry in copies] == [1, 2, 3, 4]
    suffixes = [entry["suffix"] for entry in host.driver.images.saved[saved_before:]]
    assert suffixes[:8] == ["", "", "", "", "-dd-fan", "-dd-fan", "-dd-fan", "-dd-fan"]  # copies number after their images
    assert [entry["image"] for entry in copies] == fan.images[4:]
    assert len(_saved_since(host, saved_before, "")) == 8  # 4 images per run, each run saving its own
    assert_no_hook_errors(host)


def test_fan_copies_are_not_saved_when_the_run_saves_nothing(host):
    saved_before = len(host.driver.images.saved)
    p = make_p(host, api={"source": "fan", "fan_count": 3, "fan_layout": "radial sectors"})
    p.do_not_save_samples = True  # what the API does unless asked to save
    processed = host.driver.process_images(p)
    assert len(processed.images) == 2 and host.driver.images.saved[saved_before:] == []
    assert_no_hook_errors(host)


@pytest.mark.parametrize("layout", ["vertical bands", "horizontal bands", "radial sectors"])
def test_fan_layouts_release_each_region_by_its_strength(host, layout):
    """Region #1 (strength 0) is kept exactly; each later region is released earlier (changes longer)."""
    count = 4
    p, processed = generate(host, api={"source": "fan", "fan_count": count, "fan_layout": layout}, denoising_strength=1.0, steps=12)
    release = p.differential_diffusion_state_seen.engine.release[0, 0]
    regions = torch.from_numpy(to_latent(fan_map(SIZE, SIZE, count, layout), release.shape)[0, 0].numpy())
    # Latent pixels wholly inside one region (those on a seam average two).
    pure = [torch.unique(release[(regions - value).abs() < 1e-6]) for value in np.linspace(0, 1, count)]
    assert [len(values) for values in pure] == [1] * count and int(pure[0]) == NEVER
    assert all(int(a) > int(b) for a, b in zip(pure, pure[1:])), pure
    change = np.abs(pixels(processed.images[0]).astype(int) - host_init_image(host, p).astype(int)).max(axis=2)
    first_region = fan_map(SIZE, SIZE, count, layout) == 0
    assert (change[first_region] == 0).all() and change[~first_region].mean() > 10
    assert_no_hook_errors(host)


def test_fan_with_only_masked_covers_the_crop_and_labels_only_it(host):
    init = photo(128, 128, seed=4)
    image_mask = gray(np.pad(np.ones((48, 48)), 40))
    p, processed = generate(host, api={"source": "fan", "fan_count": 3}, image_mask=image_mask, mask_blur=0, inpaint_full_res=True, init_images=[init])
    left, top, width, height = p.paste_to
    state = p.differential_diffusion_state_seen
    full = state.strengths[(0, True)].values  # over the whole init image, for preserve after the paste-back
    outside = np.ones(full.shape, dtype=bool)
    outside[top : top + height, left : left + width] = False
    assert full.shape == (128, 128) and (full[outside] == 0).all() and full.max() == 1
    result, copy = pixels(processed.images[0]), pixels(processed.images[1])
    assert np.array_equal(copy[outside], result[outside]) and not np.array_equal(copy, result)
    assert_no_hook_errors(host)


@pytest.mark.parametrize(
    "api, field",
    [({"source": "fan", "fan_count": 2.5}, "fan_count"), ({"source": "fan", "fan_count": 40}, "fan_count"), ({"source": "fan", "fan_layout": "spiral"}, "fan_layout")],
)
def test_bad_fan_arguments_fail_the_generation_with_422(host, api, field):
    with pytest.raises(ValueError) as caught:
        generate(host, api=api)
    assert str(caught.value).startswith(f"Differential Diffusion: {field}: ") and caught.value.status_code == 422
    assert host.adapter.active_run() is None
    assert_no_hook_errors(host)


def _block(host: Host, elem_id: str):
    return next(block for block in _blocks_under(host.controls[0].accordion) if block.elem_id == elem_id)


def test_fan_draw_and_preprocessor_controls_show_for_their_source_only(host):
    groups = [_block(host, f"differential_diffusion_{name}_group") for name in ("map", "fan", "draw", "preprocessor")]
    assert [group.visible for group in groups] == [True, False, False, False]  # the default source: an uploaded map
    assert [block.elem_id for block in groups[0].children] == ["differential_diffusion_map", "differential_diffusion_map_folder"]
    assert any(block.elem_id == "differential_diffusion_draw_editor" for block in groups[2].children)
    drawn_map = host.components["drawn_map"]
    assert drawn_map.visible is True and "differential_diffusion-hidden" in drawn_map.elem_classes  # in the page (gradio 4 too), hidden by CSS
    source = host.components["source"]
    (event, handler), = [(event, handler) for event, handler in source.events if handler["outputs"] == groups]
    assert event == "change" and handler["inputs"] == [source]
    shown = lambda value: tuple(update["visible"] for update in handler["fn"](value))  # noqa: E731
    assert shown("map") == (True, False, False, False) and shown("fan") == (False, True, False, False)
    assert shown("draw") == (False, False, True, False) and shown("preprocessor") == (False, False, False, True)
    assert shown("inpaint mask") == (False, False, False, False)


def test_region_to_apply_follows_the_fan_count(host):
    region, count = _block(host, "differential_diffusion_fan_region"), host.components["fan_count"]
    assert region.maximum == count.value == 4
    (event, handler), = [(event, handler) for event, handler in count.events if handler["outputs"] == [region]]
    assert event == "change" and handler["fn"](7.0) == {"__type__": "update", "maximum": 7}


def test_apply_button_sets_the_region_s_strength_and_turns_the_panel_off(host):
    button = _block(host, "differential_diffusion_fan_apply")
    (event, handler), = button.events
    denoising = host.host_inputs["img2img_denoising_strength"]
    assert event == "click" and handler["outputs"][:2] == [denoising, host.components["enabled"]]
    assert handler["inputs"][:2] == [_block(host, "differential_diffusion_fan_region"), denoising]
    names = ("fan_count", "fan_layout", "invert", "gamma", "low", "high")
    assert handler["inputs"][2:] == [host.components[name] for name in names]
    # 5 regions from 0.2 to 1.0 at slider 0.5: 0.1, 0.2, 0.3, 0.4, 0.5; the labels show the same numbers.
    strength, enabled, note = handler["fn"](3, 0.5, 5, "vertical bands", False, 1.0, 0.2, 1.0)
    assert strength == {"__type__": "update", "value": 0.3} and enabled == {"__type__": "update", "value": False}
    assert "0.30" in note and "#3" in note
    assert fan_denoising_strengths(5, DifferentialDiffusionArgs(low=0.2).map_options(), 0.5)[2] == 0.3
    strength, _, _ = handler["fn"](1, 0.5, 5, "vertical bands", True, 1.0, 0.2, 1.0)  # inverted: region #1 is white
    assert strength["value"] == 0.5
    for region in (0, 6, 2.5, None):
        strength, enabled, note = handler["fn"](region, 0.5, 5, "vertical bands", False, 1.0, 0.2, 1.0)
        assert strength == enabled == {"__type__": "update"} and "Differential Diffusion: fan region: " in note
    strength, _, note = handler["fn"](1, 0.5, 5, "vertical bands", False, 1.0, 0.9, 0.2)
    assert strength == {"__type__": "update"} and "Differential Diffusion: low: " in note


def test_preview_shows_a_fan_without_any_upload(host):
    _, events = _preview_handler(host)
    handler = events[0][1]
    values = dict(zip(POSITIONAL_ORDER[1:], [component.value for component in host.controls[1:]]))
    values.update(map=None, source="fan", fan_count=4, fan_layout="horizontal bands")
    image, error = preview_result(handler["fn"](photo(), 64, 64, 10, 0.75, 0, *values.values()))
    assert error == "" and isinstance(image, Image.Image)
    values.update(source="inpaint mask")
    image, error = preview_result(handler["fn"](photo(), 64, 64, 10, 0.75, 0, *values.values()))
    assert image is None and "Differential Diffusion: source: " in error


def test_fan_in_the_batch_tab_gives_each_input_its_own_copy(host, tmp_path):
    """The batch tab reuses one p for every input file: each run returns its image and one copy, nothing carried over."""
    from modules import img2img

    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed, name in ((1, "a.png"), (2, "b.png"), (3, "c.png")):
        photo(seed=seed).save(inputs / name)
    img2img.process_images = host.driver.process_images
    p = make_p(host, ui_values(map=None, source="fan", fan_count=2))
    results = img2img.process_batch(p, str(inputs), "", "", p.script_args)
    assert [len(result.images) for result in results] == [2, 2, 2]
    for result, name in zip(results, ("a.png", "b.png", "c.png")):
        init = np.asarray(Image.open(inputs / name).convert("RGB"))
        generated, copy = pixels(result.images[0]), pixels(result.images[1])
        assert np.array_equal(generated[:, : SIZE // 2 - 6], init[:, : SIZE // 2 - 6])  # region #1 of this input kept
        assert np.array_equal(copy[:8, : SIZE // 2 - 6], generated[:8, : SIZE // 2 - 6])  # the copy is of this image
    assert_no_hook_errors(host)


# --- tiled upscaling (the SD upscale script) ----------------------------------------------------


def _sd_upscale(host: Host, p, overlap: int) -> Image.Image:
    """scripts/sd_upscale.py run() of v1.10.1 with upscaler "None": tiles of the init image, img2img per batch of tiles, reassembled."""
    from modules import images

    init = images.flatten(p.init_images[0], host.shared.opts.img2img_background_color)
    grid = images.split_grid(init, tile_w=p.width, tile_h=p.height, overlap=overlap)
    work = [tiledata[2] for _y, _h, row in grid.tiles for tiledata in row]
    batch_size = p.batch_size
    results = []
    for i in range(-(-len(work) // batch_size)):
        p.init_images = work[i * batch_size : (i + 1) * batch_size]
        results += host.driver.process_images(p).images
        p.seed += 1
    index = 0
    for _y, _h, row in grid.tiles:
        for tiledata in row:
            tiledata[2] = results[index]
            index += 1
    return images.combine_grid(grid)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_sd_upscale_tiles_take_their_part_of_the_map(host, batch_size):
    """Each tile is its own img2img: it gets the part of the map under it, so the map's black
    left half keeps the (upscaled) input exactly across tiles and overlaps, and the rest changes."""
    init = photo(160, 96, seed=11)
    p = make_p(host, ui_values(map=columns(0, 1, width=80, height=48), preserve=True), init_images=[init], batch_size=batch_size, denoising_strength=0.8, seed=5)
    result = pixels(_sd_upscale(host, p, overlap=16))
    assert result.shape == (96, 160, 3)
    original = pixels(init)
    assert np.array_equal(result[:, :72], original[:, :72])  # up to the ramp into the changed half
    assert (np.abs(result[:, 88:].astype(int) - original[:, 88:]).mean(axis=(0, 2)) > 1).all()
    assert_no_hook_errors(host)


def test_sd_upscale_fan_spans_the_whole_image_without_labelled_tiles(host):
    init = photo(192, 64, seed=12)
    p = make_p(host, ui_values(source="fan", fan_count=3), init_images=[init], denoising_strength=0.8)
    result = pixels(_sd_upscale(host, p, overlap=0))
    original = pixels(init)
    assert np.array_equal(result[:, :60], original[:, :60])  # region #1 (strength 0) is the first third of the whole image
    assert not np.array_equal(result[:, 140:], original[:, 140:])
    assert_no_hook_errors(host)


# --- inpainting models: the map as the model's mask ------------------------------------------------


def test_an_inpainting_model_gets_the_maps_strengths_as_its_mask(host):
    """The mask channel is the map's strengths (before the slider), soft, reduced to the latent by
    the host's own function; the masked image is the init image with the map's share blanked."""
    change_map = ramp_map()
    p, _ = generate(host, ui_values(map=change_map), inpainting_model=True)
    strengths = torch.from_numpy(p.differential_diffusion_state_seen.strengths[(0, False)].values)[None, None]
    assert torch.equal(p.image_conditioning[:, :1], F.interpolate(strengths, size=p.init_latent.shape[-2:]))
    source = torch.from_numpy(host_init_image(host, p).astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    assert torch.equal(p.image_conditioning[:, 1:], host.driver.encode((source * (1 - strengths)) * 0.5 + 0.5))
    mask = p.image_conditioning[:, 0]
    assert float(mask.min()) == 0.0 and bool(((mask > 0) & (mask < 1)).any())  # kept pixels are context; the mask is soft
    assert p.extra_generation_params["DD model mask"] is True
    assert_no_hook_errors(host)


def test_model_mask_off_or_all_white_is_the_hosts_own_conditioning(host):
    p_plain, _ = plain(host, inpainting_model=True)
    assert bool((p_plain.image_conditioning[:, 0] == 1).all())  # the img2img tab: all masked, a blank masked image
    ones, _ = generate(host, ui_values(map=gray(np.ones((SIZE, SIZE)))), inpainting_model=True)
    assert torch.equal(ones.image_conditioning, p_plain.image_conditioning)  # all changing: the host's own all-ones mask
    off, _ = generate(host, ui_values(map=ramp_map(), model_mask=False), inpainting_model=True)
    assert torch.equal(off.image_conditioning, p_plain.image_conditioning)
    assert off.extra_generation_params["DD model mask"] is False
    assert_no_hook_errors(host)


def test_a_model_without_an_inpainting_mask_keeps_its_conditioning_and_infotext(host):
    p, _ = generate(host, ui_values(map=ramp_map()))
    assert torch.equal(p.image_conditioning, torch.zeros(1, 5, 1, 1))
    assert "DD model mask" not in p.extra_generation_params
    assert_no_hook_errors(host)


# --- map source "preprocessor" ------------------------------------------------------------


class FakeParameter:
    def __init__(self, value: float, minimum: float = 0.0, maximum: float = 2048.0) -> None:
        self.value, self.minimum, self.maximum = value, minimum, maximum


class FakePreprocessor:
    """sd-webui-controlnet's Preprocessor as far as the glue uses it (cached_call, sliders, flags)."""

    def __init__(self, function, returns_image: bool = True, requires_mask: bool = False) -> None:
        self.function, self.returns_image, self.requires_mask = function, returns_image, requires_mask
        self.slider_resolution, self.slider_1, self.slider_2 = FakeParameter(512, 64, 2048), FakeParameter(128, 0, 255), FakeParameter(0.5)
        self.calls: list[tuple] = []

    def cached_call(self, image, resolution, slider_1=None, slider_2=None, **_):
        self.calls.append((image.shape, resolution, slider_1, slider_2))
        output = self.function(image, slider_1)
        return types.SimpleNamespace(value=output, display_images=[output])


def threshold(image: np.ndarray, level: float) -> np.ndarray:
    """Bright pixels white, the rest black (3 channels, as ControlNet's preprocessors answer)."""
    return np.repeat(np.where(image.mean(axis=-1, keepdims=True) > level, 255, 0).astype(np.uint8), 3, axis=-1)


def failed_download(image, level):
    """What a host's download helper looks like when it cannot fetch the weights."""
    url = "https://huggingface.co/lllyasviel/Annotators/resolve/main/ZoeD_M12_N.pt"
    cached_file = "/webui/models/ControlNetPreprocessor/zoe/ZoeD_M12_N.pt"
    raise OSError(f"<urlopen error [Errno -2] Name or service not known> ({len(url + cached_file)})")


def missing_weights(image, level):
    raise FileNotFoundError("[Errno 2] No such file or directory: 'extensions/sd-webui-controlnet/annotator/downloads/midas/dpt_hybrid-midas-501f0c75.pt'")


@pytest.fixture
def fake_preprocessors(monkeypatch):
    registry = {
        "none": FakePreprocessor(lambda image, level: image),
        "threshold": FakePreprocessor(threshold),
        "depth_midas": FakePreprocessor(missing_weights),
        "depth_zoe": FakePreprocessor(failed_download),
        "clip_vision": FakePreprocessor(lambda image, level: {"embeds": 0}, returns_image=False),
        "inpaint_only": FakePreprocessor(threshold, requires_mask=True),
        "half_size": FakePreprocessor(lambda image, level: threshold(image, level)[::2, ::2]),
    }
    module = types.ModuleType("scripts.supported_preprocessor")
    module.Preprocessor = types.SimpleNamespace(all_processors=registry)
    monkeypatch.setitem(sys.modules, "scripts.supported_preprocessor", module)
    return registry


def test_preprocessor_names_are_the_hosts_image_makers(host, fake_preprocessors):
    assert host.adapter.preprocessors.names() == ["depth_midas", "depth_zoe", "half_size", "threshold"]  # no "none", no embeddings, no mask-only
    app = FakeApp()
    host.adapter.add_routes(None, app)
    (route,) = [route for route in app.routes if route.path == "/differential-diffusion/v1/schema"]
    assert route.endpoint()["properties"]["preprocessor"]["enum"] == ["depth_midas", "depth_zoe", "half_size", "threshold"]


def test_preprocessor_map_is_the_uploaded_map_of_its_output(host, fake_preprocessors):
    """The run with the preprocessor == the run with its output uploaded as the map: the same
    resize and crop as the init image (here 96x64 cropped to 64x64), the same pixels."""
    init = photo(96, 64, seed=3)
    kwargs = dict(init_images=[init], resize_mode=1, seed=7)
    made = threshold(np.asarray(init), 128)
    p_pre, by_preprocessor = generate(host, ui_values(source="preprocessor", preprocessor="threshold"), **kwargs)
    _, by_upload = generate(host, ui_values(map=Image.fromarray(made)), **kwargs)
    assert fake_preprocessors["threshold"].calls[-1] == ((64, 96, 3), 64, 128, 0.5)  # its own defaults, the image's resolution
    assert torch.equal(by_preprocessor.latents[0], by_upload.latents[0])
    assert np.array_equal(pixels(by_preprocessor.images[0]), pixels(by_upload.images[0]))
    # Its black part is kept exactly.
    strengths = host.adapter.pixel_strengths(p_pre.differential_diffusion_state_seen.args, Geometry(init.size, SIZE, SIZE, 1), user_map=decode_map(made)).values
    kept = strengths == 0
    assert kept.any() and np.array_equal(pixels(by_preprocessor.images[0])[kept], host_init_image(host, p_pre)[kept])
    assert by_preprocessor.infotext_params["DD source"] == "preprocessor" and by_preprocessor.infotext_params["DD preprocessor"] == "threshold"
    assert "DD map hash" not in by_preprocessor.infotext_params
    assert_no_hook_errors(host)


def test_preprocessor_answering_at_its_own_resolution_is_brought_to_the_images_size(host, fake_preprocessors):
    made, used = host.adapter.preprocessors.make_map("half_size", photo(64, 64, seed=2))
    assert used == {"resolution": 64, "slider_1": 128, "slider_2": 0.5}
    assert made.shape == (64, 64, 3) and made.dtype == np.uint8


def test_each_batch_image_gets_its_own_preprocessor_map(host, fake_preprocessors):
    images = [photo(seed=1), photo(seed=2)]
    p, processed = generate(host, ui_values(source="preprocessor", preprocessor="threshold"), init_images=images, batch_size=2)
    maps = p.differential_diffusion_state_seen.image_maps
    assert sorted(maps) == [0, 1]
    for index, image in enumerate(images):
        assert np.array_equal(maps[index].values, threshold(np.asarray(image), 128)[..., 0] / np.float32(255))
    assert not np.array_equal(maps[0].values, maps[1].values)
    assert_no_hook_errors(host)


@pytest.mark.parametrize(
    "name, message",
    [
        ("nonexistent", "unknown preprocessor 'nonexistent' (this WebUI has: depth_midas, depth_zoe, half_size, threshold)"),
        ("depth_zoe", "'depth_zoe' could not make a map: it needs /webui/models/ControlNetPreprocessor/zoe/ZoeD_M12_N.pt (from "
                      "https://huggingface.co/lllyasviel/Annotators/resolve/main/ZoeD_M12_N.pt); OSError: <urlopen error"),
        ("depth_midas", "'depth_midas' could not make a map: FileNotFoundError: [Errno 2] No such file or directory: "
                        "'extensions/sd-webui-controlnet/annotator/downloads/midas/dpt_hybrid-midas-501f0c75.pt'"),
        ("clip_vision", "unknown preprocessor 'clip_vision'"),
        ("", "no preprocessor chosen"),
    ],
)  # fmt: skip
def test_a_preprocessor_that_cannot_make_a_map_fails_the_generation_with_422(host, fake_preprocessors, name, message):
    with pytest.raises(ValueError) as caught:
        generate(host, api={"source": "preprocessor", "preprocessor": name})
    assert str(caught.value).startswith(f"Differential Diffusion: preprocessor: {message}") and caught.value.status_code == 422
    assert host.adapter.active_run() is None
    assert_no_hook_errors(host)


def test_without_preprocessors_the_source_says_so(host):
    assert host.adapter.preprocessors.names() == []
    with pytest.raises(ValueError, match="preprocessor: this WebUI has no preprocessors"):
        generate(host, api={"source": "preprocessor", "preprocessor": "depth_midas"})


def test_pasted_preprocessor_run_comes_back_switched_on(host):
    params = {"Differential Diffusion": "True", "DD source": "preprocessor", "DD preprocessor": "depth_midas", "DD invert": "True"}
    values = values_from_infotext(params)
    assert values["enabled"] is True and values["source"] == "preprocessor" and values["preprocessor"] == "depth_midas" and values["invert"] is True
    assert missing_map_note(params) == ""


def test_xyz_preprocessor_axis_sets_the_source_per_cell(host, xyz, fake_preprocessors):
    host.script_callbacks.before_ui_callback()
    p = make_p(host, ui_values(map=ramp_map()))
    cells = _xyz_cells(xyz, p, "Preprocessor", ["threshold", "half_size"])
    assert [cell.differential_diffusion_overrides for cell in cells] == [
        {"preprocessor": "threshold", "source": "preprocessor"}, {"preprocessor": "half_size", "source": "preprocessor"}]
    assert _axis(xyz, "Preprocessor").choices() == ["depth_midas", "depth_zoe", "half_size", "threshold"]
    _axis(xyz, "Preprocessor").confirm(p, ["threshold"])
    with pytest.raises(ValueError, match="unknown preprocessor 'canny'"):
        _axis(xyz, "Preprocessor").confirm(p, ["threshold", "canny"])
    result = host.driver.process_images(cells[0])
    assert result.infotext_params["DD preprocessor"] == "threshold"
    assert_no_hook_errors(host)


def test_change_background_picks_a_depth_preprocessor_and_inverts(host):
    from differential_diffusion_webui.panel import background_preprocessor

    assert background_preprocessor(["canny", "depth_zoe", "depth_midas"]) == "depth_midas"
    assert background_preprocessor(["canny", "depth_anything_v2", "depth_midas"]) == "depth_anything_v2"
    assert background_preprocessor(["canny", "normal_bae", "my depth"]) == "my depth"
    assert background_preprocessor(["canny"]) is None
    button = _block(host, "differential_diffusion_change_background")
    (event, handler), = button.events
    components = host.components
    assert event == "click" and handler["outputs"] == [components["enabled"], components["source"], components["preprocessor"], components["invert"]]
    assert button.visible is False  # the stand-in host has no depth preprocessor


def test_help_is_in_hover_hints_not_under_every_control(host):
    """The settings table's help reaches the page as hover hints (javascript/differential_diffusion_hints.js
    reads them from a hidden element); no control carries a paragraph of inline help."""
    import html

    holder = _block(host, "differential_diffusion_hints")
    hints = json.loads(html.unescape(re.search(r"data-hints='([^']*)'", holder.value).group(1)))
    assert {setting.elem_id: setting.info for setting in SETTINGS if setting.info}.items() <= hints.items()
    blocks = list(_blocks_under(host.controls[0].accordion))
    assert not [block.elem_id for block in blocks if block.kwargs.get("info")]
    assert "differential_diffusion_fan_apply" in hints and all(hints.values())
