"""The per-call blend that keeps pinned pixels on the re-noised original.

The engine wraps the sampler's denoiser (``model(x, level) -> prediction``).
For every call it

1. works out which sampler step the call belongs to (``StepTracker``);
2. writes, *in place* into the sampler's own state ``x``, the re-noised
   original ``init (+) noise`` at the call's level for every pixel still
   pinned, and, on the first call of a step, for the pixels released at that
   step. Setting the state itself (the paper's formulation) is what makes the
   released pixel start from exactly what plain img2img at its strength starts
   from, whatever the sampler did to it before: ancestral and SDE samplers add
   fresh noise and timestep samplers drift off the original between calls;
3. replaces the prediction of pinned pixels with the original (its x0, or for
   eps-predicting timestep samplers the eps that implies it), so that the
   sampler's update keeps them on ``init + level * noise`` within the step and
   multistep history sees the original rather than a guess.

Pixels never released are set to the original after sampling (``finalize``):
timestep samplers end one level above zero, DPM fast/adaptive at sigma_min.
"""

from __future__ import annotations

from typing import Callable

import torch

from .schedule import NEVER, SigmaLevels, TimestepLevels, img2img_start, release_steps

# Two levels closer than this (relative) are the same table entry; the host
# passes levels through float32 or float16 tensors.
LEVEL_TOLERANCE = 1e-4


class StepTracker:
    """Attributes each model call to the sampler step it belongs to.

    Step ``i`` owns the levels from its first call's level down to (not
    including) step ``i + 1``'s. A step's decision holds for all its calls,
    also for a call at the next step's level that finishes the step (Heun and
    Restart's Heun steps): with ``boundary_call_ends_step``, the second call
    of a step made exactly at the next step's level stays in the current step.
    Steps never go back (Restart and DPM adaptive revisit higher levels; a
    released pixel stays released).
    """

    def __init__(self, eval_levels: torch.Tensor, boundary_call_ends_step: bool = False) -> None:
        self._negated_levels = (-eval_levels.to(torch.float64)).contiguous()
        self._levels = eval_levels.to(torch.float64)
        self._boundary_call_ends_step = boundary_call_ends_step
        self.step = -1
        self._calls_in_step = 0

    def _is_level_of(self, step: int, level: float) -> bool:
        return 0 <= step < len(self._levels) and abs(level - float(self._levels[step])) <= LEVEL_TOLERANCE * max(abs(level), 1e-12)

    def observe(self, level: float) -> tuple[int, bool]:
        """(step of this call, whether the call is at the step's own start level)."""
        threshold = torch.tensor([-level * (1 - LEVEL_TOLERANCE)], dtype=torch.float64)
        mapped = int(torch.searchsorted(self._negated_levels, threshold, right=True)) - 1
        if (
            self._boundary_call_ends_step
            and self.step >= 0
            and mapped == self.step + 1
            and self._calls_in_step == 1
            and self._is_level_of(mapped, level)
        ):
            mapped = self.step
        if mapped > self.step:
            self.step = mapped
            self._calls_in_step = 0
        self.step = max(self.step, 0)
        self._calls_in_step += 1
        return self.step, self._is_level_of(self.step, level)


class DifferentialDiffusion:
    """Per-pixel release for one sampling run (one batch of images).

    ``pixel_strengths``: [B or 1, 1, h, w] denoising strength of each latent
    pixel (map value times the slider). ``init_latent`` and ``noise`` are what
    the host's img2img starts from (``x`` and ``noise`` of
    ``process_before_every_sampling``). ``levels`` is the sampler family's view
    of the schedule; ``run_strength`` the strength the run starts at.
    """

    def __init__(
        self,
        *,
        pixel_strengths: torch.Tensor,
        init_latent: torch.Tensor,
        noise: torch.Tensor,
        levels: SigmaLevels | TimestepLevels,
        steps: int,
        run_strength: float,
        fix_steps: bool = False,
        boundary_call_ends_step: bool = False,
        alphas_cumprod: torch.Tensor | None = None,
    ) -> None:
        if isinstance(levels, TimestepLevels) and alphas_cumprod is None:
            raise ValueError("timestep samplers need alphas_cumprod")
        self.init_latent = init_latent
        self.noise = noise
        self.levels = levels
        self.alphas_cumprod = alphas_cumprod
        self.run = img2img_start(run_strength, steps, fix_steps)
        self._schedule = dict(steps=steps, run_strength=run_strength, fix_steps=fix_steps)
        release = self.release_steps(pixel_strengths)
        self.release = release.to(init_latent.device)
        self.never_released = self.release == NEVER
        self.tracker = StepTracker(levels.eval_levels(self.run), boundary_call_ends_step)
        # Last step at which the blend still has work: pinned pixels, or a
        # release reset. Past it, calls cost nothing.
        finite = release[release != NEVER]
        self._last_busy_step = NEVER if bool(self.never_released.any()) else (int(finite.max()) if finite.numel() else -1)
        self._masks_for_step: int | None = None
        self._pinned = self._released_now = None
        self.calls: list[tuple[int, float, bool]] = []  # (step, level, at step start): for previews and tests

    def release_steps(self, pixel_strengths: torch.Tensor) -> torch.Tensor:
        """This run's release step for any strengths (e.g. at pixel resolution, for preserving pixels)."""
        return release_steps(pixel_strengths, self.levels, **self._schedule)

    @property
    def active(self) -> bool:
        """False when no pixel is ever pinned: the run is plain img2img."""
        return self._last_busy_step > 0

    def _masks(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._masks_for_step != step:
            self._pinned = self.release > step
            self._released_now = self.release == step
            self._masks_for_step = step
        return self._pinned, self._released_now

    def _timestep_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alphas_cumprod at (possibly fractional, for UniPC) timesteps, per row."""
        table = self.alphas_cumprod
        low = t.floor().clamp(0, len(table) - 1).long()
        high = (low + 1).clamp(max=len(table) - 1)
        fraction = (t - low.to(t.dtype)).to(table.dtype)
        return torch.where(fraction == 0, table[low], torch.lerp(table[low], table[high], fraction))

    def _renoised(self, level_rows: torch.Tensor) -> torch.Tensor:
        """The original at the state's noise level, exactly as the host's img2img builds it.

        Built in place in one fresh latent; addition commutes bit for bit, so
        this equals the host's expression.
        """
        if isinstance(self.levels, SigmaLevels):
            # sample_img2img: xi = x + noise * sigma_sched[0]
            return (self.noise * level_rows.reshape(-1, 1, 1, 1)).add_(self.init_latent)
        # Timestep samplers' img2img starts one table entry above its first call:
        # xi = x * sqrt(alphas_cumprod[t]) + noise * sqrt(1 - alphas_cumprod[t]).
        state_t = self.levels.state_timestep(self.run, level_rows).to(self.alphas_cumprod.device)
        alpha = self.alphas_cumprod[state_t].reshape(-1, 1, 1, 1)
        return (self.init_latent * torch.sqrt(alpha)).add_(self.noise * torch.sqrt(1 - alpha))

    def _pinned_prediction(self, x: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor:
        if isinstance(self.levels, SigmaLevels):
            return self.init_latent  # a denoiser's prediction is x0
        # eps such that the sampler's x0 estimate (x - sqrt(1 - a) eps) / sqrt(a) is the original
        alpha = self._timestep_alpha(level_rows.to(self.alphas_cumprod.device)).reshape(-1, 1, 1, 1)
        return (x - torch.sqrt(alpha) * self.init_latent) / torch.sqrt(1 - alpha)

    def before_call(self, x: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor | None:
        """Pin the sampler's state ``x`` in place; returns the mask of pinned pixels (None: no work)."""
        level = float(level_rows.max())  # one device sync per call
        step, at_step_start = self.tracker.observe(level)
        self.calls.append((step, level, at_step_start))
        if step > self._last_busy_step:
            return None
        pinned, released_now = self._masks(step)
        # Step 0's released pixels already hold the host's own start latent.
        to_set = pinned | released_now if (at_step_start and step > 0) else pinned
        if bool(to_set.any()):
            renoised = self._renoised(level_rows).to(x.dtype)
            x.copy_(torch.where(to_set, renoised, x, out=renoised))
        return pinned

    def after_call(self, prediction: torch.Tensor, x: torch.Tensor, level_rows: torch.Tensor, pinned: torch.Tensor | None) -> torch.Tensor:
        """The model's prediction with pinned pixels replaced by the original's."""
        if pinned is None or not bool(pinned.any()):
            return prediction
        return torch.where(pinned, self._pinned_prediction(x, level_rows).to(prediction.dtype), prediction)

    def wrap(self, forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``forward(x, level, *args, **kwargs)`` with the blend around it."""

        def forward_with_blend(x: torch.Tensor, level: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            level_rows = level if isinstance(level, torch.Tensor) else torch.full((x.shape[0],), float(level))
            pinned = self.before_call(x, level_rows)
            prediction = forward(x, level, *args, **kwargs)
            return self.after_call(prediction, x, level_rows, pinned)

        forward_with_blend.__wrapped__ = forward  # type: ignore[attr-defined]
        return forward_with_blend

    def finalize(self, samples: torch.Tensor) -> torch.Tensor:
        """Sampler output with never-released pixels set to the original exactly."""
        if not bool(self.never_released.any()):
            return samples
        return torch.where(self.never_released, self.init_latent.to(samples.dtype), samples)
