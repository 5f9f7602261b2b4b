"""Inpainting checkpoints (9-channel UNet) on the real host: the map's strengths are the model's mask.

The checkpoints are made at test time (``make_inpaint_checkpoint.py``: the UNet's first
convolution widened to 9 channels with seeded weights) from the graded SD1 fixture (on the
Forge family from their SD1.5-layout stand-in) and from the fixtures' small SDXL base (the
hosts that load it: SDXL inpainting is told by the 9 input channels alone).
"""
from __future__ import annotations

import numpy as np
import pytest

from webui.host import MEASUREMENTS, decode_images, images_equal, make_init_image, make_map_image, mean_change, png_b64, post_img2img, response_info
from webui.test_extension import assert_ok, dd, last_run

pytestmark = pytest.mark.webui

SIZE = 64


def generate(server, alwayson=None, **payload):
    extra = {} if alwayson is None else {"alwayson_scripts": alwayson}
    response = assert_ok(post_img2img(server, init_image=make_init_image(SIZE, SIZE), denoising_strength=0.75, prime=True, **extra, **payload))
    (out,) = decode_images(response)
    return out, response


class TestSD1InpaintingCheckpoint:
    label = "SD1"

    @pytest.fixture
    def server(self, sd1_inpaint_server):
        return sd1_inpaint_server

    def test_all_ones_map_is_plain_img2img_with_an_inpainting_checkpoint(self, server):
        plain, _ = generate(server)
        ones, response = generate(server, dd(make_map_image(SIZE, SIZE, kind="constant", high=255)))
        MEASUREMENTS.append(f"{self.label} inpainting checkpoint, plain img2img at 0.75: mean change {mean_change(plain, make_init_image(SIZE, SIZE)):.2f}")
        assert images_equal(plain, ones)
        assert response_info(response)["extra_generation_params"]["DD model mask"] is True

    def test_all_zeros_map_is_the_input_with_an_inpainting_checkpoint(self, server):
        out, _ = generate(server, dd(make_map_image(SIZE, SIZE, kind="constant", high=0)))
        assert images_equal(out, make_init_image(SIZE, SIZE))

    def test_binary_map_is_the_inpaint_tab_with_the_same_mask(self, server):
        """Halves 0 / 255 as a map in the img2img tab == the inpaint tab with that mask (blur 0, masked
        content original, whole picture, source inpaint mask): the same conditioning, the same pixels."""
        halves = make_map_image(SIZE, SIZE, kind="halves", low=0, high=255)
        tab, _ = generate(server, dd(halves))
        inpaint, _ = generate(server, dd(source="inpaint mask"), mask=png_b64(halves), mask_blur=0, inpainting_fill=1, inpaint_full_res=False)
        plain_inpaint, _ = generate(server, mask=png_b64(halves), mask_blur=0, inpainting_fill=1, inpaint_full_res=False)
        MEASUREMENTS.append(f"{self.label} inpainting checkpoint, halves map vs the inpaint tab: mean difference {mean_change(tab, inpaint):.3f}; "
                            f"vs the host's own inpaint without the extension {mean_change(tab, plain_inpaint):.2f}")
        assert images_equal(tab, inpaint)
        # Without the map as the mask the img2img tab's model sees no context (the host's all-ones mask): it differs.
        blind, _ = generate(server, dd(halves, model_mask=False))
        assert not images_equal(blind, inpaint)

    def test_the_model_receives_the_soft_map_as_its_mask(self, server):
        """A ramp map: the mask channel the UNet gets is the map's strengths, reduced to the latent by the
        host (nearest: each 8x8 block's first pixel); with the setting off, the host's own (all ones)."""
        ramp = make_map_image(SIZE, SIZE, kind="ramp")
        _, response = generate(server, dd(ramp))
        received = np.array(last_run(server)["model_mask"], dtype=np.float32)
        expected = (np.asarray(ramp, dtype=np.float32) / 255.0)[::8, ::8]
        assert received.shape == (1, SIZE // 8, SIZE // 8)
        assert np.allclose(received[0], expected, atol=1e-6), (received[0, 0], expected[0])
        _, response = generate(server, dd(ramp, model_mask=False))
        assert response_info(response)["extra_generation_params"]["DD model mask"] is False
        assert np.array_equal(np.array(last_run(server)["model_mask"]), np.ones((1, SIZE // 8, SIZE // 8)))


class TestSDXLInpaintingCheckpoint(TestSD1InpaintingCheckpoint):
    label = "SDXL"

    @pytest.fixture
    def server(self, sdxl_inpaint_server):
        return sdxl_inpaint_server


def test_instruct_pix2pix_keeps_the_hosts_image_conditioning(sd1_edit_server):
    """An image-conditioned model that is not an inpainting one (instruct-pix2pix: the input's latent
    as extra channels, image CFG): the map acts on the sampler only, the conditioning is the host's,
    so the model-mask setting changes nothing and the infotext does not claim it."""
    server = sd1_edit_server
    edit = dict(image_cfg_scale=1.5)  # the host's three-way CFG (text, image, neither) for edit models
    halves = make_map_image(SIZE, SIZE, kind="halves", low=0, high=255)
    plain, _ = generate(server, **edit)
    ones, _ = generate(server, dd(make_map_image(SIZE, SIZE, kind="constant", high=255)), **edit)
    assert images_equal(plain, ones)
    zeros, _ = generate(server, dd(make_map_image(SIZE, SIZE, kind="constant", high=0)), **edit)
    assert images_equal(zeros, make_init_image(SIZE, SIZE))
    on, response = generate(server, dd(halves), **edit)
    off, _ = generate(server, dd(halves, model_mask=False), **edit)
    assert images_equal(on, off)
    assert "DD model mask" not in response_info(response)["extra_generation_params"]
    assert not images_equal(on, plain)
    MEASUREMENTS.append(f"instruct-pix2pix checkpoint, halves map: mean change {mean_change(on, make_init_image(SIZE, SIZE)):.2f} "
                        f"(plain img2img {mean_change(plain, make_init_image(SIZE, SIZE)):.2f})")
