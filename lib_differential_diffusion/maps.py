"""Change maps: decode, align to A1111's img2img geometry, shape, pool to latents.

A change map is a grayscale image: white (1.0) = change fully, black (0.0) =
keep. Everything here works on float32 arrays of shape (height, width) with
values in [0, 1] and is pure: inputs are never modified.

Pipeline (``prepare_map``)::

    decode_map -> align_map -> apply_options -> to_latent

Design decisions, in one place:

* Decoding: luminance by ITU-R 601-2 (0.299 R + 0.587 G + 0.114 B), computed in
  float32 so 16-bit input keeps its precision (8-bit gray stays exactly
  v/255). Alpha multiplies the value, so fully transparent pixels are 0 (no
  change) and half-transparent white is 0.5. Animated images (GIF, WEBP, APNG)
  use their first frame. Images over ``MAX_MAP_PIXELS`` are refused from
  their header, before any pixel is decoded; PIL's own DecompressionBomb
  error is caught too (warning filters are not touched: they are
  process-global and the WebUI is threaded). Only ``MAP_FORMATS`` are opened
  (no EPS/PSD/...). Strings are base64 or data URLs, never paths or URLs to
  fetch. A host that sets ``ImageFile.LOAD_TRUNCATED_IMAGES`` gets PIL's
  partial decode of truncated files; otherwise they are refused.
* Alignment: the map is stretched over the init image, whatever its size or
  aspect (never an error), then given the geometry A1111 gives the init image
  (``modules/images.py: resize_image`` and the "only masked" crop of
  ``StableDiffusionProcessingImg2Img.init``), with the same integer arithmetic.
  The stretch and the mode's resize are composed into one resample per axis
  (same geometry, one blur instead of two).
* Resampling filter: exact area averaging where an axis shrinks, PIL-style
  bilinear (triangle) where it grows or keeps its size. Both use PIL's pixel
  centre convention, so map pixels land where the host's LANCZOS puts the init
  image's pixels; unlike LANCZOS they never overshoot, so a hard 0/1 edge does
  not ring into a halo of extra or missing change. Mode 2's edge fill bands
  are exact copies of the edge row/column, which is what the host's
  zero-height-box resize gives with this filter. Resampled values within
  2**-20 of 1 snap to exactly 1, so white stays full change despite float32
  rounding (black is exact by construction).
* Options apply after alignment, in the order invert -> gamma -> blur ->
  remap, so ``blur`` is measured in output pixels. ``low > high`` is refused:
  use ``invert`` to flip a map.
* Latents: area averaging (exact 8x8 block means when sizes divide), so thin
  lines keep their mass instead of vanishing or aliasing.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import numbers
import operator
import re
from dataclasses import dataclass
from typing import Callable, NoReturn, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DifferentialDiffusionError

MAX_MAP_PIXELS = 8192 * 8192
"""Largest map (and output) accepted, in pixels; checked before decoding."""

MAX_BLUR = 256.0
"""Largest ``MapOptions.blur`` (Gaussian sigma in output pixels)."""

MAP_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""Image formats decoded from bytes; others are refused."""

BLUR_TRUNCATE = 4.0
"""The Gaussian kernel is cut at ``ceil(BLUR_TRUNCATE * sigma)`` pixels."""

MapSource = Union[Image.Image, np.ndarray, bytes, bytearray, memoryview, str]
TapSource = Callable[[int, int], "tuple[np.ndarray, np.ndarray]"]

_FIELD = "map"
_WHITE_SNAP = 2.0**-20  # resampled white may round to 0.99999994; make it 1
_LUMA = (299, 587, 114)  # ITU-R 601-2 weights x 1000; integers keep gray exact
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BASE64_URLSAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _fail(message: str) -> NoReturn:
    raise DifferentialDiffusionError(_FIELD, message)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def decode_map(source: MapSource) -> np.ndarray:
    """Decode a change map to float32 (height, width) in [0, 1].

    ``source`` may be a PIL image (any mode), a numpy array (HxW, HxWx1,
    HxWx2 gray+alpha, HxWx3 RGB, HxWx4 RGBA; uint8, uint16, bool, or float in
    [0, 1]), encoded image bytes, or a str holding base64 or a
    ``data:image/...;base64,`` URL. Raises DifferentialDiffusionError("map",
    ...) for anything else.
    """
    if source is None:
        _fail("no map was given")
    if isinstance(source, Image.Image):
        return _decode_pil(source)
    if isinstance(source, np.ndarray):
        return _decode_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source))
    if isinstance(source, str):
        hint = "; a string map must be base64 image data or a data:image/...;base64 URL"
        return _decode_bytes(_decode_text(source), hint)
    _fail(
        f"unsupported map type {type(source).__name__}; expected a PIL image, "
        "a numpy array, image bytes, or a base64 string / data URL"
    )


def _check_pixels(width: int, height: int) -> None:
    # Refuse empty and oversized images from their dimensions alone, so a
    # decompression bomb is never allocated.
    if width <= 0 or height <= 0:
        _fail(f"image is empty ({width}x{height})")
    if width * height > MAX_MAP_PIXELS:
        _fail(
            f"image is too large ({width}x{height} = {width * height} pixels; "
            f"the limit is {MAX_MAP_PIXELS})"
        )


def _decode_text(text: str) -> bytes:
    # Strings are base64 or data URLs only: never paths or web URLs, which
    # would let an API caller read files or reach the network.
    text = text.strip()
    if not text:
        _fail("is empty")
    if text[:5].lower() == "data:":
        header, comma, text = text.partition(",")
        if not comma:
            _fail("data URL has no ',' before its data")
        media_type, *params = header[5:].split(";")
        media_type = media_type.strip().lower() or "text/plain"
        if not media_type.startswith("image/"):
            _fail(f"data URL media type {media_type!r} is not an image")
        if "base64" not in (p.strip().lower() for p in params):
            _fail("data URL must be base64-encoded (';base64,')")
    return _decode_base64(text)


def _decode_base64(text: str) -> bytes:
    compact = "".join(text.split())  # tolerate line-wrapped base64
    if not compact:
        _fail("base64 data is empty")
    urlsafe = _BASE64.fullmatch(compact) is None
    if urlsafe and _BASE64_URLSAFE.fullmatch(compact) is None:
        _fail(
            "a string map must be base64 image data or a data:image/...;base64 "
            "URL (file paths and web URLs are not accepted)"
        )
    try:
        return base64.b64decode(
            compact + "=" * (-len(compact) % 4),
            altchars=b"-_" if urlsafe else None,
            validate=True,
        )
    except (binascii.Error, ValueError):
        _fail("base64 data is malformed")


def _decode_bytes(data: bytes, hint: str = "") -> np.ndarray:
    if not data:
        _fail("is empty")
    try:
        # Image.open only reads the header; _decode_pil checks the size
        # before any pixel is decoded.
        image = Image.open(io.BytesIO(data), formats=MAP_FORMATS)
    except (DifferentialDiffusionError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own bomb check (a warning escalates to an error under -W error).
        _fail(f"image is too large ({exc})")
    except Image.UnidentifiedImageError:
        _fail(f"is not a readable image (not {', '.join(MAP_FORMATS)}){hint}")
    except Exception as exc:  # PIL raises many types for bad headers
        _fail(f"is not a readable image ({type(exc).__name__}: {exc}){hint}")
    with image:
        return _decode_pil(image)


def _decode_pil(image: Image.Image) -> np.ndarray:
    width, height = image.size
    _check_pixels(width, height)
    # Animated images: use the first frame; restore the caller's frame.
    frame = image.tell()
    try:
        if frame:
            image.seek(0)
        return _decode_array(_pil_to_array(image))
    except (DifferentialDiffusionError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        _fail(f"image is too large ({exc})")
    except Exception as exc:  # truncated / corrupt data surfaces on load
        _fail(f"is not a readable image ({type(exc).__name__}: {exc})")
    finally:
        if frame:
            image.seek(frame)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    # Modes numpy reads directly; everything else is converted by PIL first.
    mode = image.mode
    if mode in ("1", "L", "LA", "RGB", "RGBA", "F") or mode.startswith("I;16"):
        return np.asarray(image)
    if mode == "I":
        values = np.asarray(image)
        # 32-bit integer images come from 16-bit files in older Pillows.
        if values.size and (values.min() < 0 or values.max() > 65535):
            _fail("32-bit integer image has values outside 0..65535")
        return values.astype(np.uint16)
    if mode in ("P", "PA", "RGBa"):
        return np.asarray(image.convert("RGBA"))  # keeps palette transparency
    if mode == "La":
        return np.asarray(image.convert("LA"))
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, RGBX...


def _decode_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        _fail(f"array shape {array.shape} is not HxW, HxWx1, HxWx2, HxWx3 or HxWx4")
    _check_pixels(array.shape[1], array.shape[0])
    full = _full_scale(array)
    if array.ndim == 2:
        return np.divide(array, np.float32(full), dtype=np.float32)  # a new array
    channels = array.shape[2]
    if channels in (2, 4):
        color, alpha = array[:, :, :-1], array[:, :, -1]
    else:
        color, alpha = array, None
    gray = _luminance(color, full)
    if alpha is not None:
        # Transparent = no change; partial alpha scales the change.
        gray *= np.divide(alpha, np.float32(full), dtype=np.float32)
    return gray


def _full_scale(array: np.ndarray) -> float:
    """The value that means white for this dtype; floats are range-checked."""
    kind = array.dtype.kind
    if kind == "b":
        return 1.0
    if kind == "u" and array.dtype.itemsize == 1:
        return 255.0
    if kind == "u" and array.dtype.itemsize == 2:  # any byte order (I;16B)
        return 65535.0
    if kind == "f" and array.dtype.itemsize <= 8:
        low, high = float(array.min()), float(array.max())  # NaN propagates
        if math.isnan(low) or math.isnan(high):
            _fail("array contains NaN")
        if math.isinf(low) or math.isinf(high):
            _fail("array contains infinity")
        if low < 0.0 or high > 1.0:
            _fail(f"float values must lie in [0, 1], got [{low:g}, {high:g}]")
        return 1.0
    _fail(f"unsupported array dtype {array.dtype}; use uint8, uint16, bool, or float in [0, 1]")


def _luminance(color: np.ndarray, full: float) -> np.ndarray:
    """ITU-R 601-2 luma in float32; gray stays gray and white stays exactly 1."""
    if color.shape[2] == 1:  # gray + alpha
        return np.divide(color[:, :, 0], np.float32(full), dtype=np.float32)
    # Integer weights and a single division make 8-bit gray exact (v -> v/255).
    gray = np.multiply(color[:, :, 0], np.float32(_LUMA[0]), dtype=np.float32)
    gray += np.multiply(color[:, :, 1], np.float32(_LUMA[1]), dtype=np.float32)
    gray += np.multiply(color[:, :, 2], np.float32(_LUMA[2]), dtype=np.float32)
    gray /= np.float32(sum(_LUMA) * full)
    return np.clip(gray, 0.0, 1.0, out=gray)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def _real(field: str, value: object) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise DifferentialDiffusionError(field, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise DifferentialDiffusionError(field, f"must be a finite number, got {number}")
    return number


@dataclass(frozen=True)
class MapOptions:
    """How a decoded, aligned map becomes strengths.

    Applied in this order (``apply_options``):

    1. ``invert``: map -> 1 - map.
    2. ``gamma`` (> 0): map -> map ** gamma; > 1 weakens mid-grays, < 1
       strengthens them; 0 and 1 stay put.
    3. ``blur`` (0..MAX_BLUR): Gaussian blur whose standard deviation is
       ``blur`` output pixels, kernel cut at ceil(4 * blur) pixels, edges
       mirrored without repeating the edge pixel ("reflect"). 0 = off.
    4. ``low``/``high`` (0 <= low <= high <= 1): strength = low + (high - low)
       * map, so black becomes ``low`` and white ``high``. low > high is
       refused; use ``invert`` to flip a map.

    The defaults change nothing.
    """

    invert: bool = False
    gamma: float = 1.0
    blur: float = 0.0
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.invert, (bool, np.bool_)):
            raise DifferentialDiffusionError("invert", f"must be true or false, got {self.invert!r}")
        object.__setattr__(self, "invert", bool(self.invert))
        for field in ("gamma", "blur", "low", "high"):
            object.__setattr__(self, field, _real(field, getattr(self, field)))
        if self.gamma <= 0.0:
            raise DifferentialDiffusionError("gamma", f"must be greater than 0, got {self.gamma:g}")
        if not 0.0 <= self.blur <= MAX_BLUR:
            raise DifferentialDiffusionError("blur", f"must be between 0 and {MAX_BLUR:g} pixels, got {self.blur:g}")
        for field in ("low", "high"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise DifferentialDiffusionError(field, f"must be between 0 and 1, got {getattr(self, field):g}")
        if self.low > self.high:
            raise DifferentialDiffusionError(
                "low",
                f"must not exceed high ({self.low:g} > {self.high:g}); use invert to flip the map",
            )

    @property
    def is_identity(self) -> bool:
        return self == MapOptions()


def apply_options(map_hw: np.ndarray, options: MapOptions) -> np.ndarray:
    """Apply ``options`` (invert -> gamma -> blur -> remap) to a (h, w) map.

    Never modifies ``map_hw``; with default options it is returned as is.
    """
    if not isinstance(options, MapOptions):
        raise DifferentialDiffusionError("options", f"must be MapOptions, got {type(options).__name__}")
    result = _as_map(map_hw)
    if options.is_identity:
        return result
    if options.invert:
        result = np.subtract(np.float32(1.0), result, dtype=np.float32)
    if options.gamma != 1.0:
        result = np.power(result, np.float32(options.gamma), dtype=np.float32)
    if options.blur > 0.0:
        result = gaussian_blur(result, options.blur)
    if (options.low, options.high) != (0.0, 1.0):
        # Lerp form: black gives exactly ``low`` and white exactly ``high``.
        low, high = np.float32(options.low), np.float32(options.high)
        scaled = np.multiply(result, high, dtype=np.float32)
        result = np.subtract(np.float32(1.0), result, dtype=np.float32)
        result *= low
        result += scaled
        return np.clip(result, low, high, out=result)
    return np.clip(result, 0.0, 1.0, out=result)


def gaussian_blur(map_hw: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, sigma in pixels, reflect edges (see MapOptions).

    Returns a new array; sigma 0 is a plain copy.
    """
    sigma = MapOptions(blur=sigma).blur  # same validation as the option
    result = _as_map(map_hw)
    if sigma == 0.0:
        return result.copy()
    radius = int(math.ceil(BLUR_TRUNCATE * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    offsets_int = np.arange(-radius, radius + 1)[None, :]
    for axis in (0, 1):
        n = result.shape[axis]

        def taps_for(start: int, stop: int, n: int = n) -> tuple[np.ndarray, np.ndarray]:
            taps = _reflect(np.arange(start, stop)[:, None] + offsets_int, n)
            return taps, np.broadcast_to(kernel, taps.shape)

        result = _apply_taps(result, axis, n, taps_for)
    return _finish(result)


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    # numpy's "reflect" padding (d c b | a b c d | c b a) for any offset.
    if n == 1:
        return np.zeros_like(index, dtype=np.intp)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index < n, index, period - index).astype(np.intp)


# --------------------------------------------------------------------------
# Resampling (shared by alignment and blur)
# --------------------------------------------------------------------------


def _apply_taps(array: np.ndarray, axis: int, n_out: int, taps_for: TapSource) -> np.ndarray:
    """out[i] = sum_k weights[i, k] * array[taps[i, k]] along ``axis``.

    ``taps_for(start, stop)`` gives (taps, weights) for outputs start..stop-1.
    Done as a band of small dense matrix products: one BLAS call per block of
    outputs, reading only the input rows/columns that block needs. Fast for
    narrow filters and wide ones alike (the band just widens).
    """
    shape = (n_out, array.shape[1]) if axis == 0 else (array.shape[0], n_out)
    out = np.empty(shape, dtype=np.float32)
    # Block sizes measured on a 2-core CPU: row passes are memory-bound and
    # like small blocks, column passes like fewer, larger BLAS calls.
    minimum = 4 if axis == 0 else 32
    start, block = 0, minimum
    while start < n_out:
        taps, weights = taps_for(start, min(start + block, n_out))
        rows = taps.shape[0]
        low, high = int(taps.min()), int(taps.max()) + 1
        flat = (np.arange(rows)[:, None] * (high - low) + (taps - low)).ravel()
        dense = np.bincount(flat, weights=np.ravel(weights), minlength=rows * (high - low))
        dense = dense.astype(np.float32).reshape(rows, high - low)
        if axis == 0:
            np.dot(dense, array[low:high], out=out[start : start + rows])
        else:
            out[:, start : start + rows] = array[:, low:high] @ dense.T
        start += rows
        block = min(256, max(minimum, taps.shape[1]))
    return out


def _axis_taps(in_size: int, in0: float, in1: float, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps mapping input span [in0, in1] onto ``out_size`` pixels (PIL centres)."""
    scale = (in1 - in0) / out_size
    if scale > 1.0:
        # Shrinking: exact area average of the input covered by each output.
        edges = in0 + np.arange(out_size + 1) * scale
        edges[-1] = in1
        lo, hi = edges[:-1, None], edges[1:, None]
        first = np.floor(lo).astype(np.intp)
        count = int(np.ceil(hi - first).max())
        taps = first + np.arange(count)[None, :]
        weights = np.clip(np.minimum(taps + 1, hi) - np.maximum(taps, lo), 0.0, None)
        weights /= weights.sum(axis=1, keepdims=True)
        return np.minimum(taps, in_size - 1), weights
    # Growing (or scale 0 for the edge bands): triangle between the two
    # nearest pixel centres, clamped at the edges like PIL's BILINEAR.
    position = in0 + (np.arange(out_size) + 0.5) * scale - 0.5
    left = np.floor(position)
    frac = (position - left)[:, None]
    taps = left.astype(np.intp)[:, None] + np.arange(2)[None, :]
    weights = np.concatenate([1.0 - frac, frac], axis=1)
    return np.clip(taps, 0, in_size - 1), weights


def _resample(array: np.ndarray, box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """Resize the ``box`` (x0, y0, x1, y1, PIL's convention) of ``array`` to width x height."""
    x0, y0, x1, y1 = box
    for axis, (lo, hi, size) in enumerate(((y0, y1, height), (x0, x1, width))):
        if hi - lo == size and float(lo).is_integer():
            # Same size at a whole-pixel offset: a plain crop, no filtering.
            start = int(lo)
            array = array[start : start + size] if axis == 0 else array[:, start : start + size]
            continue
        taps, weights = _axis_taps(array.shape[axis], lo, hi, size)
        array = _apply_taps(array, axis, size, lambda a, b, t=taps, w=weights: (t[a:b], w[a:b]))
    return array


# --------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------


def _positive_int(field: str, value: object) -> int:
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise DifferentialDiffusionError(field, f"must be an integer, got {value!r}") from None
    if number <= 0:
        raise DifferentialDiffusionError(field, f"must be positive, got {number}")
    return number


def _int_tuple(field: str, value: object, length: int) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != length:
        raise DifferentialDiffusionError(field, f"must be {length} integers, got {value!r}")
    try:
        if any(isinstance(v, (bool, np.bool_)) for v in value):
            raise TypeError
        return tuple(operator.index(v) for v in value)
    except TypeError:
        raise DifferentialDiffusionError(field, f"must be {length} integers, got {value!r}") from None


@dataclass(frozen=True)
class _Geometry:
    init_size: tuple[int, int]
    width: int
    height: int
    resize_mode: int
    crop_region: tuple[int, int, int, int] | None


def _check_geometry(
    init_size: object, width: object, height: object, resize_mode: object, crop_region: object
) -> _Geometry:
    init_w, init_h = _int_tuple("init_size", init_size, 2)
    if init_w <= 0 or init_h <= 0:
        raise DifferentialDiffusionError("init_size", f"must be positive, got {init_size!r}")
    width, height = _positive_int("width", width), _positive_int("height", height)
    if width * height > MAX_MAP_PIXELS:
        raise DifferentialDiffusionError("width", f"output {width}x{height} exceeds {MAX_MAP_PIXELS} pixels")
    if isinstance(resize_mode, (bool, np.bool_)) or resize_mode not in (0, 1, 2, 3):
        raise DifferentialDiffusionError("resize_mode", f"must be 0, 1, 2 or 3, got {resize_mode!r}")
    if crop_region is not None:
        x1, y1, x2, y2 = crop_region = _int_tuple("crop_region", crop_region, 4)
        if not (0 <= x1 < x2 <= init_w and 0 <= y1 < y2 <= init_h):
            raise DifferentialDiffusionError(
                "crop_region", f"{crop_region} is not a non-empty box inside the {init_w}x{init_h} init image"
            )
    return _Geometry((init_w, init_h), width, height, int(resize_mode), crop_region)


def align_map(
    map_hw: np.ndarray,
    *,
    init_size: tuple[int, int],
    width: int,
    height: int,
    resize_mode: int,
    crop_region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Give a map the geometry A1111's img2img gives the init image.

    ``init_size`` is the (width, height) of the original init image; the map
    is stretched over it first, whatever the map's own size. Then:

    * ``crop_region`` (x1, y1, x2, y2 in init-image pixels; inpaint "only
      masked"): crop that box, then resize mode 2 ("resize and fill") to
      width x height, as ``processing.py`` does. ``resize_mode`` is ignored.
    * resize_mode 0 (just resize) and 3 (just resize, latent upscale; the host
      resizes the latent bilinearly, which is the same stretch): stretch.
    * 1 (crop and resize): scale to cover, centre, cut the overflow.
    * 2 (resize and fill): scale to fit, centre, fill the bands by stretching
      the edge rows/columns.

    Returns a new float32 (height, width) array in [0, 1].
    """
    geometry = _check_geometry(init_size, width, height, resize_mode, crop_region)
    return _align(_as_map(map_hw), geometry)


def _align(map_hw: np.ndarray, g: _Geometry) -> np.ndarray:
    init_w, init_h = g.init_size
    map_h, map_w = map_hw.shape
    # An init-image box, in map pixels: stretching the map over the init
    # image and then cropping is the same as resampling this box directly.
    x1, y1, x2, y2 = g.crop_region or (0, 0, init_w, init_h)
    box = (x1 * map_w / init_w, y1 * map_h / init_h, x2 * map_w / init_w, y2 * map_h / init_h)
    mode = 2 if g.crop_region else (0 if g.resize_mode == 3 else g.resize_mode)
    result = _resize_image(mode, map_hw, box, (x2 - x1, y2 - y1), g.width, g.height)
    return _finish(np.array(result, dtype=np.float32, order="C"))  # a fresh copy


def _resize_image(
    mode: int,
    map_hw: np.ndarray,
    box: tuple[float, float, float, float],
    image_size: tuple[int, int],
    width: int,
    height: int,
) -> np.ndarray:
    """``modules/images.py: resize_image`` for the image of ``image_size``
    whose pixels are ``box`` of ``map_hw``; same integer arithmetic."""
    im_w, im_h = image_size

    def resize(w: int, h: int) -> np.ndarray:
        return _resample(map_hw, box, w, h)

    if mode == 0:
        return resize(width, height)

    ratio = width / height
    src_ratio = im_w / im_h
    if mode == 1:
        src_w = width if ratio > src_ratio else im_w * height // im_h
        src_h = height if ratio <= src_ratio else im_h * width // im_w
    else:
        src_w = width if ratio < src_ratio else im_w * height // im_h
        src_h = height if ratio >= src_ratio else im_h * width // im_w

    resized = resize(src_w, src_h)
    result = np.zeros((height, width), dtype=np.float32)  # host: black canvas
    _paste(result, resized, width // 2 - src_w // 2, height // 2 - src_h // 2)

    if mode == 2:
        # The host fills the bands with a resize of a zero-height (or width)
        # box on the edge; with our filter that is the edge row/column.
        if ratio < src_ratio:
            fill_height = height // 2 - src_h // 2
            if fill_height > 0:
                _paste(result, _resample(resized, (0, 0, width, 0), width, fill_height), 0, 0)
                bottom = (0, src_h, width, src_h)
                _paste(result, _resample(resized, bottom, width, fill_height), 0, fill_height + src_h)
        elif ratio > src_ratio:
            fill_width = width // 2 - src_w // 2
            if fill_width > 0:
                _paste(result, _resample(resized, (0, 0, 0, height), fill_width, height), 0, 0)
                right = (src_w, 0, src_w, height)
                _paste(result, _resample(resized, right, fill_width, height), fill_width + src_w, 0)
    return result


def _paste(canvas: np.ndarray, tile: np.ndarray, x: int, y: int) -> None:
    """PIL ``paste(tile, box=(x, y))``: anything outside the canvas is cut."""
    h, w = canvas.shape
    th, tw = tile.shape
    cx0, cy0 = max(x, 0), max(y, 0)
    cx1, cy1 = min(x + tw, w), min(y + th, h)
    if cx0 < cx1 and cy0 < cy1:
        canvas[cy0:cy1, cx0:cx1] = tile[cy0 - y : cy1 - y, cx0 - x : cx1 - x]


def _finish(result: np.ndarray) -> np.ndarray:
    """Clip a resampled/blurred map to [0, 1], in place.

    Filter weights sum to 1 only up to float32 rounding, so a white area can
    come out as 0.99999994; white must stay exactly 1 (full change), so
    values within 2**-20 of 1 snap to 1. Black needs no snapping: a weighted
    sum of zeros is exactly 0.
    """
    np.clip(result, 0.0, 1.0, out=result)
    result[result > 1.0 - _WHITE_SNAP] = 1.0
    return result


def _as_map(map_hw: object) -> np.ndarray:
    if not isinstance(map_hw, np.ndarray) or map_hw.ndim != 2 or map_hw.size == 0:
        shape = getattr(map_hw, "shape", None)
        _fail(f"expected a non-empty 2-D array (use decode_map first), got {type(map_hw).__name__} {shape}")
    if map_hw.dtype.kind != "f":  # uint8 here would mean 0..255, not 0..1
        _fail(f"expected a float map in [0, 1] (use decode_map first), got dtype {map_hw.dtype}")
    return map_hw if map_hw.dtype == np.float32 else map_hw.astype(np.float32)


# --------------------------------------------------------------------------
# Latents and the whole pipeline
# --------------------------------------------------------------------------


def to_latent(map_hw: np.ndarray, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Area-average a (h, w) map to a float32 tensor of shape [1, 1, lh, lw].

    When h and w are multiples of lh and lw (the usual x8), every latent
    pixel is the exact mean of its block, so a 1-pixel line becomes 1/8
    instead of vanishing or aliasing. Otherwise torch's adaptive average
    pooling (slightly overlapping bins) is used.
    """
    latent_h, latent_w = _int_tuple("latent_hw", latent_hw, 2)
    if latent_h <= 0 or latent_w <= 0:
        raise DifferentialDiffusionError("latent_hw", f"must be positive, got {latent_hw!r}")
    source = torch.from_numpy(np.ascontiguousarray(_as_map(map_hw)))[None, None]
    latent = F.adaptive_avg_pool2d(source, (latent_h, latent_w))
    # The pooled tensor never shares memory with the map (tested).
    return latent


@dataclass(frozen=True)
class PreparedMap:
    """A map ready for sampling: ``pixels`` (height, width) float32 strengths
    in [0, 1]; ``latent`` [1, 1, lh, lw] float32 (None unless asked for)."""

    pixels: np.ndarray
    latent: torch.Tensor | None = None


def prepare_map(
    source: MapSource,
    options: MapOptions | None = None,
    *,
    init_size: tuple[int, int],
    width: int,
    height: int,
    resize_mode: int,
    crop_region: tuple[int, int, int, int] | None = None,
    latent_hw: tuple[int, int] | None = None,
) -> PreparedMap:
    """decode -> align -> apply_options -> to_latent.

    Options apply after alignment, so ``blur`` is in output pixels. The
    geometry is validated before the (possibly large) map is decoded.
    """
    options = MapOptions() if options is None else options
    if not isinstance(options, MapOptions):
        raise DifferentialDiffusionError("options", f"must be MapOptions, got {type(options).__name__}")
    geometry = _check_geometry(init_size, width, height, resize_mode, crop_region)
    if latent_hw is not None:
        _int_tuple("latent_hw", latent_hw, 2)
    pixels = apply_options(_align(decode_map(source), geometry), options)
    latent = None if latent_hw is None else to_latent(pixels, latent_hw)
    return PreparedMap(pixels=pixels, latent=latent)
