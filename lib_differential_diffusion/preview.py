"""What a map will do, without running the model: released regions step by step.

Uses ``schedule.release_steps``, the function the sampling run uses. Release
steps depend only on the step counts (``t_enc``), not on the sigma values,
unless ``img2img_fix_steps`` is on; the preview then uses an evenly falling
schedule, which places releases to within a step.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .maps import to_latent
from .schedule import NEVER, SigmaLevels, img2img_start, release_steps

PREVIEW_LEVELS = SigmaLevels(lambda steps: torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64))


def pixel_release_steps(strengths: np.ndarray, *, steps: int, strength: float, fix_steps: bool) -> np.ndarray:
    """Release step of every pixel of a (h, w) map for a run at ``strength`` (``NEVER``: kept)."""
    pixel_strengths = torch.from_numpy(np.ascontiguousarray(strengths, dtype=np.float32)).to(torch.float64) * strength
    return release_steps(pixel_strengths, PREVIEW_LEVELS, steps=steps, run_strength=strength, fix_steps=fix_steps).numpy()


def preview_image(
    strengths: np.ndarray,
    *,
    steps: int,
    strength: float,
    fix_steps: bool,
    init_image: Image.Image | None = None,
    frames: int = 6,
    tile: int = 160,
) -> Image.Image:
    """A strip: the map over the image, each pixel's denoising strength (strength x slider,
    white = 1), then the released region at a few steps (white = changing)."""
    full_height, full_width = strengths.shape
    scale = min(1.0, tile / max(full_height, full_width))
    size = (max(1, round(full_width * scale)), max(1, round(full_height * scale)))
    # Work at the size shown: the area average is what a tile pixel stands for.
    strengths = to_latent(strengths, (size[1], size[0]))[0, 0].numpy()
    height, width = strengths.shape
    run_steps = img2img_start(strength, steps, fix_steps).t_enc + 1
    release = pixel_release_steps(strengths, steps=steps, strength=strength, fix_steps=fix_steps)
    shown_steps = sorted({round(i * (run_steps - 1) / max(frames - 1, 1)) for i in range(frames)})

    base = init_image.convert("RGB").resize((width, height), Image.BILINEAR) if init_image is not None else Image.new("RGB", (width, height), (96, 96, 96))
    tint = np.zeros((height, width, 3), dtype=np.float32)
    tint[..., 0] = 255.0
    alpha = (np.clip(strengths, 0.0, 1.0) * 0.6)[..., None]
    overlay = np.asarray(base, dtype=np.float32) * (1 - alpha) + tint * alpha
    effective = np.clip(np.rint(strengths * strength * 255.0), 0, 255).astype(np.uint8)
    panels = [("map over image", Image.fromarray(overlay.astype(np.uint8))), ("strength", Image.fromarray(effective).convert("RGB"))]
    for step in shown_steps:
        released = (release <= step) & (release != NEVER)
        panels.append((f"step {step + 1}/{run_steps}", Image.fromarray((released * 255).astype(np.uint8)).convert("RGB")))

    label_height = 14
    strip = Image.new("RGB", (len(panels) * (size[0] + 4), size[1] + label_height), (32, 32, 32))
    draw = ImageDraw.Draw(strip)
    for index, (label, panel) in enumerate(panels):
        left = index * (size[0] + 4)
        strip.paste(panel.resize(size, Image.NEAREST), (left, label_height))
        draw.text((left + 2, 1), label, fill=(230, 230, 230))
    return strip
