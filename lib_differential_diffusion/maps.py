"""Change maps: decode, align to A1111's img2img geometry, shape, pool to latents.

A change map is a grayscale image: white (1.0) = change fully, black (0.0) =
keep. Everything here works on float32 arrays of shape (height, width) with
values in [0, 1] and is pure: inputs are never modified. Option values come
checked from ``args.DifferentialDiffusionArgs`` (the settings table).

Pipeline::

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
  The stretch and the mode's resize are composed into one PIL resample per
  axis (a float "F" image and a fractional source box: same geometry, one
  blur instead of two).
* Resampling filter: PIL's BOX where an axis shrinks (area averaging, exact
  block means for whole factors), BILINEAR where it grows. Both use PIL's
  pixel centres, so map pixels land where the host's LANCZOS puts the init
  image's pixels; unlike LANCZOS they never overshoot, so a hard 0/1 edge does
  not ring into a halo of extra or missing change. Mode 2's edge fill bands
  are copies of the edge row/column, which is what the host's zero-height-box
  resize gives. Resampled values within 2**-20 of 1 snap to exactly 1, so
  white stays full change despite float32 rounding (black is exact: a
  weighted sum of zeros is 0).
* Options apply after alignment, in the order invert -> gamma -> blur ->
  remap, so ``blur`` is measured in output pixels.
* Latents: area averaging (exact 8x8 block means when sizes divide), so thin
  lines keep their mass instead of vanishing or aliasing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
from dataclasses import dataclass
from typing import NoReturn, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DifferentialDiffusionError

MAX_MAP_PIXELS = 8192 * 8192
"""Largest map (and output) accepted, in pixels; checked before decoding."""

MAP_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""Image formats decoded from bytes; others are refused."""

BLUR_TRUNCATE = 4.0
"""The Gaussian kernel is cut at ``ceil(BLUR_TRUNCATE * sigma)`` pixels."""

MapSource = Union[Image.Image, np.ndarray, bytes, bytearray, memoryview, str]

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
    return _decode_array(source_pixels(source))


def decode_map_and_hash(source: MapSource) -> tuple[MapValues, str]:
    """``decode_map`` (as ``MapValues``: 8-bit gray pixels decode when first read) and a short hash
    of the map's pixels as stored (8/16-bit values or floats, with their shape): the same picture
    hashes alike whether it came as a PIL image, PNG bytes or base64. Hashing the stored values,
    not the float map, reads a quarter of the bytes for 8-bit."""
    pixels = source_pixels(source)
    decoded = MapValues.decoded(pixels)  # checks the array first
    digest = hashlib.sha256(f"{pixels.dtype.str}{pixels.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    return decoded, digest.hexdigest()[:10]


def source_pixels(source: MapSource) -> np.ndarray:
    """The map's pixels as stored (before scaling to [0, 1] and reducing colour to gray): the
    image decoding of ``decode_map``, which takes its result as it is (an array is a source)."""
    if source is None:
        _fail("no map was given")
    if isinstance(source, Image.Image):
        return _pil_pixels(source)
    if isinstance(source, np.ndarray):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _bytes_pixels(bytes(source))
    if isinstance(source, str):
        hint = "; a string map must be base64 image data or a data:image/...;base64 URL"
        return _bytes_pixels(_decode_text(source), hint)
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


def _bytes_pixels(data: bytes, hint: str = "") -> np.ndarray:
    if not data:
        _fail("is empty")
    try:
        # Image.open only reads the header; _pil_pixels checks the size
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
        return _pil_pixels(image)


def _pil_pixels(image: Image.Image) -> np.ndarray:
    width, height = image.size
    _check_pixels(width, height)
    # Animated images: use the first frame; restore the caller's frame.
    frame = image.tell()
    try:
        if frame:
            image.seek(0)
        return _pil_to_array(image)
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
    if array.ndim == 2:  # a new array; converted, then divided in place (the same float32 numbers, faster)
        values = array.astype(np.float32)
        values /= np.float32(full)
        return values
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


@dataclass(frozen=True)
class MapOptions:
    """How a decoded, aligned map becomes strengths (values checked by the args model).

    Applied in this order (``apply_options``):

    1. ``invert``: map -> 1 - map.
    2. ``gamma`` (> 0): map -> map ** gamma; > 1 weakens mid-grays, < 1
       strengthens them; 0 and 1 stay put.
    3. ``blur``: Gaussian blur whose standard deviation is ``blur`` output
       pixels, kernel cut at ceil(4 * blur) pixels, edges mirrored without
       repeating the edge pixel ("reflect"). 0 = off.
    4. ``low``/``high`` (0 <= low <= high <= 1): strength = low + (high - low)
       * map, so black becomes ``low`` and white ``high``.

    The defaults change nothing.
    """

    invert: bool = False
    gamma: float = 1.0
    blur: float = 0.0
    low: float = 0.0
    high: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self == MapOptions()


def apply_options(map_hw: np.ndarray, options: MapOptions) -> np.ndarray:
    """Apply ``options`` (invert -> gamma -> blur -> remap) to a (h, w) map.

    Never modifies ``map_hw``; with default options it is returned as is.
    """
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

    Two 1-D convolutions (torch); direct summation, so pixels farther than the
    kernel from any non-zero pixel stay exactly 0. Returns a new array.
    """
    result = _as_map(map_hw)
    if sigma <= 0.0:
        return result.copy()
    radius = int(math.ceil(BLUR_TRUNCATE * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = torch.from_numpy((kernel / kernel.sum()).astype(np.float32))
    blurred = torch.from_numpy(np.ascontiguousarray(result))[None, None]
    for axis in (2, 3):
        n = blurred.shape[axis]
        # Reflect padding of any width (torch's own refuses pads >= the size).
        taps = torch.from_numpy(_reflect(np.arange(-radius, n + radius), n))
        padded = blurred.index_select(axis, taps)
        weights = kernel.reshape((1, 1, -1, 1) if axis == 2 else (1, 1, 1, -1))
        blurred = F.conv2d(padded, weights)
    return _finish(blurred[0, 0].numpy().copy())


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    # numpy's "reflect" padding (d c b | a b c d | c b a) for any offset.
    if n == 1:
        return np.zeros_like(index, dtype=np.int64)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index < n, index, period - index).astype(np.int64)


# --------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Where img2img puts the init image in the output: A1111's ``resize_image``
    for ``resize_mode`` or, for inpaint "only masked", ``crop_region`` (x1, y1,
    x2, y2 in init-image pixels) resized and filled to width x height."""

    init_size: tuple[int, int]
    width: int
    height: int
    resize_mode: int = 0
    crop_region: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        init_w, init_h = self.init_size
        if min(init_w, init_h, self.width, self.height) <= 0:
            raise DifferentialDiffusionError("size", f"init image {init_w}x{init_h} and output {self.width}x{self.height} must not be empty")
        if self.width * self.height > MAX_MAP_PIXELS:
            raise DifferentialDiffusionError("size", f"output {self.width}x{self.height} exceeds {MAX_MAP_PIXELS} pixels")
        if self.resize_mode not in (0, 1, 2, 3):
            raise DifferentialDiffusionError("resize_mode", f"must be 0, 1, 2 or 3, got {self.resize_mode!r}")
        if self.crop_region is not None:
            x1, y1, x2, y2 = self.crop_region
            if not (0 <= x1 < x2 <= init_w and 0 <= y1 < y2 <= init_h):
                raise DifferentialDiffusionError("crop_region", f"{self.crop_region} is not a non-empty box inside the {init_w}x{init_h} init image")

    @property
    def image_resize_mode(self) -> int:
        """The ``resize_image`` mode of the init image's pixels: mode 3 (latent upscale)
        resizes the latent bilinearly, which is the same stretch as mode 0."""
        return 0 if self.resize_mode == 3 else self.resize_mode

    @property
    def frame(self) -> tuple[int, int, int, int]:
        """The box of the output inside which the init image's content lies (the crop for "only masked")."""
        return self.crop_region if self.crop_region is not None else (0, 0, self.width, self.height)


def align_map(map_hw: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Give a map the geometry A1111's img2img gives the init image.

    The map is stretched over the init image first, whatever its own size.
    Then: ``crop_region`` crops that box and fits it like resize mode 2
    ("resize and fill"), as ``processing.py`` does; otherwise mode 0 (and 3)
    stretch, 1 scales to cover and cuts the overflow, 2 scales to fit and
    fills the bands by stretching the edge rows/columns.

    Returns a float32 (height, width) array in [0, 1]: a new one, or, when the geometry asks
    for no resampling (the whole float32 map at its own size), ``map_hw`` itself, to be read
    only (a full-size copy would cost more than the rest of a generation's map work).
    """
    map_hw = _as_map(map_hw)
    if keeps_whole_map(map_hw.shape, geometry):
        return map_hw
    mode, box, image_size = _source_box(map_hw.shape, geometry)
    result = _resize_image(mode, map_hw, box, image_size, geometry.width, geometry.height)
    if np.may_share_memory(result, map_hw):  # a plain slice: decoded values, already in [0, 1]
        return np.array(result, dtype=np.float32, order="C")
    return _finish(np.array(result, dtype=np.float32, order="C"))  # a fresh copy


def keeps_whole_map(map_shape: tuple[int, int], geometry: Geometry) -> bool:
    """Whether ``align_map`` hands a map of this shape back as it is: the geometry neither
    resamples nor cuts it (the whole map at its own size)."""
    map_h, map_w = map_shape
    mode, box, image_size = _source_box(map_shape, geometry)
    fitted = (geometry.width, geometry.height) if mode == 0 else _fitted_size(mode, image_size, geometry.width, geometry.height)
    return box == (0, 0, map_w, map_h) and fitted == (geometry.width, geometry.height) == (map_w, map_h)


def _source_box(map_shape: tuple[int, int], geometry: Geometry) -> tuple[int, tuple[float, float, float, float], tuple[int, int]]:
    """The ``resize_image`` mode, the box of the map it reads (PIL's convention, map pixels) and
    the size of the init-image part that box stands for."""
    init_w, init_h = geometry.init_size
    map_h, map_w = map_shape
    # An init-image box, in map pixels: stretching the map over the init
    # image and then cropping is the same as resampling this box directly.
    x1, y1, x2, y2 = geometry.crop_region or (0, 0, init_w, init_h)
    box = (x1 * map_w / init_w, y1 * map_h / init_h, x2 * map_w / init_w, y2 * map_h / init_h)
    return 2 if geometry.crop_region else geometry.image_resize_mode, box, (x2 - x1, y2 - y1)


def _fitted_size(mode: int, image_size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """Modes 1 and 2: the size the image is resized to before it is centred on the canvas."""
    im_w, im_h = image_size
    ratio = width / height
    src_ratio = im_w / im_h
    if mode == 1:
        src_w = width if ratio > src_ratio else im_w * height // im_h
        src_h = height if ratio <= src_ratio else im_h * width // im_w
    else:
        src_w = width if ratio < src_ratio else im_w * height // im_h
        src_h = height if ratio >= src_ratio else im_h * width // im_w
    return src_w, src_h


def _resample(map_hw: np.ndarray, box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """``box`` (PIL's convention) of a map resized to width x height: per axis, BOX when it
    shrinks, BILINEAR when it grows (PIL, on a float image); a plain slice at the same size."""
    x0, y0, x1, y1 = box
    if (x1 - x0, y1 - y0) == (width, height) and float(x0).is_integer() and float(y0).is_integer():
        return map_hw[int(y0) : int(y0) + height, int(x0) : int(x0) + width]
    image = Image.fromarray(map_hw, "F")
    horizontal = Image.BOX if x1 - x0 > width else Image.BILINEAR
    vertical = Image.BOX if y1 - y0 > height else Image.BILINEAR
    if horizontal == vertical:
        return np.asarray(image.resize((width, height), horizontal, box=box))
    # One axis at a time: PIL resamples each axis separately anyway.
    rows = image.resize((width, image.height), horizontal, box=(x0, 0, x1, image.height))
    return np.asarray(rows.resize((width, height), vertical, box=(0, y0, width, y1)))


def _resize_image(mode: int, map_hw: np.ndarray, box: tuple[float, float, float, float], image_size: tuple[int, int], width: int, height: int) -> np.ndarray:
    """``modules/images.py: resize_image`` for the image of ``image_size`` whose
    pixels are ``box`` of ``map_hw``; the host's integer arithmetic."""
    if mode == 0:
        return _resample(map_hw, box, width, height)
    src_w, src_h = _fitted_size(mode, image_size, width, height)
    ratio, src_ratio = width / height, image_size[0] / image_size[1]
    resized = _resample(map_hw, box, src_w, src_h)
    if (src_w, src_h) == (width, height):  # the same aspect: it covers the canvas, no band
        return resized
    result = np.zeros((height, width), dtype=np.float32)  # host: black canvas
    left, top = width // 2 - src_w // 2, height // 2 - src_h // 2
    _paste(result, resized, left, top)
    if mode == 2:
        # The host fills the bands with a resize of a zero-height (or -width)
        # box on the edge row (column): that row stretched over the band.
        if ratio < src_ratio and top > 0:
            _paste(result, np.broadcast_to(resized[:1], (top, src_w)), 0, 0)
            _paste(result, np.broadcast_to(resized[-1:], (top, src_w)), 0, top + src_h)
        elif ratio > src_ratio and left > 0:
            _paste(result, np.broadcast_to(resized[:, :1], (src_h, left)), 0, 0)
            _paste(result, np.broadcast_to(resized[:, -1:], (src_h, left)), left + src_w, 0)
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
    """Clip a resampled/blurred map to [0, 1], in place; white within 2**-20 of 1 becomes 1."""
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
# Latents
# --------------------------------------------------------------------------


EIGHT_BIT_VALUES = _decode_array(np.arange(256, dtype=np.uint8)[None])[0]
"""What each 8-bit gray value decodes to: the decoding itself, run on every value once,
so the 8-bit path can never drift from it."""


class MapValues:
    """A map's float32 values in [0, 1] (``values``) and, when they are 8-bit gray pixels decoded
    as they are, those pixels (``stored_8bit``: ``values`` is ``EIGHT_BIT_VALUES[stored_8bit]``).

    From 8-bit gray pixels the float32 map is made on first use only: the latent (``to_latent``)
    and the pixels a run never releases (``schedule.never_released``) read the stored values
    (integer block sums, an 8-bit threshold), so a map used as it is needs no float copy.
    """

    __slots__ = ("_values", "stored_8bit")

    def __init__(self, values: np.ndarray | None = None, *, stored_8bit: np.ndarray | None = None) -> None:
        if (values is None) == (stored_8bit is None):
            raise ValueError("MapValues takes values or stored_8bit")
        self._values, self.stored_8bit = values, stored_8bit

    @classmethod
    def decoded(cls, pixels: np.ndarray) -> MapValues:
        """``decode_map`` of pixels as stored (``source_pixels``), checked now; 8-bit gray decodes on first use."""
        if pixels.ndim == 2 and pixels.dtype == np.uint8:
            _check_pixels(pixels.shape[1], pixels.shape[0])  # all that decoding checks of 8-bit gray
            return cls(stored_8bit=pixels)
        return cls(_decode_array(pixels))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.stored_8bit if self._values is None else self._values).shape

    @property
    def values(self) -> np.ndarray:
        """The float32 map (to be read only)."""
        if self._values is None:
            self._values = _decode_array(self.stored_8bit)
        return self._values


def to_latent(map_hw: np.ndarray | MapValues, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Area-average a (h, w) map to a float32 tensor of shape [1, 1, lh, lw].

    When h and w are multiples of lh and lw (the usual x8), every latent
    pixel is the exact mean of its block, so a 1-pixel line becomes 1/8
    instead of vanishing or aliasing. Otherwise torch's adaptive average
    pooling (slightly overlapping bins) is used. Never shares memory with the map.

    ``MapValues`` with 8-bit stored values: whole blocks are summed as integers, each mean
    rounded once, reading a quarter of the bytes (and no float map is made).
    """
    if isinstance(map_hw, MapValues):
        if map_hw.stored_8bit is not None and (latent := _latent_of_8bit(map_hw.stored_8bit, latent_hw)) is not None:
            return latent
        map_hw = map_hw.values
    map_hw = _as_map(map_hw)
    source = torch.from_numpy(np.ascontiguousarray(map_hw))[None, None]
    return F.adaptive_avg_pool2d(source, tuple(latent_hw))


def _latent_of_8bit(stored: np.ndarray, latent_hw: tuple[int, int]) -> torch.Tensor | None:
    """``to_latent`` of ``EIGHT_BIT_VALUES[stored]`` from the integers, when whole blocks tile the
    map (else None): each block's sum, divided once."""
    (height, width), (latent_h, latent_w) = stored.shape, latent_hw
    block_h, block_w = height // latent_h if latent_h else 0, width // latent_w if latent_w else 0
    if not (block_h * latent_h == height and block_w * latent_w == width and 0 < block_h * block_w * 255 <= 0xFFFF):
        return None
    # A block's sum fits 16 bits (up to 257 pixels). Rows first, then columns one at a time:
    # numpy reduces a short last axis several times slower than it adds whole slices.
    columns = np.add.reduce(stored.reshape(latent_h, block_h, width), axis=1, dtype=np.uint16).reshape(latent_h, latent_w, block_w)
    sums = columns[:, :, 0].copy()
    for column in range(1, block_w):
        sums += columns[:, :, column]
    return torch.from_numpy((sums / float(block_h * block_w * 255)).astype(np.float32))[None, None]
