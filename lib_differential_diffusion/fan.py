"""Strength fan: one generation, the same edit at several strengths side by side.

A fan is a change map made of ``count`` regions with the values
``0, 1/(count-1), ..., 1`` (region 1 = 0): vertical bands left to right,
horizontal bands top to bottom, or radial sectors clockwise from 12 o'clock.
It is then an ordinary map: invert, gamma, blur and low/high apply to it as to
an uploaded one, and each region changes like plain img2img at its strength
times the slider. ``label_fan`` writes each region's number and that strength
on a copy of the output, so the user can read off the one they like.

The fan is drawn in the output's frame (the image being generated), not
aligned from the init image: regions stay equal whatever the resize mode.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .maps import MapOptions, apply_options

FAN_LAYOUTS = ("vertical bands", "horizontal bands", "radial sectors")
MIN_FAN_COUNT = 2
MAX_FAN_COUNT = 16


def fan_regions(width: int, height: int, count: int, layout: str) -> np.ndarray:
    """Region index (0 .. count-1) of every pixel, shape (height, width), judged at pixel centres."""
    x = (np.arange(width, dtype=np.float64) + 0.5) / width
    y = (np.arange(height, dtype=np.float64) + 0.5) / height
    if layout == "vertical bands":
        index = np.broadcast_to(np.floor(x * count)[None, :], (height, width))
    elif layout == "horizontal bands":
        index = np.broadcast_to(np.floor(y * count)[:, None], (height, width))
    elif layout == "radial sectors":
        dx = (np.arange(width) + 0.5 - width / 2.0)[None, :]
        dy = (np.arange(height) + 0.5 - height / 2.0)[:, None]
        clockwise_from_top = np.mod(np.arctan2(dx, -dy), 2.0 * math.pi)
        index = np.floor(clockwise_from_top / (2.0 * math.pi) * count)
    else:
        raise ValueError(f"unknown fan layout {layout!r}")
    return np.clip(index, 0, count - 1).astype(np.int64)


def fan_values(count: int) -> np.ndarray:
    """Map value of each region: evenly spaced from 0 (region 1) to 1 (the last)."""
    return np.linspace(0.0, 1.0, count, dtype=np.float32)


def fan_map(width: int, height: int, count: int, layout: str) -> np.ndarray:
    """The fan as a change map (float32, (height, width), values in [0, 1])."""
    return fan_values(count)[fan_regions(width, height, count, layout)]


def fan_strengths(count: int, options: MapOptions) -> np.ndarray:
    """Each region's strength (before the slider): its value through the map options.

    The same ``apply_options`` as the run, without blur, which only softens the
    seams between regions.
    """
    return apply_options(fan_values(count)[None, :], replace(options, blur=0.0))[0]


def fan_denoising_strengths(count: int, options: MapOptions, slider: float) -> list[float]:
    """Per region, the denoising strength a plain img2img needs to look like it: region
    strength x slider, to two decimals (the host slider's step). Labels show these."""
    return [round(float(strength) * slider, 2) for strength in fan_strengths(count, options)]


def fan_label_points(width: int, height: int, count: int, layout: str) -> list[tuple[float, float]]:
    """Where each region's label goes: the middle of a band, or partway out along a sector's bisector."""
    if layout == "vertical bands":
        return [((i + 0.5) * width / count, height / 2.0) for i in range(count)]
    if layout == "horizontal bands":
        return [(width / 2.0, (i + 0.5) * height / count) for i in range(count)]
    if layout == "radial sectors":
        radius = 0.33 * min(width, height)
        points = []
        for i in range(count):
            angle = (i + 0.5) * 2.0 * math.pi / count
            points.append((width / 2.0 + radius * math.sin(angle), height / 2.0 - radius * math.cos(angle)))
        return points
    raise ValueError(f"unknown fan layout {layout!r}")


def label_fan(
    image: Image.Image,
    *,
    count: int,
    layout: str,
    denoising_strengths: list[float],
    box: tuple[int, int, int, int] | None = None,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont | None = None,
) -> Image.Image:
    """A copy of ``image`` with the fan's seams drawn and each region labelled "#i" over its strength.

    ``denoising_strengths``: per region, from ``fan_denoising_strengths``.
    ``box``: the part of the image the fan covers (inpaint "only masked"), else all of it.
    """
    labelled = image.convert("RGB")
    box = box if box is not None else (0, 0, labelled.width, labelled.height)
    region = labelled.crop(box)  # drawn on alone, so nothing spills out of the box
    width, height = region.size
    draw = ImageDraw.Draw(region, "RGBA")
    line = max(1, round(min(width, height) / 256))
    seam = (255, 255, 255, 160)
    if layout == "vertical bands":
        for i in range(1, count):
            x = i * width / count
            draw.line([(x, 0), (x, height - 1)], fill=seam, width=line)
    elif layout == "horizontal bands":
        for i in range(1, count):
            y = i * height / count
            draw.line([(0, y), (width - 1, y)], fill=seam, width=line)
    else:
        centre = (width / 2.0, height / 2.0)
        reach = math.hypot(width, height)
        for i in range(count):
            angle = i * 2.0 * math.pi / count
            draw.line([centre, (centre[0] + reach * math.sin(angle), centre[1] - reach * math.cos(angle))], fill=seam, width=line)
    if font is None:
        font = ImageFont.load_default()
    for i, (x, y) in enumerate(fan_label_points(width, height, count, layout)):
        text = f"#{i + 1}\n{denoising_strengths[i]:.2f}"
        x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        text_width, text_height = x1 - x0, y1 - y0
        origin = (x - text_width / 2.0 - x0, y - text_height / 2.0 - y0)
        pad = max(2, text_height // 6)
        draw.rectangle(
            [origin[0] + x0 - pad, origin[1] + y0 - pad, origin[0] + x1 + pad, origin[1] + y1 + pad],
            fill=(0, 0, 0, 150),
        )
        draw.multiline_text(origin, text, fill=(255, 255, 255, 255), font=font, align="center")
    labelled.paste(region, box[:2])
    return labelled


def fan_label_font_size(width: int, height: int, count: int, layout: str) -> int:
    """A font size that fits a label in its region: bands get narrow as ``count`` grows."""
    if layout == "vertical bands":
        room = min(width / count / 4.5, height / 10.0)
    elif layout == "horizontal bands":
        room = min(height / count / 3.5, width / 12.0)
    else:
        room = min(width, height) / (count * 1.5 + 10.0)
    return int(max(8, min(40, room)))
