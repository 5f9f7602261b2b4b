"""How far a uniform map lands from plain img2img at the product strength, per sampler.

For samplers whose state after the release step depends only on that state
(Euler, Heun, DPM2, DPM++ SDE with its Brownian tree, DDIM) the gap is 0 (proven in
tests/test_engine.py). Ancestral samplers draw their noise in sequence and
multistep samplers keep a history, so theirs is not. Prints, per sampler, the
mean |difference| to plain img2img at v*s, next to the mean change plain
img2img itself makes and the gap to the slider's strength, on the tests'
deterministic denoiser (16x16 latents, 20 steps, s = 1.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from a1111_sampling import K_SAMPLERS, Run, TinyEpsNet, ddim_img2img, kdiffusion_img2img, make_denoiser  # noqa: E402


def main() -> None:
    denoiser, net = make_denoiser(), TinyEpsNet()
    generator = torch.Generator().manual_seed(0)
    init = torch.randn(2, 4, 16, 16, generator=generator) * 0.8
    noise = torch.randn(2, 4, 16, 16, generator=generator)

    def img2img(name, run, strengths=None):
        if name == "DDIM":
            return ddim_img2img(net, run, pixel_strengths=strengths)[0]
        return kdiffusion_img2img(name, denoiser, run, pixel_strengths=strengths)[0]

    print(f"{'sampler':14s} {'v':>4s} {'|map - plain(v*s)|':>19s} {'|plain(v*s) - init|':>20s} {'|map - plain(s)|':>17s}")
    for name in [*K_SAMPLERS, "DDIM"]:
        for value in (0.3, 0.5, 0.7):
            strengths = torch.full((2, 1, 16, 16), value, dtype=torch.float64)
            with_map = img2img(name, Run(init, noise, 1.0, 20, seed=5), strengths)
            target = img2img(name, Run(init, noise, value, 20, seed=5))
            full = img2img(name, Run(init, noise, 1.0, 20, seed=5))
            print(
                f"{name:14s} {value:4.1f} {float((with_map - target).abs().mean()):19.4f} "
                f"{float((target - init).abs().mean()):20.4f} {float((with_map - full).abs().mean()):17.4f}"
            )


if __name__ == "__main__":
    main()
