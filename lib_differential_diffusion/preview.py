"""What a map will do, without running the model: released regions step by step.

Uses ``schedule.pixel_release``, the function the sampling run uses. Release
steps depend only on the step counts (``t_enc``), not on the sigma values,
unless ``img2img_fix_steps`` is on; the preview then uses an evenly falling
schedule, which places releases to within a step.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .maps import to_latent
from .schedule import NEVER, PixelRelease, SigmaLevels, img2img_start, pixel_release

PREVIEW_LEVELS = SigmaLevels(lambda steps: torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64))


def map_release(strengths: np.ndarray, *, steps: int, strength: float, fix_steps: bool, smooth: bool = False) -> PixelRelease:
    """``pixel_release`` of every pixel of a (h, w) map for a run at ``strength``."""
    pixel_strengths = torch.from_numpy(np.ascontiguousarray(strengths, dtype=np.float32)).to(torch.float64) * strength
    return pixel_release(pixel_strengths, PREVIEW_LEVELS, steps=steps, run_strength=strength, fix_steps=fix_steps, smooth=smooth)


def pixel_release_steps(strengths: np.ndarray, *, steps: int, strength: float, fix_steps: bool) -> np.ndarray:
    """Release step of every pixel of a (h, w) map for a run at ``strength`` (``NEVER``: kept)."""
    return map_release(strengths, steps=steps, strength=strength, fix_steps=fix_steps).step.numpy()


def released_share(release: PixelRelease, step: int, run_steps: int) -> np.ndarray:
    """How much of each pixel is released in ``step``: 1 from its release step on, its share of the
    model's prediction in the step before (partly released), else 0."""
    release_step = release.step.numpy()
    weight = release.weight.numpy()
    partial_step = np.where(release_step == NEVER, run_steps, release_step) - 1
    return np.where(release_step <= step, 1.0, np.where((weight > 0) & (partial_step == step), weight, 0.0))


def preview_image(
    strengths: np.ndarray,
    *,
    steps: int,
    strength: float,
    fix_steps: bool,
    smooth: bool = False,
    init_image: Image.Image | None = None,
    frames: int = 6,
    tile: int = 160,
) -> Image.Image:
    """A strip: the map over the image, each pixel's denoising strength (strength x slider,
    white = 1), then the released region at a few steps (white = changing; gray: released partly,
    by its share, in the step between two levels)."""
    full_height, full_width = strengths.shape
    scale = min(1.0, tile / max(full_height, full_width))
    size = (max(1, round(full_width * scale)), max(1, round(full_height * scale)))
    # Work at the size shown: the area average is what a tile pixel stands for.
    strengths = to_latent(strengths, (size[1], size[0]))[0, 0].numpy()
    height, width = strengths.shape
    run_steps = img2img_start(strength, steps, fix_steps).t_enc + 1
    release = map_release(strengths, steps=steps, strength=strength, fix_steps=fix_steps, smooth=smooth)
    shown_steps = sorted({round(i * (run_steps - 1) / max(frames - 1, 1)) for i in range(frames)})

    base = init_image.convert("RGB").resize((width, height), Image.BILINEAR) if init_image is not None else Image.new("RGB", (width, height), (96, 96, 96))
    tint = np.zeros((height, width, 3), dtype=np.float32)
    tint[..., 0] = 255.0
    alpha = (np.clip(strengths, 0.0, 1.0) * 0.6)[..., None]
    overlay = np.asarray(base, dtype=np.float32) * (1 - alpha) + tint * alpha
    effective = np.clip(np.rint(strengths * strength * 255.0), 0, 255).astype(np.uint8)
    panels = [("map over image", Image.fromarray(overlay.astype(np.uint8))), ("strength", Image.fromarray(effective).convert("RGB"))]
    for step in shown_steps:
        released = np.rint(released_share(release, step, run_steps) * 255).astype(np.uint8)
        panels.append((f"step {step + 1}/{run_steps}", Image.fromarray(released).convert("RGB")))

    label_height = 14
    strip = Image.new("RGB", (len(panels) * (size[0] + 4), size[1] + label_height), (32, 32, 32))
    draw = ImageDraw.Draw(strip)
    for index, (label, panel) in enumerate(panels):
        left = index * (size[0] + 4)
        strip.paste(panel.resize(size, Image.NEAREST), (left, label_height))
        draw.text((left + 2, 1), label, fill=(230, 230, 230))
    return strip
