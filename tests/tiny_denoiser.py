"""The tests' small deterministic denoiser (torch only, so benchmarks can run it anywhere)."""

from __future__ import annotations

import torch

# Stable Diffusion's noise schedule ("scaled linear" betas).
ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0).float()


class TinyEpsNet(torch.nn.Module):
    """A deterministic eps model: the ideal denoiser of Gaussian latents plus a fixed random conv wobble.

    The ideal part makes the amount of change grow with the starting noise, as a
    trained model's does; the wobble (5x5 receptive field) makes the output depend
    on the content and couples neighbouring pixels.
    """

    DATA_VARIANCE = 25.0

    def __init__(self, seed: int = 1234) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(5, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 4, 3, padding=1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = t.to(torch.float32).reshape(-1)
        low = t.floor().clamp(0, 999).long()
        table = ALPHAS_CUMPROD.to(x.device)
        alpha = torch.lerp(table[low], table[(low + 1).clamp(max=999)], t - low).reshape(-1, 1, 1, 1)
        ideal = torch.sqrt(1 - alpha) * x / (alpha * self.DATA_VARIANCE + 1 - alpha)
        t_plane = (t / 1000).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        wobble = torch.tanh(self.conv2(torch.tanh(self.conv1(torch.cat([x, t_plane], 1)))))
        return ideal + 0.3 * wobble
