"""Per-pixel strengths of a run, and keeping unchanged pixels exactly.

``pixel_strengths`` is the one function that turns the user's source (an
uploaded or drawn map, a fan, the inpaint mask) into each output pixel's
strength as a fraction of the denoising slider; the generation and the
Preview both call it. ``preserve`` puts the input's own pixels back where a
pixel was never released.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageChops, ImageFilter

from .args import DifferentialDiffusionArgs
from .fan import fan_map
from .maps import Geometry, MapValues, align_map, apply_options, keeps_whole_map

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
    user_map: MapValues | np.ndarray | None = None,
    inpaint_mask: np.ndarray | None = None,
    fan_box: tuple[int, int, int, int] | None = None,
    fan_over_init_image: bool = False,
) -> MapValues:
    """Each output pixel's strength before the slider, float32 (height, width) in [0, 1];
    to be read only. It is ``user_map`` itself when nothing changes it (an 8-bit map then
    keeps its stored values, read instead of floats where that is exact).

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
        if isinstance(user_map, MapValues):
            if mask is None and args.map_options().is_identity and keeps_whole_map(user_map.shape, geometry):
                return user_map  # used as it is
            user_map = user_map.values
        source = align_map(user_map, geometry)
    strengths = apply_options(source, args.map_options())
    return MapValues(strengths if mask is None else strengths * mask)


def preserve(generated: Image.Image, original: Image.Image, kept: np.ndarray, *, in_place: bool = False) -> Image.Image:
    """Original pixels where ``kept``, with a short ramp into the generated ones (no seam).
    ``in_place``: write into ``generated`` itself when it is RGB (saves a full-size copy).

    The ramp is 8-bit: the kept mask blurred (at a quarter of the resolution, enough for a
    ramp a few pixels wide) and stretched back. Kept pixels get weight 0 and pixels out of
    the ramp's reach weight 1 exactly (a blur of zeros stays 0), so both stay exact; only
    the ramp itself mixes. The work is confined to the kept pixels' box and the ramp's
    reach, and inside it the ramp is only computed where it mixes (``_regions``): elsewhere
    the original is copied or the generated image left as it is.
    """
    if generated.size != original.size or kept.shape != (generated.height, generated.width):
        return generated
    kept = np.asarray(kept, dtype=bool)
    height, width = kept.shape
    factor = PRESERVE_REDUCE if min(height, width) >= 8 * PRESERVE_REDUCE else 1
    if height % factor or width % factor:  # whole blocks: past the edge, the edge pixels repeated
        kept = np.pad(kept, ((0, -height % factor), (0, -width % factor)), mode="edge")
    counts = _kept_per_block(kept, factor)
    block_rows = np.flatnonzero(counts.any(axis=1))
    if len(block_rows) == 0:
        return generated
    block_columns = np.flatnonzero(counts[block_rows[0] : block_rows[-1] + 1].any(axis=0))
    reach = -(-(int(math.ceil(4 * PRESERVE_FEATHER)) + 2 * factor) // factor)  # the blur's support plus the stretch, in blocks
    # The box, in whole blocks (so its blur equals the whole image's there, and stretching it back
    # is an exact 1:factor scale that any part of it reproduces exactly); it may end up to
    # factor - 1 pixels past the image's edge.
    top, left = max(0, block_rows[0] - reach), max(0, block_columns[0] - reach)
    bottom, right = min(counts.shape[0], block_rows[-1] + 1 + reach), min(counts.shape[1], block_columns[-1] + 1 + reach)
    # The box's mask at 1/factor, as PIL reduces the 0/255 mask: 255 where a block is all kept, 0 where none is.
    block_means = _block_means(factor).take(counts[top:bottom, left:right])
    kept_blocks = Image.fromarray(block_means, "L")
    kept_box = kept[top * factor : bottom * factor, left * factor : right * factor]
    top, left = top * factor, left * factor  # the box's corner in pixels, for the regions below
    blur = PRESERVE_FEATHER / factor  # the ramp's blur, in reduced pixels
    if generated.mode != "RGB":
        result = generated.convert("RGB")
    else:
        result = generated if in_place else generated.copy()
    source = _rgb(original)
    for x0, y0, x1, y1, mixes in _regions(block_means, factor, _blur_reach(blur)):
        # In the image's coordinates, cut at its edge.
        target = (left + x0, top + y0, min(left + x1, width), min(top + y1, height))
        if target[0] >= target[2] or target[1] >= target[3]:
            continue
        weight = None
        if mixes:
            weight = _original_weight(kept_blocks, kept_box[y0:y1, x0:x1], factor, blur, (x0, y0, x1, y1))
            if weight.size != (target[2] - target[0], target[3] - target[1]):  # cut at the image's edge
                weight = weight.crop((0, 0, target[2] - target[0], target[3] - target[1]))
        # Copies where the weight is 255 (or everywhere without one), mixes only the ramp.
        result.paste(source.crop(target), target[:2], weight)
    return result


def _kept_per_block(kept: np.ndarray, factor: int) -> np.ndarray:
    """How many pixels of each factor x factor block of the bool mask (whole blocks) are kept, uint8."""
    as_bytes = kept.view(np.uint8)  # 0/1
    if factor == 1:
        return as_bytes
    height, width = kept.shape
    # A block's rows summed into bytes, then its factor neighbouring bytes read as one unsigned
    # integer: times 0x0101..01, its top byte is their sum (at most factor² < 256, no carry).
    # numpy reduces a short last axis tens of times slower.
    rows = np.add.reduce(as_bytes.reshape(height // factor, factor, width), axis=1, dtype=np.uint8)
    lanes = np.dtype(f"u{factor}")  # factor 2, 4 or 8
    ones = lanes.type(int.from_bytes(b"\x01" * factor, "little"))
    return ((rows.view(lanes) * ones) >> lanes.type(8 * (factor - 1))).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _block_means(factor: int) -> np.ndarray:
    """What PIL's ``reduce(factor)`` makes of a block of 0/255 pixels holding 0, 1, ... factor² 255s
    (asked of PIL itself, so its rounding is the one used)."""
    size = factor * factor
    blocks = np.arange(size)[None, :] < np.arange(size + 1)[:, None]  # row n: n kept pixels
    image = _mask_image(blocks.reshape((size + 1) * factor, factor))
    return np.asarray(image.reduce(factor)).reshape(-1).copy()


PRESERVE_BAND = 64
"""Rows (output pixels) of one band of ``_regions``' classification."""

PRESERVE_MERGE = 16384
"""Output pixels of extra ramp work worth one rectangle fewer (each costs a few PIL calls)."""


def _regions(blocks: np.ndarray, factor: int, blur_reach: int) -> list[tuple[int, int, int, int, bool]]:
    """Rectangles of the box (x0, y0, x1, y1 in output pixels, multiples of ``factor``) where the
    original's weight may not be 0, each with whether its weight mixes (True: compute it) or is
    255 throughout (False: a plain copy of the original). The rest of the box keeps the generated pixels.

    Decided per band of rows and reduced column from the reduced mask ``blocks`` (the block means:
    255 where a block is all kept, 0 where none is), conservatively: a block
    all kept has weight 255; an output pixel's stretched ramp reads the blurred pixels of its
    block and the blocks around it (bilinear, scale 1:factor), and a blurred pixel is 0 when no
    kept block lies within ``blur_reach`` of it (a blur of zeros), so a block with no kept block
    within ``blur_reach + 1`` has weight 0. A band joins the rectangles above it when its runs
    come in the same order (``_joined``).
    """
    band = max(1, PRESERVE_BAND // factor)
    copy = _per_band(blocks, band, np.min) == 255
    # No kept block within blur_reach + 1 (rows around the band, then columns around each column).
    untouched = ~_grown(_per_band(_grown(blocks > 0, blur_reach + 1, axis=0), band, np.max), blur_reach + 1, axis=1)
    kinds = np.where(copy, _COPY, np.where(untouched, _UNTOUCHED, _MIX))
    groups: list[tuple[int, int, list[tuple[int, int, int]]]] = []  # (y0, y1, runs) in reduced pixels
    budget = PRESERVE_MERGE // (factor * factor)
    for index, runs in enumerate(_runs_of_rows(kinds)):
        y0, y1 = index * band, min(blocks.shape[0], (index + 1) * band)
        joined = _joined(groups[-1], (y0, y1, runs), budget) if groups else None
        if joined is not None:
            groups[-1] = joined
        else:
            groups.append((y0, y1, runs))
    return [(x0 * factor, y0 * factor, x1 * factor, y1 * factor, kind == _MIX) for y0, y1, runs in groups for x0, x1, kind in runs if kind != _UNTOUCHED]


def _joined(above: tuple[int, int, list[tuple[int, int, int]]], band: tuple[int, int, list[tuple[int, int, int]]], budget: int) -> tuple[int, int, list[tuple[int, int, int]]] | None:
    """One group of rectangles for both, or None: mixing runs take the span of both (their weight is
    computed), the others what both share (a copy or nothing is only right where it is in both).
    Copy and untouched runs are never neighbours (a mixing run lies between), so the runs still
    tile the row. Worth it when it adds at most ``budget`` reduced pixels of mixing."""
    (top, middle, upper), (_, bottom, lower) = above, band
    if [kind for _, _, kind in upper] != [kind for _, _, kind in lower]:
        return None
    runs = []
    for (a0, a1, kind), (b0, b1, _) in zip(upper, lower):
        runs.append((min(a0, b0), max(a1, b1), kind) if kind == _MIX else (max(a0, b0), min(a1, b1), kind))
    if any(x0 >= x1 for x0, x1, _ in runs):
        return None
    if _mixing(runs, bottom - top) > _mixing(upper, middle - top) + _mixing(lower, bottom - middle) + budget:
        return None
    return top, bottom, runs


def _mixing(runs: list[tuple[int, int, int]], rows: int) -> int:
    """Pixels of mixing runs over ``rows`` rows."""
    return sum(x1 - x0 for x0, x1, kind in runs if kind == _MIX) * rows


def _per_band(values: np.ndarray, band: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """``reduce`` (np.min or np.max) of each column over each band of ``band`` rows: (bands, width)."""
    bands = -(-values.shape[0] // band)
    edge = values[-1:].repeat(bands * band - values.shape[0], axis=0)  # the last band's own last row repeated
    return reduce(np.concatenate((values, edge)).reshape(bands, band, values.shape[1]), axis=1)


_COPY, _UNTOUCHED, _MIX = 0, 1, 2


def _runs_of_rows(kinds: np.ndarray) -> list[list[tuple[int, int, int]]]:
    """Per row of a 2-D array, (start, end, kind) of each run of equal values (one numpy pass for all rows)."""
    width = kinds.shape[1]
    starts: list[list[int]] = [[0] for _ in range(len(kinds))]
    rows, columns = np.nonzero(kinds[:, 1:] != kinds[:, :-1])
    for row, column in zip(rows.tolist(), columns.tolist()):
        starts[row].append(column + 1)
    values = kinds.tolist()
    return [[(start, end, row_values[start]) for start, end in zip(row_starts, row_starts[1:] + [width])] for row_starts, row_values in zip(starts, values)]


def _grown(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Pixels with a True pixel of ``mask`` within ``radius`` along ``axis``, cut at the edges:
    grown by 1, 2, 4, ... (what is grown by a, then by b, is grown by a + b)."""
    grown, step = mask, 1
    while radius > 0:
        shift = min(step, radius)
        head, tail = [slice(None)] * mask.ndim, [slice(None)] * mask.ndim
        head[axis], tail[axis] = slice(None, -shift), slice(shift, None)
        grown = grown.copy()
        grown[tuple(tail)] |= grown[tuple(head)].copy()
        grown[tuple(head)] |= grown[tuple(tail)].copy()
        radius, step = radius - shift, step * 2
    return grown


def _blur_reach(radius: float) -> int:
    """How far PIL's GaussianBlur reads: three box blurs, each of a radius below ``radius`` + 1
    with a partial pixel past it."""
    return 3 * (math.ceil(radius) + 1)


def _original_weight(kept_blocks: Image.Image, kept_pixels: np.ndarray, factor: int, blur: float, rectangle: tuple[int, int, int, int]) -> Image.Image:
    """The original's weight over a rectangle of the box: 255 on kept pixels, else the
    blurred reduced mask stretched back and doubled (falling to 0 where it is below 1/2).

    Exactly that part of blurring and stretching the whole box. The stretch: PIL computes each
    output pixel from its centre, here the same numbers (a 1:factor scale, integer offsets), and
    reads one reduced pixel around it, inside a margin of two. The blur: those pixels are
    blurred from a crop reaching ``_blur_reach`` further (or to the box's edge, as the whole).
    """
    x0, y0, x1, y1 = (value // factor for value in rectangle)
    width, height = kept_blocks.size
    needed = (max(0, x0 - 2), max(0, y0 - 2), min(width, x1 + 2), min(height, y1 + 2))
    reach = _blur_reach(blur)
    read = (max(0, needed[0] - reach), max(0, needed[1] - reach), min(width, needed[2] + reach), min(height, needed[3] + reach))
    blurred = kept_blocks.crop(read).filter(ImageFilter.GaussianBlur(blur))
    blurred = blurred.crop((needed[0] - read[0], needed[1] - read[1], needed[2] - read[0], needed[3] - read[1]))
    inside = (x0 - needed[0], y0 - needed[1], x1 - needed[0], y1 - needed[1])
    if factor == 1:
        ramp = blurred.crop(inside)
    else:
        ramp = blurred.resize((rectangle[2] - rectangle[0], rectangle[3] - rectangle[1]), Image.BILINEAR, box=inside)
    # ramp + ramp: the doubling, clipped at 255 (cheaper than a lookup table through Image.point)
    doubled = ImageChops.add(ramp, ramp)
    return ImageChops.lighter(doubled, _mask_image(kept_pixels)) if kept_pixels.any() else doubled


def _mask_image(mask: np.ndarray) -> Image.Image:
    """A bool mask as an 8-bit image, 255 where True (its bytes 0/1 negated wrap to 0/255)."""
    return Image.fromarray(np.negative(mask.view(np.uint8)), "L")


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
