"""The stand-in's ``modules/images.py``: v1.10.1's ``resize_image`` and ``flatten``
(kept in ``tests/a1111_images.py``), reading the upscaler option like the host."""

from __future__ import annotations

from PIL import Image, ImageFont

import a1111_images

from modules.shared import opts

LANCZOS = a1111_images.LANCZOS
flatten = a1111_images.flatten
Grid = a1111_images.Grid
split_grid = a1111_images.split_grid
combine_grid = a1111_images.combine_grid


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    return a1111_images.resize_image(resize_mode, im, width, height, upscaler_name or opts.upscaler_for_img2img)


def read(fp, **kwargs):
    """``images.read`` (v1.10.1 also applies ``fix_image``, a mode fix-up irrelevant here)."""
    return Image.open(fp, **kwargs)


def get_font(fontsize: int):
    """v1.10.1 loads Roboto from its assets; PIL's built-in font stands in for it."""
    try:
        return ImageFont.load_default(size=fontsize)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


saved: list[dict] = []
"""What ``save_image`` was asked to write, in order (nothing touches the disk)."""


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, short_filename=False, no_prompt=False, grid=False, pnginfo_section_name="parameters", p=None, existing_info=None, forced_filename=None, suffix="", save_to_dirs=None):
    saved.append({"image": image, "path": path, "basename": basename, "seed": seed, "prompt": prompt, "extension": extension, "info": info, "suffix": suffix})
    return f"{path}/{seed}{suffix}.{extension}", None
