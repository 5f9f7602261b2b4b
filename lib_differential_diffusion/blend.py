"""The per-call blend that keeps pinned pixels on the re-noised original.

The algorithm in one screen
---------------------------
The paper (Levin & Fried, Algorithm 1): sample from T down to 0; after each
step t, a pixel whose map value is above the step's threshold (t / T) keeps
the sampler's result, every other pixel is replaced by the original noised to
level t - 1. So a pixel is *free* once its map value exceeds the threshold,
and *pinned* to the re-noised original before that.

Ours is the same rule, made exact per pixel against the host's img2img:

* ``schedule.release_steps`` gives each pixel its release step from the
  host's own img2img start rule (``t_enc = int(min(v * s, 0.999) * steps)``,
  ``img2img_fix_steps``) instead of a threshold ``v > t / T``, so the step at
  which a pixel of value v is freed is the step at which plain img2img at
  strength ``v * s`` starts. The paper's threshold is off by the rounding of
  that rule (and, for ``fix_steps``, by a different schedule).
* ``before_call`` writes the re-noised original into the sampler's own state
  ``x``, *before* the model call, for every pinned pixel and (on the first
  call of a step) for the pixels released at that step; ``levels.renoise`` is
  the host's own start latent at the call's level (model noise function,
  extra noise). So a released pixel starts from exactly the latent plain
  img2img at its strength starts from, even for ancestral/SDE samplers that
  add fresh noise to it in earlier steps.
* ``after_call`` replaces the prediction of pinned pixels with the one that
  keeps them on the original's path (``levels.pinned_prediction``), so
  multistep samplers' history sees the original, not a guess. A sampler
  without history reads a prediction only to make the next state, which
  ``before_call`` sets again: for it, only the last step's predictions (they
  make the output) are replaced.
* ``finalize`` sets pixels never released (value 0, or a strength that gives
  no sampling step) to the original latent exactly.

Smooth release (the ``smooth`` setting). The paper's rule, and ours above, give a
map at most as many amounts of change as the run has steps: every strength between
two levels of the host's grid (``k / steps``) snaps to the lower one, so a gradient
comes out as bands at 4-8 steps. With smooth release a pixel at ``k + f`` (in
steps, ``0 < f < 1``) runs free from level k's release step and, in the step
before it (level k + 1's release step), takes the share ``f`` of the model's
prediction and ``1 - f`` of the pinned one (``schedule.pixel_release`` gives step
and share; key 0, the host's single step for any strength below ``1 / steps``,
sits at half a step, so change grows from exactly 0 at strength 0):

* The mix is of *predictions*, not of states, wherever a pinned prediction carries
  a pixel along the original's path (k-diffusion samplers): the sampler then makes
  the state from the mixed prediction and adds its own noise, so the state's
  noise has exactly the sampler's statistics at every share; a mix of two states
  with independent noise would shrink it (what A1111's soft inpainting corrects
  after the fact). Later calls of the step (Heun's, DPM2's) find the pixel off the
  path: its pinned share there is the path's own prediction for that state
  (``path_prediction``: the offset kept, not pulled back through a small level),
  except for samplers that add fresh noise inside a step, whose offset is noise.
* Timestep samplers (DDIM, PLMS, UniPC) do not carry a pinned pixel along the path
  (A1111 calls the model one table entry below the state's level): there the pixel
  runs free from the step before and its state is mixed with the re-noised original
  at its release step; they draw no noise per step (eta 0), so no statistics shift.
* Shares 0 and 1 are the two levels exactly (lerp's endpoints), and a pixel whose
  strength is on a level (within 1e-6 of a step, as the host floors it) takes no
  share at all: maps on the grid are today's runs bit for bit, with or without
  smoothing. The run's own level is the top: strengths above it are that img2img.

With that, a uniform map v equals plain img2img at ``v * s`` bit for bit for
samplers without history or sequential noise wherever ``v * s`` is on the grid
(everywhere when smoothing is off), an all-ones map leaves the engine inactive
(plain img2img), and an all-zeros map returns the original.
"""

from __future__ import annotations

import bisect
from typing import Callable, NamedTuple, Protocol

import numpy as np
import torch

from .maps import MapValues
from .schedule import NoiseLevels, PixelRelease, img2img_start, never_released, pixel_release

# What the engine needs to know of a sampler, by its function's name (k-diffusion's, A1111's).
# Samplers whose step ends with a model call at the next step's level (``boundary_call_ends_step``).
# DPM2 a's midpoint is the geometric mean of the level and sigma_down, which at eta 1 is the next level.
BOUNDARY_CALL_SAMPLERS = frozenset({"sample_heun", "sample_dpm_2_ancestral", "restart_sampler"})
# Sampler functions (k-diffusion's, and A1111's DDIM and LCM) whose steps read no prediction of an earlier
# step: a call's prediction only moves the state that the next call starts from, and the blend sets
# a pinned pixel's state again at every call. Their pinned pixels' predictions need no replacing,
# except in the run's last step, whose predictions make the output. tests/test_engine.py proves
# each name (the same samples bit for bit) and that the other samplers do read them.
SAMPLERS_WITHOUT_HISTORY = frozenset(
    {"sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde", "sample_lcm", "ddim"}
)

# Deterministic sampler functions without history (at their default settings: no sigma churn, DDIM
# eta 0): a partly released pixel can run free from the step before its release and have its state
# mixed with the re-noised original's at the release, which is then exactly the mix of the pinned and
# the free trajectory, set in the pass that pins the other pixels.
SAMPLERS_MIXING_STATES = frozenset({"sample_euler", "sample_heun", "sample_dpm_2", "ddim"})
# Sampler functions that add fresh noise to the state inside a step, before its later calls. A later
# call finds a partly released pixel off the original's path by that noise too, which is not the
# image's: its pinned share is the original itself, not the path's prediction for the state.
SAMPLERS_WITH_NOISE_INSIDE_A_STEP = frozenset({"sample_dpmpp_sde"})

# Two levels closer than this (relative) are the same table entry; the host
# passes levels through float32 or float16 tensors.
LEVEL_TOLERANCE = 1e-4


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Checked in Python: even a no-op ``.to`` is a dispatch, and the blend runs in every model call.
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


class CallObserver(Protocol):
    """Sees every model call the engine attributes (tests and previews)."""

    def on_call(self, step: int, level: float, at_step_start: bool) -> None: ...


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
        # Plain floats: attributing a call costs no tensor work (and no device sync).
        self._levels = eval_levels.to(torch.float64).tolist()
        self._negated_levels = [-level for level in self._levels]
        self._boundary_call_ends_step = boundary_call_ends_step
        self.step = -1
        self._calls_in_step = 0

    def _is_level_of(self, step: int, level: float) -> bool:
        return 0 <= step < len(self._levels) and abs(level - self._levels[step]) <= LEVEL_TOLERANCE * max(abs(level), 1e-12)

    def observe(self, level: float) -> tuple[int, bool]:
        """(step of this call, whether the call is at the step's own start level)."""
        mapped = bisect.bisect_right(self._negated_levels, -level * (1 - LEVEL_TOLERANCE)) - 1
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

    @property
    def first_call_of_step(self) -> bool:
        """Whether the last observed call was its step's first (at the step's level or, for UniPC, between levels)."""
        return self._calls_in_step == 1


class PartialStep(NamedTuple):
    """What ``after_call`` needs in a step with partly released pixels."""

    shares: torch.Tensor  # each pixel's share of the model's prediction (0: pinned, 1: free)
    on_path: torch.Tensor | None  # the original re-noised to the call's level; None at the step's start (the pixels are on it)


class DifferentialDiffusion:
    """Per-pixel release for one sampling run (one batch of images).

    ``pixel_strengths``: [B or 1, 1, h, w] denoising strength of each latent
    pixel (map value times the slider). ``init_latent`` and ``noise`` are what
    the host's img2img starts from. ``levels`` is the sampler family's view of
    the schedule and noise rule; ``run_strength`` the strength the run starts at.
    ``sampler_keeps_history``: False for a sampler in ``SAMPLERS_WITHOUT_HISTORY``;
    ``sampler_noises_inside_a_step``: True for one in ``SAMPLERS_WITH_NOISE_INSIDE_A_STEP``;
    ``sampler_mixes_states``: True for one in ``SAMPLERS_MIXING_STATES``.
    ``smooth``: pixels between two levels are released partly in the step between them.
    """

    def __init__(
        self,
        *,
        pixel_strengths: torch.Tensor,
        init_latent: torch.Tensor,
        noise: torch.Tensor,
        levels: NoiseLevels,
        steps: int,
        run_strength: float,
        fix_steps: bool = False,
        boundary_call_ends_step: bool = False,
        sampler_keeps_history: bool = True,
        sampler_noises_inside_a_step: bool = False,
        sampler_mixes_states: bool = False,
        smooth: bool = False,
        observer: CallObserver | None = None,
    ) -> None:
        self.init_latent = init_latent
        self.noise = noise
        self.levels = levels
        self.observer = observer
        self.run = img2img_start(run_strength, steps, fix_steps)
        self._schedule = dict(steps=steps, run_strength=run_strength, fix_steps=fix_steps, smooth=smooth)
        release = self._pixel_release(pixel_strengths)
        device = init_latent.device
        self.release = release.step.to(device)
        self.release_weight = release.weight.to(device)
        eval_levels = levels.eval_levels(self.run)
        run_steps = self._run_steps = len(eval_levels)
        self.tracker = StepTracker(eval_levels, boundary_call_ends_step)
        # Steps whose pinned predictions are replaced: all, or only the last (it makes the output).
        self._first_step_replacing = 0 if sampler_keeps_history else run_steps - 1
        self._partial_share_from_path = not sampler_noises_inside_a_step
        weight = release.weight.numpy()
        partial = weight > 0

        def as_weights(mask: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(mask).to(device=device, dtype=init_latent.dtype)

        free_from = np.minimum(release.step.numpy(), run_steps)  # int32; never: the run's length
        # Where a pinned prediction carries a pixel along the original's path and the sampler keeps a
        # history or draws noise, a partly released pixel mixes the model's prediction with the
        # original's in the step before its release. Otherwise (pinned pixels only set again at every
        # call, or a deterministic sampler without history) it runs free from that step and its state is
        # mixed with the re-noised original's at its release (at the run's end: the original).
        self._mixes_predictions = levels.carries_pinned_path and not sampler_mixes_states
        # A pixel's pinning in one number: twice the step it runs free from; mixing predictions, one
        # less for a partly released pixel, mixing states, two less (it runs free a step earlier). Step
        # j's first call sets pixels with pin >= 2j + 1 to the re-noised original (>= 2j: and those
        # released at j), its other calls pixels with pin >= 2j + 2: a pixel mixing its prediction in
        # step j starts it on the original's path and then follows the sampler.
        # In numpy on the CPU copy: torch compares with broadcasting several times slower.
        pin = 2 * free_from - partial if self._mixes_predictions else 2 * (free_from - partial)  # int32
        self._last_pinned_step = (int(pin.max()) - 1) // 2  # the last step with a pinned (or partly released) pixel
        thresholds = 2 * min(self._last_pinned_step + 1, run_steps) + 1
        pins = np.bincount(pin.reshape(-1), minlength=thresholds + 1)
        # pin >= t for every threshold a call can ask about; where no pixel has pin t, it is the mask
        # of t + 1 (without partly released pixels every odd one is): compared and kept once.
        # On the device as 0/1 weights for lerp, in the latent's type: lerp's endpoints are its inputs
        # exactly (finite ones: a NaN state stays NaN, as the model's next call would make it), and on
        # the CPU it runs 2-10x faster than torch.where, which branches per element (measured 24-127 us
        # against 9 us for a 1x4x128x128 latent, ramp and random masks).
        pinned_from: list[np.ndarray] = [None] * thresholds  # type: ignore[list-item]
        pinned_on_device: list[torch.Tensor] = [None] * thresholds  # type: ignore[list-item]
        for threshold in reversed(range(thresholds)):
            if threshold + 1 < thresholds and pins[threshold] == 0:
                pinned_from[threshold], pinned_on_device[threshold] = pinned_from[threshold + 1], pinned_on_device[threshold + 1]
            else:
                pinned_from[threshold] = pin >= threshold
                pinned_on_device[threshold] = as_weights(pinned_from[threshold])
        self._pinned_from = pinned_on_device
        never = pin == 2 * run_steps
        self.never_released = torch.from_numpy(never).to(device)
        self._any_never_released = bool(never.any())
        self._never_released_weights = as_weights(never) if self._any_never_released else None
        # Steps at whose start released pixels are set to the host's start latent (even pins: released there).
        self._reset_steps = {index // 2 for index in np.flatnonzero(pins).tolist() if index % 2 == 0}

        def as_tensor(share: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(share.astype(np.float32, copy=False)).to(device)

        # Per step with partly released pixels: each pixel's share of the model's prediction, or (mixing
        # states) of its state at its release step's first call: 0 where that call pins the pixel (with
        # the pixels released there, or without), the mix, else 1 (one pass sets them all).
        self._prediction_shares: dict[int, torch.Tensor] = {}
        self._state_shares: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._shares_at_end: torch.Tensor | None = None
        for step in np.flatnonzero(np.bincount(free_from[partial])).tolist():  # the steps the partly released pixels run free from
            if self._mixes_predictions:
                share = (~pinned_from[2 * step - 1]).astype(np.float32)  # 1: free in the step before (step - 1)
                np.copyto(share, weight, where=pin == 2 * step - 1)
                self._prediction_shares[step - 1] = as_tensor(share)
                continue
            mixed = np.where(partial & (free_from == step), weight, np.float32(1.0))
            if step == run_steps:
                self._shares_at_end = as_tensor(mixed)
                continue
            with_resets = as_tensor(np.where(pin >= 2 * step, np.float32(0.0), mixed)) if step in self._reset_steps else None
            self._state_shares[step] = (as_tensor(np.where(pin >= 2 * step + 1, np.float32(0.0), mixed)), with_resets)
        self._last_active_step = max(self._last_pinned_step, max(self._state_shares, default=-1), run_steps - 1 if self._shares_at_end is not None else -1)

    def _pixel_release(self, pixel_strengths: torch.Tensor) -> PixelRelease:
        # On the CPU: per-step decisions need no device sync.
        return pixel_release(pixel_strengths.cpu(), self.levels, **self._schedule)

    def release_steps(self, pixel_strengths: torch.Tensor) -> torch.Tensor:
        """This run's release step for any strengths."""
        return self._pixel_release(pixel_strengths).step

    def never_released_pixels(self, strengths: np.ndarray | MapValues, slider: float) -> np.ndarray:
        """Which pixels of a map (strengths before the slider, e.g. at pixel resolution) this run never releases."""
        return never_released(strengths, slider, self.levels, **self._schedule)

    @property
    def active(self) -> bool:
        """False when no pixel is ever pinned: the run is plain img2img."""
        return self._last_active_step >= 0

    def before_call(self, x: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor | None:
        """Pin the sampler's state ``x`` in place; returns what ``after_call`` needs to replace
        predictions: pinned pixels as 0/1 weights, or each pixel's share of the model's prediction in a
        step with partly released pixels (None: nothing to replace)."""
        rows = level_rows.tolist()  # the one device sync of a call; no tensor op (in a call, each costs tens of µs)
        level = max(rows) if isinstance(rows, list) else rows
        step, at_step_start = self.tracker.observe(level)
        if self.observer is not None:
            self.observer.on_call(step, level, at_step_start)
        # Step 0's released pixels already hold the host's own start latent.
        resets_released = at_step_start and 0 < step < self._run_steps and step in self._reset_steps
        shares = self._prediction_shares.get(step)
        # States are mixed at the release step's first call, wherever it is made (UniPC's between levels).
        state_shares = self._state_shares.get(step) if self.tracker.first_call_of_step else None
        if step > self._last_pinned_step and not resets_released and state_shares is None:
            return None
        renoised = _as_dtype(self.levels.renoise(self.init_latent, self.noise, level_rows, self.run), x.dtype)
        if state_shares is not None:
            mix = state_shares[1] if resets_released else state_shares[0]
            torch.lerp(renoised, x, _as_dtype(mix, x.dtype), out=x)  # in place; shares 0 and 1 give the two sides exactly
        else:
            to_set = self._pinned_from[2 * step + (0 if resets_released else 1 if at_step_start else 2)]
            torch.lerp(x, renoised, _as_dtype(to_set, x.dtype), out=x)  # in place: one pass, no copy back
        if step > self._last_pinned_step:
            return None
        if shares is not None:
            return PartialStep(shares, None if at_step_start else renoised)
        return self._pinned_from[2 * step + 2] if step >= self._first_step_replacing else None

    def after_call(self, prediction: torch.Tensor, x: torch.Tensor, level_rows: torch.Tensor, pinned: torch.Tensor | PartialStep | None) -> torch.Tensor:
        """The model's prediction with pinned pixels' predictions replaced by the original's (a partly
        released pixel's: the two mixed by its share)."""
        if pinned is None:
            return prediction
        if isinstance(pinned, PartialStep):
            # A later call of the step finds a partly released pixel off the original's path: the
            # path's prediction for the state as it is mixes velocities, not a pull back to the
            # original (which steps like Heun's would divide by a small level). At the step's start
            # the pixel is on the path, and this is pinned_prediction exactly.
            if self._partial_share_from_path and pinned.on_path is not None:
                original = self.levels.path_prediction(x, pinned.on_path, self.init_latent, level_rows)
            else:
                original = self.levels.pinned_prediction(x, self.init_latent, level_rows)
            # Exact at shares 0 and 1 (lerp's two-sided formula): pinned and free pixels as without shares.
            return torch.lerp(_as_dtype(original, prediction.dtype), prediction, _as_dtype(pinned.shares, prediction.dtype))
        original = _as_dtype(self.levels.pinned_prediction(x, self.init_latent, level_rows), prediction.dtype)
        return torch.lerp(prediction, original, _as_dtype(pinned, prediction.dtype))

    def wrap(self, forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``forward(x, level, *args, **kwargs)`` with the blend around it."""

        def forward_with_blend(x: torch.Tensor, level: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            if x.shape[-2:] != self.init_latent.shape[-2:]:
                # A call at another resolution (samplers that resample the latent inside a step,
                # e.g. reForge's SMEA ones): no pixel of it is ours to pin. The next call at the
                # run's resolution pins them again; finalize keeps never-released pixels exact.
                return forward(x, level, *args, **kwargs)
            level_rows = level if isinstance(level, torch.Tensor) else torch.full((x.shape[0],), float(level))
            pinned = self.before_call(x, level_rows)
            prediction = forward(x, level, *args, **kwargs)
            return self.after_call(prediction, x, level_rows, pinned)

        forward_with_blend.__wrapped__ = forward  # type: ignore[attr-defined]
        return forward_with_blend

    def finalize(self, samples: torch.Tensor) -> torch.Tensor:
        """Sampler output with never-released pixels set to the original exactly (and pixels released
        partly at the run's end, where states are mixed, mixed with it)."""
        at_end = self._shares_at_end
        if not self._any_never_released and at_end is None:
            return samples
        original = self.init_latent.to(samples.dtype)
        if at_end is not None:
            samples = torch.lerp(original, samples, _as_dtype(at_end, samples.dtype))
        if self._never_released_weights is None:
            return samples
        return torch.lerp(samples, original, _as_dtype(self._never_released_weights, samples.dtype))
