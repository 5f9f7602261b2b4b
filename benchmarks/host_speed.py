"""Speed of the extension inside a running WebUI. Prints medians and ratios; it is not a test.

    python3 benchmarks/host_speed.py --url http://127.0.0.1:7860 [--runs 5] [--sizes 64 512]

Per size, interleaved so drifts hit every case alike, every other round in reverse order
(Euler, 20 steps):

* plain img2img at strength 1 vs a 0..1 band map at strength 1: the same model calls
  (the map reaches white, so nothing is skipped); the ratio is the extension's own cost.
  Goal <= 1.02.
* plain img2img at strength 0.5 vs a map whose maximum is 0.5 at strength 1: the least
  work such a result can take is plain img2img at 0.5 (step skipping starts the run
  there). Goal <= 1.02.
* plain vs an all-white map at strength 0.8 (the extension stays out of the way).

With SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST=1 on the host, the model calls of the map runs
and the extension's own time in them (its hooks, and the blend in each model call, timed
inside the host) are read from the extension's report. The own time gives the ratio
``(reference + own) / reference`` to far finer than the wall-clock ratio, which a shared
machine blurs by several percent.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time

import numpy as np
import requests
from PIL import Image

STEPS = 20


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
    session.trust_env = False

    def last_run() -> dict:
        report = session.get(f"{args.url}/differential-diffusion/v1/test/last-run", timeout=30)
        return report.json() if report.ok else {}

    for size in args.sizes:
        yy, xx = np.mgrid[0:size, 0:size]
        init = png_b64(Image.fromarray(np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1).astype(np.uint8)))
        bands = Image.fromarray((np.floor(xx * 8 / size) * 255 / 7).astype(np.uint8))  # 8 bands, 0 .. 255
        half = Image.fromarray((xx * 128 // size).astype(np.uint8))  # 0 .. 127: maximum ~0.5
        cases = {
            "plain at 1.0": (1.0, None),
            "band map 0..1 at 1.0": (1.0, bands),
            "plain at 0.5": (0.5, None),
            "map max 0.5 at 1.0": (1.0, half),
            "plain at 0.8": (0.8, None),
            "all-white map at 0.8": (0.8, Image.new("L", (size, size), 255)),
        }
        encoded = {name: (strength, None if image is None else png_b64(image)) for name, (strength, image) in cases.items()}
        times: dict[str, list[float]] = {name: [] for name in cases}
        calls: dict[str, int | None] = {}
        own: dict[str, list[float]] = {name: [] for name in cases}
        decoding: dict[str, list[float]] = {name: [] for name in cases}

        def run(name: str) -> float:
            strength, change_map = encoded[name]
            payload = dict(init_images=[init], prompt="", steps=STEPS, sampler_name="Euler", seed=1, width=size, height=size, denoising_strength=strength)
            if change_map is not None:
                payload["alwayson_scripts"] = {"Differential Diffusion": {"args": [{"map": change_map}]}}
            start = time.perf_counter()
            response = session.post(f"{args.url}/sdapi/v1/img2img", json=payload, timeout=1800)
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            if change_map is not None:
                report = last_run()
                calls[name] = len(report["calls"]) if "calls" in report else None
                seconds = report.get("own_seconds")
                if seconds:  # the map's image decoding is part of before_process: counted once, then apart
                    own[name].append(sum(value for part, value in seconds.items() if part != "decode_map_image"))
                    decoding[name].append(seconds.get("decode_map_image", 0.0))
            return elapsed

        for name in cases:  # warm-up
            run(name)
        names = list(cases)
        for round_index in range(args.runs):
            # Every other round in reverse: no case always follows the same other case (an earlier
            # measurement had every DD case faster than its plain reference, 0.87-0.96: an order effect).
            for name in (names if round_index % 2 == 0 else names[::-1]):
                times[name].append(run(name))
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"{size}x{size}, Euler, {STEPS} steps, medians of {args.runs} interleaved runs:")
        for reference, name in (("plain at 1.0", "band map 0..1 at 1.0"), ("plain at 0.5", "map max 0.5 at 1.0"), ("plain at 0.8", "all-white map at 0.8")):
            made = f", {calls[name]} model calls" if calls.get(name) is not None else ""
            print(f"  {name:22s} {median[name]:7.3f} s vs {reference:13s} {median[reference]:7.3f} s: ratio {median[name] / median[reference]:5.3f}{made}")
            if own[name][1:]:  # without the warm-up run
                own_median, decoding_median = statistics.median(own[name][1:]), statistics.median(decoding[name][1:])
                beyond = statistics.median([total - decoded for total, decoded in zip(own[name][1:], decoding[name][1:])])
                print(
                    f"  {'':22s} own time {own_median * 1000:6.1f} ms (median; {beyond * 1000:.1f} ms beyond decoding the map's PNG,"
                    f" {decoding_median * 1000:.1f} ms): ratio (reference + own) / reference {(median[reference] + own_median) / median[reference]:6.4f}"
                )


if __name__ == "__main__":
    main()
