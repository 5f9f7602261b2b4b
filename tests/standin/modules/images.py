"""The stand-in's ``modules/images.py``: v1.10.1's ``resize_image`` and ``flatten``
(kept in ``tests/a1111_images.py``), reading the upscaler option like the host."""

from __future__ import annotations

from PIL import Image

import a1111_images

from modules.shared import opts

LANCZOS = a1111_images.LANCZOS
flatten = a1111_images.flatten


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    return a1111_images.resize_image(resize_mode, im, width, height, upscaler_name or opts.upscaler_for_img2img)


def read(fp, **kwargs):
    """``images.read`` (v1.10.1 also applies ``fix_image``, a mode fix-up irrelevant here)."""
    return Image.open(fp, **kwargs)
