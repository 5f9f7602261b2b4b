"""Time to prepare a 4096x4096 change map for a 1024x1024 img2img (goal: <= 50 ms).

Prints medians; it is not a test. "after decoding" starts from the decoded
array (align + options + latent averaging); "from PNG" includes decoding.
Alignment resamples with PIL (a float "F" image, BOX/BILINEAR with a source box).
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_differential_diffusion.maps import Geometry, MapOptions, align_map, apply_options, decode_map, to_latent  # noqa: E402


def median_ms(function, repeats: int = 7) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:4096, 0:4096]
    gray = ((xx + yy) % 256).astype(np.uint8) ^ rng.integers(0, 16, (4096, 4096), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(gray).save(png, "PNG", compress_level=1)
    decoded = decode_map(gray)
    plain, blurred = MapOptions(), MapOptions(gamma=1.5, blur=4.0, low=0.1, high=0.9)

    for resize_mode in (0, 1, 2):
        def after_decoding(options=plain, mode=resize_mode) -> None:
            aligned = align_map(decoded, Geometry((4096, 3072), 1024, 1024, mode))
            to_latent(apply_options(aligned, options), (128, 128))

        print(f"4096x4096 -> 1024x1024, resize mode {resize_mode}: after decoding {median_ms(after_decoding):.1f} ms, "
              f"with gamma+blur 4+remap {median_ms(lambda m=resize_mode: after_decoding(blurred, m)):.1f} ms")
    print(f"decode uint8 array: {median_ms(lambda: decode_map(gray)):.1f} ms")
    def from_png() -> None:
        to_latent(align_map(decode_map(png.getvalue()), Geometry((4096, 4096), 1024, 1024)), (128, 128))

    print(f"from PNG bytes ({len(png.getvalue()) // 1024} KiB), decode + align + latent: {median_ms(from_png):.1f} ms")


if __name__ == "__main__":
    main()
