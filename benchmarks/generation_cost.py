"""The extension's own work per generation, beyond decoding the map, at 512², 1024² and 2048².

Runs whole img2img generations on the project's WebUI stand-in (``tests/standin``:
A1111's hook order around the real k-diffusion Euler sampler, a tiny model) with
the extension's script loaded as the WebUI loads it, and times what the extension
does: each of its hooks, and the blend inside every model call
(``DifferentialDiffusion.before_call`` / ``after_call``). The map is handed over
as a PIL image (what the UI sends), so no PNG is decoded; reading its pixels out of
the image (``decode_map_image``, part of ``before_process``) is shown apart and the
total is also printed without it ("beyond decoding", the goal's measure). The map
has a black quarter (preserve works) and reaches white (no step skipping), the
heavier case. Medians, and the least run beyond decoding (the work without a busy
machine's interruptions: on a shared 2-core VM medians move by ±20 % between rounds).

    python benchmarks/generation_cost.py [--root <another checkout>] [--repeats 5] [--snapped]

``--root`` measures another checkout of the project (e.g. an older commit) with
the same procedure; the goal is 10 ms per generation at 1024². ``--snapped`` turns
smooth release off (the map is a ramp: with it on, every step releases pixels partly).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

HOOKS = ("before_process", "process", "process_before_every_sampling", "on_mask_blend", "post_sample", "postprocess_image", "postprocess_image_after_composite", "postprocess")


def load(root: Path):
    """The script on the stand-in, as the WebUI loads it (extension root first on sys.path)."""
    standin = root / "tests" / "standin"
    sys.path[:0] = [str(root / "tests"), str(standin)] + ([] if importlib.util.find_spec("cv2") else [str(standin / "cv2_fallback")])
    sys.path.insert(0, str(root))
    import fake_img2img
    import gradio as gr
    from modules import scripts

    path = root / "scripts" / "differential_diffusion.py"
    spec = importlib.util.spec_from_file_location(path.name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script = module.Script()
    script.filename, script.is_img2img, script.alwayson = str(path), True, True
    with gr.Blocks():
        controls = script.ui(True)
    script.args_from, script.args_to = 1, 1 + len(controls)
    return fake_img2img, scripts, script, controls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 steadies numbers on a busy machine")
    parser.add_argument("--snapped", action="store_true", help="smooth release off")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    driver, scripts, script, controls = load(args.root.resolve())
    from differential_diffusion_webui import adapter
    from lib_differential_diffusion import blend

    timings: dict[str, list[float]] = defaultdict(list)

    def timed(name, function):
        def run(*a, **k):
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                timings[name].append(time.perf_counter() - start)

        return run

    for hook in HOOKS:
        setattr(script, hook, timed(hook, getattr(script, hook)))
    decoding = "decode_map_image"  # inside before_process: not added to the total again
    adapter.decode_map_image = timed(decoding, adapter.decode_map_image)
    for method in ("before_call", "after_call"):
        setattr(blend.DifferentialDiffusion, method, timed("blend per call", getattr(blend.DifferentialDiffusion, method)))

    order = [component.value for component in controls]
    enabled_index = 0  # the panel's switch comes first, the map upload after it
    map_index = next(i for i, component in enumerate(controls) if (component.elem_id or "").endswith("_map"))
    print(f"project: {args.root.resolve()}  (Euler, 10 steps, strength 0.75, map with a black quarter; medians of {args.repeats}; torch threads {torch.get_num_threads()})")
    for size in (512, 1024, 2048):
        x = np.linspace(0.0, 1.0, size, dtype=np.float32)
        change = np.tile(x, (size, 1))
        change[: size // 2, : size // 2] = 0.0
        change_map = Image.fromarray(np.rint(change * 255).astype(np.uint8), "L")
        init = Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8))
        ui = list(order)
        ui[enabled_index], ui[map_index] = True, change_map
        if args.snapped:
            ui[next(i for i, component in enumerate(controls) if (component.elem_id or "").endswith("_smooth"))] = False
        totals, per_part = [], defaultdict(list)
        for _ in range(args.repeats + 1):  # the first run warms up
            timings.clear()
            p = driver.StableDiffusionProcessingImg2Img(
                script_args=[0, *ui], scripts=scripts.ScriptRunner([script]), init_images=[init], width=size, height=size,
                steps=10, denoising_strength=0.75, sampler_name="Euler",
            )  # fmt: skip
            driver.process_images(p)
            totals.append(sum(sum(values) for name, values in timings.items() if name != decoding))
            for name, values in timings.items():
                per_part[name].append(sum(values))
        totals = totals[1:]
        beyond_each = [total - decoded for total, decoded in zip(totals, per_part[decoding][1:])]
        beyond, beyond_least = statistics.median(beyond_each) * 1000, min(beyond_each) * 1000
        parts = ", ".join(f"{name} {statistics.median(values[1:]) * 1000:.1f}" for name, values in sorted(per_part.items(), key=lambda item: -statistics.median(item[1][1:])) if statistics.median(values[1:]) >= 0.0001)
        total = statistics.median(totals) * 1000
        print(f"{size}x{size}: {total:.1f} ms per generation, {beyond:.1f} ms beyond decoding (goal 10 ms at 1024²: ratio {beyond / 10:.2f}; least of the runs {beyond_least:.1f} ms)  [{parts}]")


if __name__ == "__main__":
    main()
