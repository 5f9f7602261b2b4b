"""The host's preprocessors (ControlNet's annotators: depth, line art, canny, ...) as map sources.

Two registries, one shape here (name -> a function of an RGB image):

* the Forge family keeps its built-in ones in ``modules_forge.shared.supported_preprocessors``
  (name -> object called as ``(image, resolution, slider_1, slider_2, slider_3)``);
* A1111 has them with the sd-webui-controlnet extension only: its ``Preprocessor`` registry
  (module ``scripts.supported_preprocessor``, looked up once that extension has loaded it),
  called through ``cached_call`` as its own ``/controlnet/detect`` route calls it.

Every preprocessor runs with its own default parameters, at the image's own resolution (its
shorter side, within the preprocessor's range), so the map lines up with the image pixel for
pixel. Weights are the host's business: a preprocessor downloads them on first use, as in
ControlNet; when that fails the run fails with the preprocessor's name and the host's message.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

import numpy as np
from PIL import Image

from lib_differential_diffusion.errors import DifferentialDiffusionError

CONTROLNET_REGISTRY_MODULE = "scripts.supported_preprocessor"
FORGE_REGISTRY = "modules_forge.shared"
NO_PREPROCESSOR = ("none", "None")  # the registries' "no preprocessor" entries


def _forge_registry() -> dict[str, Any]:
    try:
        found = importlib.import_module(FORGE_REGISTRY).supported_preprocessors
    except (ImportError, AttributeError):
        return {}
    # A preprocessor without a visible resolution works on something else than pixels (CLIP vision, IP-Adapter).
    return {name: found[name] for name in found if name not in NO_PREPROCESSOR and _forge_value(found[name], "slider_resolution", "visible") is not False}


def _controlnet_registry() -> dict[str, Any]:
    module = sys.modules.get(CONTROLNET_REGISTRY_MODULE)
    processors = getattr(getattr(module, "Preprocessor", None), "all_processors", None)
    if not isinstance(processors, dict):
        return {}
    return {label: pre for label, pre in processors.items() if label not in NO_PREPROCESSOR and getattr(pre, "returns_image", True) and not getattr(pre, "requires_mask", False)}


def _forge_value(pre: Any, slider: str, key: str) -> Any:
    return getattr(getattr(pre, slider, None), "gradio_update_kwargs", {}).get(key)


def _run_forge(pre: Any, image: np.ndarray) -> tuple[Any, dict[str, Any]]:
    resolution = _within(min(image.shape[:2]), _forge_value(pre, "slider_resolution", "minimum"), _forge_value(pre, "slider_resolution", "maximum"))
    used = {"resolution": resolution, **{f"slider_{index}": _forge_value(pre, f"slider_{index}", "value") for index in (1, 2, 3)}}
    import torch

    with torch.no_grad():
        return pre(image, **used), used


def _run_controlnet(pre: Any, image: np.ndarray) -> tuple[Any, dict[str, Any]]:
    resolution = _within(min(image.shape[:2]), pre.slider_resolution.minimum, pre.slider_resolution.maximum)
    used = {"resolution": resolution, "slider_1": pre.slider_1.value, "slider_2": pre.slider_2.value}
    return pre.cached_call(image, **used).display_images[0], used


def _within(value: int, low: Any, high: Any) -> int:
    low = int(low) if isinstance(low, (int, float)) else value
    high = int(high) if isinstance(high, (int, float)) else value
    return int(min(max(value, low), high))


Runner = Callable[[np.ndarray], tuple[Any, dict[str, Any]]]


def available() -> dict[str, Runner]:
    """The preprocessors this host has now, by the name the user picks: each a function of an
    RGB uint8 image (height, width, 3), answering its output and the parameters it ran with."""
    runners: dict[str, Runner] = {}
    for name, pre in _forge_registry().items():
        runners[name] = lambda image, pre=pre: _run_forge(pre, image)
    for name, pre in _controlnet_registry().items():
        runners.setdefault(name, lambda image, pre=pre: _run_controlnet(pre, image))
    return runners


def names(runners: dict[str, Runner] | None = None) -> list[str]:
    """The names of ``runners`` (default: this host's), in the order the UI lists them."""
    return sorted(available() if runners is None else runners, key=str.lower)


def check_name(name: str) -> Runner:
    """The runner of ``name``; an error naming the field when this host has no such preprocessor."""
    runners = available()
    if name in runners:
        return runners[name]
    if not runners:
        raise DifferentialDiffusionError(
            "preprocessor", "this WebUI has no preprocessors (A1111 gets them with the sd-webui-controlnet extension; Forge has them built in)"
        )
    raise DifferentialDiffusionError("preprocessor", f"unknown preprocessor {name!r} (this WebUI has: {', '.join(names(runners))})")


def make_map(name: str, init_image: Image.Image) -> tuple[np.ndarray, dict[str, Any]]:
    """The preprocessor's output for ``init_image``, at the image's size (height, width[, 3]), as the
    host returns it (read as gray by the map decoding), and the parameters it ran with."""
    runner = check_name(name)
    image = np.ascontiguousarray(np.asarray(init_image.convert("RGB"), dtype=np.uint8))
    try:
        output, used = runner(image)
    except Exception as error:  # noqa: BLE001 - a missing weight file or a broken preprocessor: said, never a plain run
        wanted = wanted_file(error)
        needs = f" it needs {wanted[0]}" + (f" (from {wanted[1]})" if wanted[1] else "") + ";" if wanted else ""
        raise DifferentialDiffusionError("preprocessor", f"{name!r} could not make a map:{needs} {type(error).__name__}: {error}") from error
    if not isinstance(output, np.ndarray) or output.ndim not in (2, 3) or output.size == 0:
        raise DifferentialDiffusionError("preprocessor", f"{name!r} does not make an image (it returned {type(output).__name__}); choose another")
    if output.shape[:2] != image.shape[:2]:
        output = _resized(output, image.shape[1], image.shape[0])
    if output.ndim == 3 and output.shape[2] not in (1, 3, 4):
        raise DifferentialDiffusionError("preprocessor", f"{name!r} does not make an image ({output.shape[2]} channels); choose another")
    return output, used


# Locals of the hosts' download helpers (modelloader.load_file_from_url, torch.hub.download_url_to_file,
# the annotators' own) that name the file a preprocessor was fetching when it failed.
_FILE_LOCALS = ("cached_file", "dst", "model_path", "file_name", "filename")
_URL_LOCALS = ("url", "remote_model_path", "remote_url")


def wanted_file(error: BaseException) -> tuple[str, str] | None:
    """(file, url) a failed download was for, read from the failing frames' locals (innermost
    first); None when the failure was not a download."""
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame.f_locals)
        traceback = traceback.tb_next
    for local in reversed(frames):
        url = next((str(local[key]) for key in _URL_LOCALS if isinstance(local.get(key), str) and "://" in local[key]), "")
        path = next((str(local[key]) for key in _FILE_LOCALS if isinstance(local.get(key), str) and local[key]), "")
        if url:
            return path or url.rsplit("/", 1)[-1], url
    return None


def _resized(output: np.ndarray, width: int, height: int) -> np.ndarray:
    """A preprocessor that answers at its working resolution, brought to the image's size."""
    if output.dtype != np.uint8:
        raise DifferentialDiffusionError("preprocessor", f"answered {output.shape[1]}x{output.shape[0]} {output.dtype} for a {width}x{height} image")
    channels = output if output.ndim == 2 else output[..., :3]
    return np.asarray(Image.fromarray(np.ascontiguousarray(channels)).resize((width, height), Image.BILINEAR))
