"""The part of A1111 v1.10.1's ``modules/img2img.py`` ``process_batch`` that scripts see.

For each input file: ``images.read`` (a module attribute lookup at call
time), EXIF transpose, ``p.init_images = [img] * p.batch_size``, then
``process_images``. ``process_images`` is set by the test (the fake driver's).
"""

from __future__ import annotations

import os

from PIL import ImageOps

from modules import images

process_images = None  # the test's driver


def process_batch(p, input, output_dir, inpaint_mask_dir, args, to_scale=False, scale_by=1.0, use_png_info=False, png_info_props=None, png_info_dir=None):
    if isinstance(input, str):
        batch_images = sorted(os.path.join(input, name) for name in os.listdir(input) if name.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")))
    else:
        batch_images = [os.path.abspath(x.name) for x in input]
    results = []
    for image in batch_images:
        img = images.read(image)
        img = ImageOps.exif_transpose(img)
        p.init_images = [img] * p.batch_size
        results.append(process_images(p))
    return results
