"""Inpainting checkpoints (9-channel UNet, ``hybrid`` conditioning) on the real host.

The checkpoint is made at test time from the graded fixture (``make_inpaint_checkpoint.py``).
"""
from __future__ import annotations

import pytest

from webui.host import MEASUREMENTS, decode_images, images_equal, make_init_image, make_map_image, mean_change, post_img2img
from webui.test_extension import assert_ok, dd

pytestmark = pytest.mark.webui


def generate(server, map_image=None, **payload):
    extra = {} if map_image is None else {"alwayson_scripts": dd(map_image)}
    (out,) = decode_images(assert_ok(post_img2img(server, init_image=make_init_image(64, 64), denoising_strength=0.75, prime=True, **extra, **payload)))
    return out


def test_all_ones_map_is_plain_img2img_with_an_inpainting_checkpoint(sd1_inpaint_server):
    plain = generate(sd1_inpaint_server)
    ones = generate(sd1_inpaint_server, make_map_image(64, 64, kind="constant", high=255))
    MEASUREMENTS.append(f"inpainting checkpoint, plain img2img at 0.75: mean change {mean_change(plain, make_init_image(64, 64)):.2f}")
    assert images_equal(plain, ones)


def test_all_zeros_map_is_the_input_with_an_inpainting_checkpoint(sd1_inpaint_server):
    assert images_equal(generate(sd1_inpaint_server, make_map_image(64, 64, kind="constant", high=0)), make_init_image(64, 64))
