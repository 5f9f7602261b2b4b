"""The img2img batch tab: one map per input image, from a folder, matched by file name."""

from __future__ import annotations

import os
from typing import Any, Iterable

from .args import is_empty_image
from .errors import DifferentialDiffusionError

MAP_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


def is_batch_input(path: Any, batch_input: Any) -> bool:
    """Whether ``path`` is one of the batch tab's inputs: under its input folder
    (walked recursively), or one of its uploaded files."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = os.path.abspath(os.fspath(path))
    if isinstance(batch_input, (str, os.PathLike)):
        return path.startswith(os.path.join(os.path.abspath(os.fspath(batch_input)), ""))
    return path in {os.path.abspath(getattr(item, "name", "")) for item in batch_input or ()}


def map_for_batch_image(source_paths: Iterable[str | None], folder: str, fallback: Any) -> Any:
    """The map in ``folder`` named like this batch image (any image extension), like the
    inpaint batch mask folder; ``fallback`` (the uploaded map) when the folder has none."""
    if not folder:
        return fallback
    if not os.path.isdir(folder):
        raise DifferentialDiffusionError("map_folder", f"not a folder: {folder}")
    source = next((path for path in source_paths if path), None)
    if source is None:
        if not is_empty_image(fallback):
            return fallback
        raise DifferentialDiffusionError("map_folder", "maps from a folder need the img2img batch tab (the input image has no file name)")
    stem = os.path.splitext(os.path.basename(source))[0]
    candidates = sorted(name for name in os.listdir(folder) if os.path.splitext(name)[0] == stem and name.lower().endswith(MAP_EXTENSIONS))
    if not candidates:
        if not is_empty_image(fallback):
            return fallback
        raise DifferentialDiffusionError("map_folder", f"no map named {stem}.* in {folder}")
    with open(os.path.join(folder, candidates[0]), "rb") as file:
        return file.read()
