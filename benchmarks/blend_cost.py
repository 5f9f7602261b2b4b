"""Per-call cost of the blend, and how much memory it allocates, on this machine.

Prints numbers; it is not a test.

    python3 benchmarks/blend_cost.py [--device cuda] [--baseline <another checkout>] [--root <checkout>] [--threads 1]

Each case is a call inside step 5 of 20 at slider 1.0 (every step has pinned pixels), for a
random map and a horizontal ramp, on the three paths a sampler takes: with history (DPM++ 2M),
without history drawing noise (Euler a), deterministic without history (Euler: states mixed),
snapped and with smooth release (the measured call's step has partly released pixels, the
costliest call). It prints smooth / snapped and, with ``--baseline``, each number over the
baseline checkout's (e.g. ``git worktree add /tmp/before <commit>``; a checkout older than
smooth release has one number per path, used for both). The baseline runs in its own process
before and after this checkout's run; the lower of its two medians counts.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
PATHS = (("history", True, False), ("no history, noise", False, False), ("no history, deterministic", False, True))
SHAPES = ((1, 128), (4, 128))
MAPS = ("random", "ramp")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(function, device: str, repeats: int = 200) -> float:
    for _ in range(10):
        function()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        function()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def allocated_bytes_cpu(function) -> int:
    """Bytes the call allocates in all (an upper bound of its peak extra memory)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        function()
    return sum(max(event.self_cpu_memory_usage, 0) for event in profile.events())


def strengths_for(kind: str, batch: int, size: int) -> torch.Tensor:
    if kind == "random":
        return torch.rand(batch, 1, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return (torch.arange(size, dtype=torch.float64) / (size - 1)).expand(batch, 1, size, size).contiguous()


def measure_all(root: Path, device: str, with_memory: bool) -> dict[str, dict]:
    """{case: {"ms": median, "allocated": latents or None}} for the checkout at ``root``."""
    sys.path[:0] = [str(root), str(root / "tests")]
    from lib_differential_diffusion.blend import DifferentialDiffusion
    from lib_differential_diffusion.schedule import SigmaLevels

    accepted = set(inspect.signature(DifferentialDiffusion).parameters)
    has_smooth = "smooth" in accepted
    torch.set_grad_enabled(False)
    levels = SigmaLevels(lambda n: torch.cat([torch.linspace(14.6, 0.03, n), torch.zeros(1)]))
    sigmas = levels.sigmas(20).tolist()
    results: dict[str, dict] = {}
    for batch, size in SHAPES:
        for map_kind in MAPS:
            for path, keeps_history, mixes_states in PATHS:
                for smooth in (False, True) if has_smooth else (None,):
                    init = torch.randn(batch, 4, size, size, device=device)
                    noise = torch.randn_like(init)
                    options = dict(sampler_keeps_history=keeps_history, sampler_mixes_states=mixes_states, smooth=smooth)
                    engine = DifferentialDiffusion(
                        pixel_strengths=strengths_for(map_kind, batch, size), init_latent=init, noise=noise, levels=levels, steps=20,
                        run_strength=1.0, **{key: value for key, value in options.items() if key in accepted},
                    )
                    x = init + noise * sigmas[5]
                    level = torch.full((batch,), sigmas[5], device=device)
                    prediction = init.clone()
                    engine.tracker.observe(sigmas[4])  # sit inside step 5 (a later call at step 5's level)

                    def blend() -> None:
                        pinned = engine.before_call(x, level)
                        engine.after_call(prediction, x, level, pinned)

                    allocated = None
                    if with_memory and device == "cpu":
                        allocated = allocated_bytes_cpu(blend) / (init.numel() * init.element_size())
                    for mode in ("snapped", "smooth") if smooth is None else ("smooth" if smooth else "snapped",):
                        results[f"{batch}x4x{size}x{size} {map_kind} {path} {mode}"] = {"ms": median_ms(blend, device), "allocated": allocated}
    return results


def baseline_run(baseline: Path, device: str) -> dict[str, dict]:
    command = [sys.executable, str(HERE), "--root", str(baseline), "--device", device, "--threads", str(torch.get_num_threads()), "--json"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", type=Path, default=HERE.parents[1], help="the checkout to measure (default: this one)")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with (e.g. before a change)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 steadies numbers on a busy machine")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json:
        print(json.dumps(measure_all(args.root.resolve(), args.device, with_memory=False)))
        return
    before = baseline_run(args.baseline.resolve(), args.device) if args.baseline else None
    results = measure_all(args.root.resolve(), args.device, with_memory=True)
    if before is not None:
        again = baseline_run(args.baseline.resolve(), args.device)
        before = {case: {"ms": min(before[case]["ms"], again[case]["ms"])} for case in before}
    print(f"device: {args.device}  torch {torch.__version__}  threads {torch.get_num_threads()}  root {args.root}")
    if before is not None:
        print(f"baseline: {args.baseline}")
    worst: dict[str, float] = {}
    for case, result in results.items():
        line = f"{case:52s} {result['ms']:.3f} ms per call"
        if result["allocated"] is not None:
            line += f", allocates {result['allocated']:.2f} latents"
        if case.endswith(" smooth"):
            line += f", smooth / snapped x{result['ms'] / results[case[: -len('smooth')] + 'snapped']['ms']:.2f}"
        if before is not None and case in before:
            ratio = result["ms"] / before[case]["ms"]
            line += f", / baseline x{ratio:.2f}"
            mode = case.rsplit(" ", 1)[1]
            worst[mode] = max(worst.get(mode, 0.0), ratio)
        print(line)
    for mode, ratio in worst.items():
        print(f"largest {mode} / baseline: x{ratio:.2f}")


if __name__ == "__main__":
    main()
