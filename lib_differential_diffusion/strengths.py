"""Per-pixel strengths of a run, and keeping unchanged pixels exactly.

``pixel_strengths`` is the one function that turns the user's source (an
uploaded or drawn map, a fan, the inpaint mask) into each output pixel's
strength as a fraction of the denoising slider; the generation and the
Preview both call it. ``preserve`` puts the input's own pixels back where a
pixel was never released.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from .args import DifferentialDiffusionArgs
from .fan import fan_map
from .maps import Geometry, align_map, apply_options

PRESERVE_FEATHER = 4.0
"""Width, in output pixels, of the ramp from kept to generated pixels around
zero-strength regions when unchanged pixels are preserved."""
PRESERVE_REDUCE = 4  # the ramp's blur runs at 1/4 of the resolution


def fan_over(size: tuple[int, int], args: DifferentialDiffusionArgs, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The fan in the output's frame: over the whole image of ``size``, or inside ``box`` of it
    (inpaint "only masked": the crop box, where the generated image lands)."""
    if box is None:
        return fan_map(size[0], size[1], args.fan_count, args.fan_layout)
    canvas = np.zeros((size[1], size[0]), dtype=np.float32)
    left, top, right, bottom = box
    canvas[top:bottom, left:right] = fan_map(right - left, bottom - top, args.fan_count, args.fan_layout)
    return canvas


def pixel_strengths(
    args: DifferentialDiffusionArgs,
    geometry: Geometry,
    *,
    user_map: np.ndarray | None = None,
    inpaint_mask: np.ndarray | None = None,
    fan_box: tuple[int, int, int, int] | None = None,
    fan_over_init_image: bool = False,
) -> np.ndarray:
    """Each output pixel's strength before the slider, float32 (height, width) in [0, 1].

    ``user_map`` (decoded, any size) gets the init image's ``geometry``; ``inpaint_mask``
    is the host's processed mask, already in the output's frame. A fan is drawn in the
    output's frame (``fan_box``: only inside that box), or, with ``fan_over_init_image``,
    over the init image like a map (tiles of an upscale each take their part of one fan).
    The map options apply to the source; the inpaint mask then multiplies it, unless the
    mask is the source.
    """
    mask = inpaint_mask
    if args.source == "inpaint mask":
        source, mask = mask, None
    elif args.source == "fan" and fan_over_init_image:
        source = align_map(fan_over(geometry.init_size, args), geometry)
    elif args.source == "fan":
        source = fan_over((geometry.width, geometry.height), args, fan_box)
    else:
        source = align_map(user_map, geometry)
    strengths = apply_options(source, args.map_options())
    return strengths if mask is None else strengths * mask


def preserve(generated: Image.Image, original: Image.Image, kept: np.ndarray) -> Image.Image:
    """Original pixels where ``kept``, with a short ramp into the generated ones (no seam).

    The ramp is 8-bit: the kept mask blurred (at a quarter of the resolution, enough for a
    ramp a few pixels wide) and stretched back. Kept pixels get weight 0 and pixels out of
    the ramp's reach weight 1 exactly (a blur of zeros stays 0), so both stay exact; only
    the ramp itself mixes. The work is confined to the kept pixels' box and the ramp's reach.
    """
    if generated.size != original.size or kept.shape != (generated.height, generated.width):
        return generated
    rows, columns = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    if len(rows) == 0:
        return generated
    height, width = kept.shape
    factor = PRESERVE_REDUCE if min(height, width) >= 8 * PRESERVE_REDUCE else 1
    reach = int(math.ceil(4 * PRESERVE_FEATHER)) + 2 * factor  # the blur's support, plus the stretch
    # The box, on the reduced grid so its blur equals the whole image's there.
    top, left = max(0, rows[0] - reach) // factor * factor, max(0, columns[0] - reach) // factor * factor
    bottom, right = min(height, rows[-1] + 1 + reach), min(width, columns[-1] + 1 + reach)
    box = (left, top, right, bottom)
    kept_box = kept[top:bottom, left:right]
    box_factor = factor if min(kept_box.shape) >= 2 * factor else 1
    # In whole reduced pixels (padded with the edge's values), so stretching back is an exact
    # 1:factor scale: a partial last block would shift the ramp by up to factor/2 pixels.
    padded = np.pad(kept_box, ((0, -kept_box.shape[0] % box_factor), (0, -kept_box.shape[1] % box_factor)), mode="edge")
    kept_image = Image.fromarray(padded.astype(np.uint8) * 255, "L")
    small = kept_image.reduce(box_factor) if box_factor > 1 else kept_image
    near_kept = small.filter(ImageFilter.GaussianBlur(PRESERVE_FEATHER / box_factor))
    if box_factor > 1:
        near_kept = near_kept.resize(kept_image.size, Image.BILINEAR)
    # Weight of the original: 1 on kept pixels, falling to 0 where the blurred mask is below 1/2.
    original_weight = ImageChops.lighter(near_kept.point(_DOUBLED), kept_image)
    if padded.shape != kept_box.shape:
        original_weight = original_weight.crop((0, 0, kept_box.shape[1], kept_box.shape[0]))
    result = generated.copy() if generated.mode == "RGB" else generated.convert("RGB")
    # One masked paste: copies where the weight is 255, skips 0, mixes only the ramp.
    result.paste(_rgb(original).crop(box), box[:2], original_weight)
    return result


_DOUBLED = [min(255, 2 * value) for value in range(256)]  # a lookup table for Image.point


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
