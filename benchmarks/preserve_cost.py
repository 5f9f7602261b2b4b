"""Time of the preserve composite (``strengths.preserve``) at 512², 1024² and 2048², two checkouts interleaved.

Prints medians; it is not a test. Two kept masks: the generation_cost benchmark's (a black
quarter, and the ramp's black first column) and a kept background around a generated disc
(the kept box is the whole image, the ramp a ring). With ``--root`` the same calls run on
another checkout's ``preserve`` in the same process, alternating with this one's, so a busy
machine slows both alike:

    python benchmarks/preserve_cost.py [--root <another checkout>] [--repeats 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parents[1]


def load_preserve(root: Path, name: str) -> Callable:
    """``preserve`` of the checkout at ``root``, as a package of its own name (two can coexist)."""
    package = root / "lib_differential_diffusion"
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py", submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.strengths").preserve


def masks(size: int) -> dict[str, np.ndarray]:
    ramp = np.tile(np.linspace(0.0, 1.0, size, dtype=np.float32), (size, 1))
    ramp[: size // 2, : size // 2] = 0.0
    rows, columns = np.mgrid[:size, :size]
    disc = (rows - size / 2) ** 2 + (columns - size / 2) ** 2 <= (0.3 * size) ** 2
    return {"black quarter + column": ramp <= 0, "background around a disc": ~disc}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, help="another checkout to time alongside this one")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    versions = {"this": load_preserve(HERE, "dd_this")}
    if args.root is not None:
        versions["other"] = load_preserve(args.root.resolve(), "dd_other")
    print(f"preserve, medians of {args.repeats}" + (f"; other: {args.root.resolve()}" if args.root else ""))
    for size in (512, 1024, 2048):
        rng = np.random.default_rng(0)
        original = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        generated = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        for name, kept in masks(size).items():
            times: dict[str, list[float]] = {version: [] for version in versions}
            for _ in range(args.repeats + 1):  # the first round warms up
                for version, preserve in versions.items():
                    start = time.perf_counter()
                    preserve(generated, original, kept)
                    times[version].append((time.perf_counter() - start) * 1000)
            print(f"{size}x{size} {name}: " + ", ".join(f"{version} {statistics.median(values[1:]):.2f} ms" for version, values in times.items()))


if __name__ == "__main__":
    main()
