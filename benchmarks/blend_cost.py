"""Per-call cost of the blend, and how much memory it allocates, on this machine.

Prints numbers; it is not a test. Usage: python3 benchmarks/blend_cost.py [--device cuda]
Each case runs snapped and with smooth release (a random map: the measured call's step has
partly released pixels, the costliest call), for samplers with history (DPM++ 2M), without
(Euler a) and deterministic without (Euler: states mixed), and prints smooth / snapped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from tiny_denoiser import TinyEpsNet  # noqa: E402
from lib_differential_diffusion.blend import DifferentialDiffusion  # noqa: E402
from lib_differential_diffusion.schedule import SigmaLevels  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(function, device: str, repeats: int = 50) -> float:
    for _ in range(5):
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = args.device
    torch.set_grad_enabled(False)
    levels = SigmaLevels(lambda n: torch.cat([torch.linspace(14.6, 0.03, n), torch.zeros(1)]))
    sigmas = levels.sigmas(20).tolist()
    print(f"device: {device}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    for batch, size in ((1, 128), (4, 128)):
        # DPM++ 2M's path (history), Euler a's (no history, noise per step), Euler's (deterministic, no history)
        for keeps_history, mixes_states in ((True, False), (False, False), (False, True)):
            snapped_ms = None
            for smooth in (False, True):
                ms, line = measure(device, levels, sigmas, batch, size, keeps_history, mixes_states, smooth)
                ratio = "" if snapped_ms is None else f", smooth / snapped x{ms / snapped_ms:.2f}"
                snapped_ms = ms if snapped_ms is None else snapped_ms
                print(f"{line}{ratio}")


def measure(device: str, levels: SigmaLevels, sigmas: list, batch: int, size: int, keeps_history: bool, mixes_states: bool, smooth: bool) -> tuple[float, str]:
    init = torch.randn(batch, 4, size, size, device=device)
    noise = torch.randn_like(init)
    strengths = torch.rand(batch, 1, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # every step has pinned pixels
    engine = DifferentialDiffusion(
        pixel_strengths=strengths, init_latent=init, noise=noise, levels=levels, steps=20, run_strength=1.0, sampler_keeps_history=keeps_history,
        sampler_mixes_states=mixes_states, smooth=smooth,
    )
    x = init + noise * sigmas[5]
    level = torch.full((batch,), sigmas[5], device=device)
    prediction = init.clone()
    engine.tracker.observe(sigmas[4])  # sit inside step 5 (a later call at step 5's level)

    def blend() -> None:
        pinned = engine.before_call(x, level)
        engine.after_call(prediction, x, level, pinned)

    net = TinyEpsNet().to(device)
    t = torch.full((batch,), 500.0, device=device)
    blend_ms = median_ms(blend, device)
    model_ms = median_ms(lambda: net(x, t), device)
    latent_bytes = init.numel() * init.element_size()
    kind = "history" if keeps_history else "no history, " + ("deterministic" if mixes_states else "noise")
    line = f"latent {batch}x4x{size}x{size} {kind:28s} {'smooth ' if smooth else 'snapped'}: blend {blend_ms:.3f} ms per call, test denoiser {model_ms:.3f} ms, ratio {blend_ms / model_ms:.3f}"
    if device == "cpu":
        line += f", allocated per call {allocated_bytes_cpu(blend) / latent_bytes:.2f} latents"
    else:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        blend()
        sync(device)
        line += f", peak extra {(torch.cuda.max_memory_allocated() - base) / latent_bytes:.2f} latents"
    return blend_ms, line

if __name__ == "__main__":
    main()
