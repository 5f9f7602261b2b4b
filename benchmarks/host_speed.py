"""Speed of the extension inside a running WebUI: plain img2img vs Differential Diffusion.

Prints medians and ratios; it is not a test. Usage:

    python3 benchmarks/host_speed.py --url http://127.0.0.1:7860 [--runs 5] [--sizes 64 512]

Per size, interleaved (plain, all-ones map, map with maximum 0.5) so drifts hit
all three alike. When the host runs with SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST=1
the model calls of the half map's run are read from the extension's report.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_differential_diffusion.maps import prepare_map  # noqa: E402

STEPS = 20
STRENGTH = 0.8


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    args = parser.parse_args()
    session = requests.Session()

    def img2img(size: int, change_map: Image.Image | None) -> float:
        yy, xx = np.mgrid[0:size, 0:size]
        init = Image.fromarray(np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1).astype(np.uint8))
        payload = dict(init_images=[png_b64(init)], prompt="", steps=STEPS, sampler_name="Euler", seed=1, width=size, height=size, denoising_strength=STRENGTH)
        if change_map is not None:
            payload["alwayson_scripts"] = {"Differential Diffusion": {"args": [{"map": png_b64(change_map)}]}}
        start = time.perf_counter()
        response = session.post(f"{args.url}/sdapi/v1/img2img", json=payload, timeout=1800)
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        return elapsed

    for size in args.sizes:
        ones = Image.new("L", (size, size), 255)
        half = Image.fromarray((np.mgrid[0:size, 0:size][1] * 128 // size).astype(np.uint8))  # 0 .. 127: maximum ~0.5
        img2img(size, None)  # warm-up
        times = {"plain": [], "all-ones map": [], "map max 0.5": []}
        for _ in range(args.runs):
            times["plain"].append(img2img(size, None))
            times["all-ones map"].append(img2img(size, ones))
            times["map max 0.5"].append(img2img(size, half))
        report = session.get(f"{args.url}/differential-diffusion/v1/test/last-run", timeout=30)
        calls = len(report.json().get("calls", [])) if report.ok and report.json() else None
        plain = statistics.median(times["plain"])
        print(f"{size}x{size}, Euler, {STEPS} steps, strength {STRENGTH} (plain img2img makes {int(STRENGTH * STEPS) + 1} model calls):")
        for name, values in times.items():
            print(f"  {name:13s} median {statistics.median(values):7.3f} s   ratio to plain {statistics.median(values) / plain:5.3f}")
        if calls is not None:
            print(f"  model calls of the 'map max 0.5' run: {calls}")

    big = np.random.default_rng(0).integers(0, 256, (4096, 4096), dtype=np.uint8)
    prepare_map(big, init_size=(4096, 4096), width=1024, height=1024, resize_mode=0, latent_hw=(128, 128))
    durations = []
    for _ in range(5):
        start = time.perf_counter()
        prepare_map(big, init_size=(4096, 4096), width=1024, height=1024, resize_mode=0, latent_hw=(128, 128))
        durations.append((time.perf_counter() - start) * 1000)
    print(f"map preparation 4096x4096 -> 1024x1024 (from a decoded array): median {statistics.median(durations):.1f} ms")


if __name__ == "__main__":
    main()
