"""Every surface of the WebUI the extension touches, in one table.

Each entry names a host module attribute (a function with the leading
parameters we pass, a class, an option), a script hook, an attribute of the
img2img processing object ``p`` we read or write, an instance patch, a global
patch, an X/Y/Z internal, or a UI element id. ``check_static`` resolves what
can be resolved by importing (inside a host process, or on the test
stand-in); the attributes of ``p`` and the element ids are checked during a
real generation and UI build (``adapter`` records them in test mode). The
real-host drift test asserts that nothing is missing on every host tree, and
CI asserts the same of ``tests/standin``, so the stand-in cannot drift from
the hosts without a test failing.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable


HOSTS = ("a1111", "forge", "reforge", "classic", "neo")
"""The WebUIs of the A1111 family the extension knows: AUTOMATIC1111 (v1.10.1 and dev), Forge
(lllyasviel), reForge (Panchovix), Forge Classic and Forge Neo (Haoming02)."""

FORGE_CANVAS_HOSTS = ("forge", "neo")  # the init image is a ForgeCanvas, not a gr.Image
NOT_CLASSIC = ("a1111", "forge", "reforge", "neo")  # Classic lacks these (name-less callbacks, lib_xyz classes, PIL batch reads)
_ALL = HOSTS
REFINER_BY_STEPS = "the refiner switches by step count; read with a default of off"
# UniPC's sampler function (p.sampler.funcname, a name or a function's __name__), whose steps are never
# skipped: A1111's timestep sampler "unipc"; Neo runs it on sigmas (modules/sd_samplers_extra.sample_unipc).
UNIPC_FUNCTIONS = frozenset({"unipc", "sample_unipc"})


def detect_host(importer: Callable[[str], Any] = importlib.import_module) -> str:
    """Which host this process is, from what it ships (``modules_forge`` and its version string)."""
    try:
        version = str(getattr(importer("modules_forge.forge_version"), "version", ""))
    except ImportError:
        return "a1111"
    if version in ("neo", "classic"):
        return version
    try:
        importer("backend")
        return "forge"
    except ImportError:
        return "reforge"


@dataclass(frozen=True)
class Surface:
    kind: str  # function | class | attribute | option | hook | p | instance patch | global patch | xyz | elem_id | elem_class | module
    name: str  # dotted: module path and attribute ("modules.images.resize_image"), hook name, p attribute, elem id
    params: tuple[str, ...] = ()  # parameters we pass by name or position (functions, hooks)
    why: str = ""
    hosts: tuple[str, ...] = _ALL  # the hosts that have it; on the others the glue does without (see why)


SURFACES: tuple[Surface, ...] = (
    # --- script hooks (modules.scripts.Script) -----------------------------------------
    Surface("class", "modules.scripts.Script", why="the script's base class"),
    Surface("attribute", "modules.scripts.AlwaysVisible", why="an always-on img2img panel"),
    Surface("attribute", "modules.scripts.scripts_data", why="finding the X/Y/Z plot's module"),
    Surface("hook", "after_component", ("component",), "img2img inputs the Preview reads"),
    Surface("hook", "before_process", ("p",), "parse and validate; refuse bad input"),
    Surface("hook", "process", ("p",), "soft inpaint mask (mask_round)"),
    Surface("hook", "process_before_every_sampling", ("p",), "build the engine from x, noise, c, uc; wrap the denoiser"),
    Surface("hook", "on_mask_blend", ("p", "mba"), "take the host's latent mask blend"),
    Surface("hook", "post_sample", ("p", "ps"), "finalize, unwrap"),
    Surface("hook", "postprocess_image", ("p", "pp"), "preserve unchanged pixels"),
    Surface("hook", "postprocess_image_after_composite", ("p", "pp"), "preserve after the only-masked paste-back; fan labels"),
    Surface("hook", "postprocess", ("p", "processed"), "fan copies; drop the run's state"),
    # --- p (StableDiffusionProcessingImg2Img), checked during a generation ----------------
    *(
        Surface("p", name)
        for name in (
            "init_images", "width", "height", "resize_mode", "steps", "denoising_strength", "sampler", "sampler_name",
            "extra_generation_params", "image_mask", "mask_round", "inpainting_mask_invert", "mask_blur_x", "mask_blur_y",
            "inpaint_full_res", "paste_to", "s_min_uncond", "refiner_checkpoint_info", "is_api", "init",
            "batch_index", "iteration", "seeds", "prompts", "all_prompts", "all_seeds", "all_subseeds",
            "outpath_samples", "save_samples", "scripts", "script_args",
        )
    ),  # fmt: skip
    Surface("p", "p.scripts.selectable_scripts", why="the img2img script chosen (p.script_args[0], 1-based; 0 = none)"),
    *(Surface("script", title, why="grows the canvas: only source 'inpaint mask' applies") for title in ("Outpainting mk2", "Poor man's outpainting")),
    Surface("instance patch", "p.sampler.model_wrap_cfg.forward", ("x", "sigma"), "the blend wraps this sampler's CFG denoiser"),
    Surface("instance patch", "p.inpainting_image_conditioning", ("source_image", "latent_image", "image_mask", "round_image_mask"),
            "an inpainting model's mask from the map (called in p.init for models that take one)"),
    Surface("p", "is_using_inpainting_conditioning", why="test report: the model took an inpainting mask"),
    Surface("p", "p.sampler.get_sigmas", ("p", "steps"), "k-diffusion schedule"),
    Surface("p", "p.sampler.get_timesteps", ("p", "steps"), "timestep samplers' schedule (DDIM, PLMS, UniPC)"),
    Surface("p", "p.sampler.funcname", why="Heun/Restart steps end at the next level; UniPC keeps its steps"),
    # --- host functions and options -----------------------------------------------------
    Surface("function", "modules.images.resize_image", ("resize_mode", "im", "width", "height"), "the init image's geometry, for preserve"),
    Surface("function", "modules.images.flatten", ("img", "bgcolor")),
    Surface("function", "modules.images.get_font", ("fontsize",), "fan labels in the host's font"),
    Surface("function", "modules.images.save_image", ("image", "path", "basename", "seed", "prompt", "extension", "info", "p", "suffix")),
    Surface("function", "modules.processing.create_binary_mask", ("image", "round")),
    Surface("function", "modules.processing.create_infotext", ("p", "all_prompts", "all_seeds", "all_subseeds", "comments", "iteration", "position_in_batch")),
    *(
        Surface("function", f"modules.script_callbacks.{name}", ("callback", "name"), hosts=NOT_CLASSIC)
        for name in ("on_ui_settings", "on_before_ui", "on_app_started", "on_script_unloaded")
    ),
    *(
        Surface("function", f"modules.script_callbacks.{name}", ("callback",), "registered without a name", hosts=("classic",))
        for name in ("on_ui_settings", "on_before_ui", "on_app_started", "on_script_unloaded")
    ),
    Surface("function", "modules.script_callbacks.remove_current_script_callbacks", why="script body reloads register afresh"),
    Surface("attribute", "modules.script_callbacks.callback_map", why="test route: registered callbacks per category"),
    Surface("attribute", "modules.shared.state", why="test route: restart the UI (Settings -> Reload UI)"),
    Surface("class", "modules.shared.OptionInfo", ("default", "label", "component", "component_args"), "Settings page defaults"),
    Surface("function", "modules.shared.opts.add_option", ("key", "info")),
    Surface("attribute", "modules.shared.sd_model", why="alphas_cumprod; add_noise_to_latent where the model has one"),
    Surface("p", "p.sampler.model_wrap.predictor.noise_scaling", ("sigma", "noise", "latent_image", "max_denoise"),
            "the img2img start (x + noise sigma, or the flow path for flow models)", hosts=FORGE_CANVAS_HOSTS),
    Surface("attribute", "modules.shared.sd_model.forge_objects", why="alphas_cumprod (the model's own is None)", hosts=FORGE_CANVAS_HOSTS),
    *(
        Surface("option", f"modules.shared.opts.{name}")
        for name in (
            "img2img_fix_steps", "img2img_extra_noise", "skip_early_cond",
            "img2img_background_color", "enable_pnginfo", "samples_format",
        )
    ),  # fmt: skip
    # The option that makes the refiner switch by step count (step skipping would then move the switch).
    Surface("option", "modules.shared.opts.refiner_switch_by_sample_steps", why=REFINER_BY_STEPS, hosts=("a1111", "forge", "reforge")),
    Surface("option", "modules.shared.opts.refiner_use_steps", why=REFINER_BY_STEPS, hosts=("neo",)),
    Surface("option", "modules.shared.opts.temp_dir", why="made before the Preview returns its image: gradio saves it there "
            "(Neo's default, <data dir>/tmp, is not created at start)", hosts=("neo",)),
    Surface("option", "modules.shared.opts.s_min_uncond_all", why="read with a default of off", hosts=NOT_CLASSIC),
    Surface("class", "modules.ui_components.InputAccordion", ("value",)),
    # A1111 has preprocessors only with sd-webui-controlnet (an extension's registry, not the host's:
    # preprocessors.py looks it up when loaded).
    Surface("attribute", "modules_forge.shared.supported_preprocessors", why="map source 'preprocessor': the built-in ones",
            hosts=("forge", "reforge", "classic", "neo")),
    Surface("module", "cv2", why="the host's own mask blur (cv2.GaussianBlur)"),
    # --- global patches, undone on script unload ------------------------------------------
    Surface("global patch", "modules.img2img.process_batch", ("p",), "tag batch-tab inputs with their file path"),
    Surface("global patch", "modules.images.read", ("fp",), "patched only while process_batch runs (Classic reads with PIL: no map folders)",
            hosts=NOT_CLASSIC),
    Surface("global patch", "modules.images.split_grid", ("image", "tile_w", "tile_h", "overlap"), "tag tiles of tiled upscaling with their place"),
    # --- X/Y/Z plot (a script whose module is found through scripts_data) ---------------------
    Surface("xyz", "AxisOptionImg2Img", ("label", "type", "apply"), "the extension's axes", hosts=NOT_CLASSIC),
    Surface("class", "lib_xyz.classes.AxisOptionImg2Img", ("label", "type", "apply"), "Classic's X/Y/Z keeps its classes here", hosts=("classic",)),
    Surface("xyz", "axis_options"),
    # --- UI (checked when the UI is built) --------------------------------------------------
    *(
        Surface("elem_id", name)
        for name in ("img2img_image", "img2img_width", "img2img_height", "img2img_steps", "img2img_denoising_strength", "resize_mode")
    ),
    Surface("elem_class", "logical_image_background", why="the ForgeCanvas's init image, right after img2img_image", hosts=FORGE_CANVAS_HOSTS),
)

P_ATTRIBUTES = tuple(surface.name for surface in SURFACES if surface.kind == "p" and "." not in surface.name)


def of_host(host: str) -> tuple[Surface, ...]:
    """The surfaces the glue uses on ``host``."""
    return tuple(surface for surface in SURFACES if host in surface.hosts)


def refiner_by_steps_options(host: str) -> tuple[str, ...]:
    """The options under which ``host``'s refiner switches by step count (none: it cannot)."""
    return tuple(surface.name.rsplit(".", 1)[1] for surface in of_host(host) if surface.why == REFINER_BY_STEPS)


def elem_ids(host: str) -> tuple[str, ...]:
    return tuple(surface.name for surface in of_host(host) if surface.kind in ("elem_id", "elem_class"))


ELEM_IDS = elem_ids("a1111")


def _resolve(dotted: str, importer: Callable[[str], Any]) -> Any:
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importer(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ImportError(dotted)


def _parameters_missing(function: Any, params: tuple[str, ...]) -> list[str]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []  # builtins without a signature: presence is all we can check
    names = set(signature.parameters)
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in signature.parameters.values()):
        return []  # takes anything by name
    return [name for name in params if name not in names]


def check_static(importer: Callable[[str], Any] = importlib.import_module, xyz_module: Any = None, host: str | None = None) -> dict[str, str]:
    """Problems with the importable surfaces of ``host`` (default: this process's):
    {surface name: what is wrong}; empty when all is there."""
    host = host or detect_host(importer)
    problems: dict[str, str] = {}
    script_class = None
    try:
        script_class = _resolve("modules.scripts.Script", importer)
    except Exception as error:  # noqa: BLE001 - a host without it is exactly what this reports
        problems["modules.scripts.Script"] = f"missing ({type(error).__name__}: {error})"
    for surface in of_host(host):
        try:
            if surface.kind in ("function", "class", "attribute", "option", "module", "global patch"):
                value = _resolve(surface.name, importer)
            elif surface.kind == "hook":
                value = getattr(script_class, surface.name)
            elif surface.kind == "xyz":
                if xyz_module is None:
                    problems[surface.name] = "the X/Y/Z plot script is not loaded"
                    continue
                value = getattr(xyz_module, surface.name)
            else:
                continue  # p attributes and element ids: checked during a run / a UI build
        except Exception as error:  # noqa: BLE001
            problems[surface.name] = f"missing ({type(error).__name__}: {error})"
            continue
        if surface.params and callable(value):
            missing = _parameters_missing(value, surface.params)
            if missing:
                problems[surface.name] = f"takes no parameter(s) {', '.join(missing)}"
    return problems
