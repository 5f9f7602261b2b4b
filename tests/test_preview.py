"""The preview strip (``lib_differential_diffusion/preview.py``): what it shows is what the run does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib_differential_diffusion.maps import to_latent
from lib_differential_diffusion.preview import PREVIEW_LEVELS, pixel_release_steps, preview_image
from lib_differential_diffusion.schedule import NEVER, img2img_start, release_steps

TILE = 160
LABEL = 14


def ramp(width: int = 320, height: int = 200) -> np.ndarray:
    """Black left quarter, then a ramp to white."""
    x = (np.arange(width, dtype=np.float32) + 0.5) / width
    return np.tile(np.clip((x - 0.25) / 0.75, 0.0, 1.0), (height, 1))


def panels(strip: Image.Image, tile_size: tuple[int, int]) -> list[np.ndarray]:
    width, height = tile_size
    count = (strip.width + 4) // (width + 4)
    pixels = np.asarray(strip.convert("RGB"))
    return [pixels[LABEL : LABEL + height, i * (width + 4) : i * (width + 4) + width] for i in range(count)]


@pytest.mark.parametrize("steps, strength, fix_steps", [(20, 0.75, False), (10, 1.0, False), (30, 0.5, True)])
def test_strip_shows_strengths_and_growing_released_regions(steps, strength, fix_steps):
    strengths = ramp()
    strip = preview_image(strengths, steps=steps, strength=strength, fix_steps=fix_steps, frames=6, tile=TILE)
    tile = (TILE, 100)  # 320x200 scaled to fit 160
    assert strip.height == LABEL + tile[1]
    shown = panels(strip, tile)
    assert len(shown) == 2 + 6
    # The strength panel: each pixel's strength x slider, at the size shown (area average).
    at_tile = to_latent(strengths, (tile[1], tile[0]))[0, 0].numpy()
    assert np.abs(shown[1][..., 0].astype(int) - np.rint(at_tile * strength * 255)).max() <= 1
    # Released regions only grow, and are exactly the pixels the run's release steps free by then.
    released = [panel[..., 0] == 255 for panel in shown[2:]]
    for before, after in zip(released, released[1:]):
        assert (after >= before).all()
    release = pixel_release_steps(at_tile, steps=steps, strength=strength, fix_steps=fix_steps)
    last_step = img2img_start(strength, steps, fix_steps).t_enc
    assert np.array_equal(released[-1], (release <= last_step) & (release != NEVER))
    # White is released by the end, black never (any strength above 0 gets at least the last step, as in A1111).
    assert released[-1][:, -1].all() and not released[-1][:, : tile[0] // 4 - 1].any()


def test_release_steps_are_the_run_s_function():
    """pixel_release_steps is schedule.release_steps (what the sampling run calls), on a map."""
    strengths = ramp(64, 8)
    expected = release_steps(torch.from_numpy(strengths).to(torch.float64) * 0.8, PREVIEW_LEVELS, steps=25, run_strength=0.8, fix_steps=False)
    assert np.array_equal(pixel_release_steps(strengths, steps=25, strength=0.8, fix_steps=False), expected.numpy())


def test_strip_with_an_init_image_tints_it_by_strength():
    strengths = np.zeros((64, 64), np.float32)
    strengths[:, 32:] = 1.0
    init = Image.new("RGB", (64, 64), (0, 0, 255))
    strip = preview_image(strengths, steps=10, strength=0.75, fix_steps=False, init_image=init, tile=64)
    overlay = panels(strip, (64, 64))[0].astype(int)
    assert (overlay[:, :30] == (0, 0, 255)).all()  # strength 0: the image as is
    assert (overlay[:, 34:, 0] > 100).all() and (overlay[:, 34:, 2] < 255).all()  # strength 1: tinted red
