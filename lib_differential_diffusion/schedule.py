"""When each pixel is released: A1111's img2img start rule, applied per pixel.

Plain img2img at denoising strength ``s`` starts sampling part-way down the
noise schedule (``sd_samplers_common.setup_img2img_steps``). Differential
Diffusion gives every pixel its own strength ``v * s``; a pixel is *released*
at the first step of the run whose noise level is no higher than the level at
which plain img2img at its strength would start, and is pinned to the
re-noised original before that.

Levels are what the sampler passes to its denoiser: sigma for k-diffusion
samplers, the timestep for DDIM/PLMS/UniPC. Both fall as sampling proceeds.
Each family also knows how the host noises the original to a level (its
``start_latent`` rule, handed in by the host adapter: the model's own noise
function and the host's extra noise) and what prediction keeps a pinned
pixel on that path.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import astuple, dataclass
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch

from .maps import EIGHT_BIT_VALUES, MapValues

# Release step of a pixel that is never released (strength 0, or a strength
# whose img2img run would have no sampling step in this run).
NEVER = torch.iinfo(torch.int32).max

# With img2img_fix_steps, plain img2img at a tiny strength builds a schedule of
# steps / strength entries; past this many, the pixel counts as unchanged
# instead of building a huge table (A1111's timestep table stops at 1000).
MAX_TOTAL_STEPS = 1000

StartLatent = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(init, noise, level) -> start latent``: where the host's img2img starts at a
noise level (``level`` broadcasts over the latent: one value per batch row)."""


def additive_noise(init: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """k-diffusion's img2img start ``x + noise * sigma`` (one fresh latent; addition commutes bit for bit)."""
    return (noise * sigma).add_(init)


def ddpm_noise(init: torch.Tensor, noise: torch.Tensor, alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """Timestep samplers' img2img start ``x * sqrt(a) + noise * sqrt(1 - a)``."""
    return (init * torch.sqrt(alpha_cumprod)).add_(noise * torch.sqrt(1 - alpha_cumprod))


def sigma_start_rule(add_noise_to_latent: StartLatent | None = None, extra_noise: float = 0.0) -> StartLatent:
    """A1111's k-diffusion img2img start (``sample_img2img``): the model's own noise function
    where it has one (flow models: ``x (1 - sigma) + noise sigma``), else ``x + noise sigma``;
    then the "Extra noise" setting adds ``noise * extra``, whatever the level."""
    noised = add_noise_to_latent or additive_noise
    if extra_noise <= 0:
        return noised

    def start(init: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        latent = noised(init, noise, sigma)
        latent += noise * extra_noise
        return latent

    return start


def alpha_start_rule(extra_noise: float = 0.0) -> StartLatent:
    """A1111's timestep samplers' img2img start; "Extra noise" adds ``noise * extra * sqrt(a)``."""
    if extra_noise <= 0:
        return ddpm_noise

    def start(init: torch.Tensor, noise: torch.Tensor, alpha_cumprod: torch.Tensor) -> torch.Tensor:
        latent = ddpm_noise(init, noise, alpha_cumprod)
        latent += noise * extra_noise * torch.sqrt(alpha_cumprod)
        return latent

    return start


@dataclass(frozen=True)
class Img2ImgStart:
    """Where plain A1111 img2img starts: the schedule length and ``t_enc``."""

    total_steps: int
    t_enc: int


def img2img_start(strength: float, steps: int, fix_steps: bool) -> Img2ImgStart:
    """``sd_samplers_common.setup_img2img_steps`` of A1111 v1.10.1, verbatim in effect."""
    if fix_steps:
        total = int(steps / min(strength, 0.999)) if strength > 0 else 0
        return Img2ImgStart(total, steps - 1)
    return Img2ImgStart(steps, int(min(strength, 0.999) * steps))


class NoiseLevels(Protocol):
    """One sampler family's view of the schedule (see the two classes below)."""

    carries_pinned_path: bool
    """Whether the sampler's update with ``pinned_prediction`` moves a state on the original's path
    to the path's state at the next call (else pinned pixels are only set again at every call)."""

    def start_level(self, start: Img2ImgStart) -> float:
        """Noise level of the latent plain img2img starts from."""

    def step_levels(self, start: Img2ImgStart) -> torch.Tensor:
        """Per run step: the level of the state at the step's start (falling)."""

    def eval_levels(self, start: Img2ImgStart) -> torch.Tensor:
        """Per run step: the level at which the step's first model call happens."""

    def renoise(self, init: torch.Tensor, noise: torch.Tensor, level_rows: torch.Tensor, run: Img2ImgStart) -> torch.Tensor:
        """The original at the state's level for a call at ``level_rows``, exactly as the host's img2img starts there."""

    def pinned_prediction(self, x: torch.Tensor, init: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor:
        """The model output that keeps a pixel whose state is ``x`` on the original's path."""

    def path_prediction(self, x: torch.Tensor, on_path: torch.Tensor, init: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor:
        """The model output that moves a state ``x`` off the path (``on_path``: the path's state at the
        call) as the path moves: the original's noise, the state's offset kept. ``pinned_prediction``
        where ``x`` is ``on_path``."""


class SigmaLevels:
    """k-diffusion samplers: ``sigma_sched = sigmas[steps - t_enc - 1:]``, state = x0 + sigma * noise.

    ``sigmas_for_steps(n)`` must return the host's schedule for ``n`` steps
    (``KDiffusionSampler.get_sigmas``), ending with 0; ``start_latent`` the
    host's img2img start at a sigma (flow models: ``x (1 - sigma) + noise sigma``).
    The denoiser predicts x0, so predicting the original keeps a pixel on
    the path (Euler moves a state along it exactly, for either rule).
    """

    carries_pinned_path = True  # a step with x0 = the original moves x0 + sigma noise along sigma

    def __init__(self, sigmas_for_steps: Callable[[int], torch.Tensor], start_latent: StartLatent = additive_noise) -> None:
        self._sigmas_for_steps = sigmas_for_steps
        self._start_latent = start_latent
        self._cache: dict[int, torch.Tensor] = {}

    def sigmas(self, total_steps: int) -> torch.Tensor:
        if total_steps not in self._cache:
            self._cache[total_steps] = self._sigmas_for_steps(total_steps).detach().to("cpu", torch.float64)
        return self._cache[total_steps]

    def start_level(self, start: Img2ImgStart) -> float:
        if start.total_steps > MAX_TOTAL_STEPS:
            return 0.0
        return float(self.sigmas(start.total_steps)[start.total_steps - start.t_enc - 1])

    def step_levels(self, start: Img2ImgStart) -> torch.Tensor:
        # t_enc + 1 steps, each from sigma_sched[i] to sigma_sched[i + 1].
        return self.sigmas(start.total_steps)[start.total_steps - start.t_enc - 1 : -1]

    def eval_levels(self, start: Img2ImgStart) -> torch.Tensor:
        return self.step_levels(start)

    def renoise(self, init: torch.Tensor, noise: torch.Tensor, level_rows: torch.Tensor, run: Img2ImgStart) -> torch.Tensor:
        return self._start_latent(init, noise, level_rows.reshape(-1, 1, 1, 1))

    def pinned_prediction(self, x: torch.Tensor, init: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor:
        return init

    def path_prediction(self, x: torch.Tensor, on_path: torch.Tensor, init: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor:
        # x0 space: the original plus the state's offset from the path (exactly init where x is on it)
        return (x - on_path).add_(init)


class TimestepLevels:
    """A1111's timestep samplers (``sd_samplers_timesteps``).

    ``timesteps = clip(range(0, 1000, 1000 // steps) + 1, 0, 999)``; img2img
    noises the start latent at ``timesteps[t_enc]`` but calls the model first
    at ``timesteps[t_enc - 1]`` (then down to ``timesteps[1]``, each state at
    its call's level). A pixel released at a call must start exactly like
    img2img starting there, so pinned pixels are set one table entry above
    the call's timestep (``state_timestep``).
    ``timesteps_for_steps(n)`` must return the host's table (``get_timesteps``);
    ``alphas_cumprod`` is the model's; ``start_latent`` takes alpha_cumprod
    as its level. The model predicts eps: a pinned pixel gets the eps that
    makes the sampler's x0 estimate the original.
    """

    carries_pinned_path = False  # the state's level is one table entry above the call's, not the update's target

    def __init__(
        self,
        timesteps_for_steps: Callable[[int], torch.Tensor],
        alphas_cumprod: torch.Tensor,
        start_latent: StartLatent = ddpm_noise,
    ) -> None:
        self._timesteps_for_steps = timesteps_for_steps
        self.alphas_cumprod = alphas_cumprod
        self._start_latent = start_latent
        self._cache: dict[int, torch.Tensor] = {}

    def timesteps(self, total_steps: int) -> torch.Tensor:
        if total_steps not in self._cache:
            self._cache[total_steps] = self._timesteps_for_steps(total_steps).detach().to("cpu", torch.float64)
        return self._cache[total_steps]

    def start_level(self, start: Img2ImgStart) -> float:
        if start.total_steps > MAX_TOTAL_STEPS:
            return 0.0
        return float(self.timesteps(start.total_steps)[start.t_enc])

    def step_levels(self, start: Img2ImgStart) -> torch.Tensor:
        # t_enc - 1 steps; step i's state sits at timesteps[t_enc - i].
        return self.timesteps(start.total_steps)[2 : start.t_enc + 1].flip(0)

    def eval_levels(self, start: Img2ImgStart) -> torch.Tensor:
        return self.timesteps(start.total_steps)[1 : start.t_enc].flip(0)

    def state_timestep(self, start: Img2ImgStart, call_timesteps: torch.Tensor) -> torch.Tensor:
        """Timestep img2img would start from for a first call at ``call_timesteps``: the next table entry up."""
        # On the calls' device: no sync.
        table = self.timesteps(start.total_steps).to(call_timesteps.device)
        above = torch.searchsorted(table, call_timesteps.detach().to(torch.float64).contiguous(), right=True)
        return table[above.clamp(max=len(table) - 1)].long()

    def renoise(self, init: torch.Tensor, noise: torch.Tensor, level_rows: torch.Tensor, run: Img2ImgStart) -> torch.Tensor:
        state_t = self.state_timestep(run, level_rows).to(self.alphas_cumprod.device)
        return self._start_latent(init, noise, self.alphas_cumprod[state_t].reshape(-1, 1, 1, 1))

    def pinned_prediction(self, x: torch.Tensor, init: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor:
        # eps such that the sampler's x0 estimate (x - sqrt(1 - a) eps) / sqrt(a) is the original
        alpha = self._alpha_at(level_rows.to(self.alphas_cumprod.device)).reshape(-1, 1, 1, 1)
        return (x - torch.sqrt(alpha) * init) / torch.sqrt(1 - alpha)

    def path_prediction(self, x: torch.Tensor, on_path: torch.Tensor, init: torch.Tensor, level_rows: torch.Tensor) -> torch.Tensor:
        # eps space: the path's own eps (its noise), whatever the state
        return self.pinned_prediction(on_path, init, level_rows)

    def _alpha_at(self, t: torch.Tensor) -> torch.Tensor:
        """alphas_cumprod at (possibly fractional, for UniPC) timesteps, per row."""
        table = self.alphas_cumprod
        low = t.floor().clamp(0, len(table) - 1).long()
        high = (low + 1).clamp(max=len(table) - 1)
        fraction = (t - low.to(t.dtype)).to(table.dtype)
        return torch.where(fraction == 0, table[low], torch.lerp(table[low], table[high], fraction))


def _img2img_start_indices(strengths: np.ndarray, steps: int, fix_steps: bool) -> np.ndarray:
    """``img2img_start`` for a whole array of float64 strengths: the key that decides the start, plus 1
    (flat, intp), floored as Python floors it.

    Without ``fix_steps`` the key is ``t_enc`` (0 .. steps - 1); with it, the
    schedule length ``steps / strength`` (``t_enc`` is always ``steps - 1``),
    capped at ``MAX_TOTAL_STEPS + 1``. Strength 0 gets key -1 (index 0).
    """
    flat = strengths.reshape(-1)
    keys = np.minimum(flat, 0.999)
    if fix_steps:
        np.divide(steps, np.maximum(keys, 1e-300, out=keys), out=keys)
        np.minimum(np.floor(keys, out=keys), MAX_TOTAL_STEPS + 1, out=keys)
    else:
        np.floor(np.multiply(keys, steps, out=keys), out=keys)
    keys[~(flat > 0)] = -1  # NaN too
    indices = keys.astype(np.intp)
    indices += 1
    return indices


def _steps_noisier_than(run_levels: list[float], start_level: float) -> int:
    """How many run steps start noisier than a pixel's img2img start: the step it is released at
    (``len(run_levels)``: never)."""
    return sum(level > start_level for level in run_levels)


# A strength this close (in steps) to a level is on it: float noise in ``v * s * steps``
# (0.29 * 100 is 28.999...; the host floors it, and so does the level it is on).
ON_LEVEL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PixelRelease:
    """When each pixel is released.

    ``step``: the first step in which the pixel runs free (int32, ``NEVER``: none).
    ``weight``: a pixel between two levels (smooth release) takes this share of the model's
    prediction in the step before ``step`` (for ``NEVER``: the run's last step), the original's
    prediction the rest; 0 for a pixel on a level.
    """

    step: torch.Tensor
    weight: torch.Tensor


def _release_table(indices: np.ndarray, run_levels: list[float], levels: NoiseLevels, steps: int, fix_steps: bool) -> list[int]:
    """Release step of every start index present (``NEVER`` where none), by index."""
    # Few distinct starts (at most steps, or MAX_TOTAL_STEPS): evaluate each once.
    present = np.flatnonzero(np.bincount(indices)).tolist()
    release_by_key = [NEVER] * (present[-1] + 1 if present else 1)
    negated = sorted(-level for level in run_levels)  # levels above a start: negated ones below its negation
    for index in present:
        key = index - 1
        if 0 <= key <= MAX_TOTAL_STEPS:
            start = Img2ImgStart(key, steps - 1) if fix_steps else Img2ImgStart(steps, key)
            count = bisect.bisect_left(negated, -levels.start_level(start))  # _steps_noisier_than, by bisection
            if count < len(run_levels):
                release_by_key[index] = count
    return release_by_key


@dataclass(frozen=True)
class _LevelAnchors:
    """Smooth release's anchors: in steps (``c = min(v, 0.999) * steps``), strength 0 (never
    released) at ``c = 0``; key 0, the host's one step for every strength in ``(0, 1 / steps)``, at
    ``c = 0.5``; key ``k >= 1`` (plain img2img at ``k / steps``) at ``c = k``. ``position``: each
    anchor's release step (``never_at``, the run's length, for never)."""

    steps: int
    at: np.ndarray
    position: np.ndarray
    never_at: int

    @classmethod
    def of(cls, run_levels: list[float], levels: NoiseLevels, steps: int, top_key: int) -> _LevelAnchors:
        keys = np.arange(top_key + 1)
        release = np.array(_release_table(keys + 1, run_levels, levels, steps, False), dtype=np.float64)[1:]
        never_at = len(run_levels)
        np.minimum(release, never_at, out=release)
        return cls(steps, np.concatenate([[0.0, 0.5], keys[1:]]), np.concatenate([[never_at], release]), never_at)

    def release(self, strengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Release step (int32) and partial weight (float64) of flat float64 strengths.

        A pixel's release position is interpolated between its two neighbouring anchors': it runs
        free from the step above the position and takes the fraction's share in the step before.
        Within ``ON_LEVEL_TOLERANCE`` of a key the pixel is on that key as the host floors it
        (0.29 * 100 is key 28), with no share.
        """
        scaled = np.minimum(strengths, 0.999) * self.steps
        position = np.interp(scaled, self.at, self.position)
        nearest = np.rint(scaled)
        on_key = (np.abs(scaled - nearest) < ON_LEVEL_TOLERANCE) & (nearest >= 1)
        if on_key.any():
            position[on_key] = self.position[1:][np.floor(scaled[on_key]).astype(np.intp)]
        position[~(strengths > 0)] = self.never_at  # NaN too
        free_from = np.ceil(position)
        weight = free_from - position
        weight[weight < ON_LEVEL_TOLERANCE] = 0.0
        return np.where(free_from >= self.never_at, NEVER, free_from).astype(np.int32), weight


def _release_arrays(
    strengths: np.ndarray, run_levels: list[float], levels: NoiseLevels, steps: int, fix_steps: bool, smooth: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Release step (int32) and partial weight (float64, None when none) of flat float64 strengths."""
    if smooth and not fix_steps:
        top_key = int(min(steps - 1, math.floor(min(np.nanmax(strengths, initial=0.0), 0.999) * steps) + 1))  # no key above it is read
        release, weight = _LevelAnchors.of(run_levels, levels, steps, top_key).release(strengths)
        return release, weight if weight.any() else None
    indices = _img2img_start_indices(strengths, steps, fix_steps)
    return np.array(_release_table(indices, run_levels, levels, steps, fix_steps), dtype=np.int32).take(indices), None


def pixel_release(
    pixel_strengths: torch.Tensor,
    levels: NoiseLevels,
    *,
    steps: int,
    run_strength: float,
    fix_steps: bool,
    smooth: bool = False,
) -> PixelRelease:
    """Release step of every pixel (and, with ``smooth``, the partial release of pixels between levels).

    ``pixel_strengths`` holds each pixel's own denoising strength (map * slider),
    ideally float64 so that products like 0.7 * 10 floor exactly as A1111's
    Python floats do. A pixel is released at the first run step whose state is
    no noisier than plain img2img's start at the pixel's strength. With
    ``fix_steps`` off, that start is an entry of the run's own table, so the
    result is exactly ``t_enc(run) - t_enc(pixel)``. ``smooth`` (``fix_steps`` off): a pixel
    between two levels is released partly in the step between their release steps.
    """
    # numpy and plain floats: a few passes over the pixels, a handful of comparisons per start.
    run_levels = levels.step_levels(img2img_start(run_strength, steps, fix_steps)).tolist()
    strengths = pixel_strengths.detach().to("cpu", torch.float64).numpy().reshape(-1)
    release, weight = _release_arrays(strengths, run_levels, levels, steps, fix_steps, smooth)
    shape = pixel_strengths.shape
    weights = torch.zeros(shape, dtype=torch.float32) if weight is None else torch.from_numpy(weight.astype(np.float32)).reshape(shape)
    return PixelRelease(torch.from_numpy(release).reshape(shape), weights)


def release_steps(
    pixel_strengths: torch.Tensor,
    levels: NoiseLevels,
    *,
    steps: int,
    run_strength: float,
    fix_steps: bool,
) -> torch.Tensor:
    """Release step of every pixel (int32, same shape), ``NEVER`` for never: ``pixel_release``'s steps without smoothing."""
    return pixel_release(pixel_strengths, levels, steps=steps, run_strength=run_strength, fix_steps=fix_steps).step


def never_released(
    strengths: np.ndarray | MapValues,
    slider: float,
    levels: NoiseLevels,
    *,
    steps: int,
    run_strength: float,
    fix_steps: bool,
    smooth: bool = False,
) -> np.ndarray:
    """Which pixels of a float32 map (strengths before the slider) are never released, not even partly.

    The same answer as ``pixel_release(strengths * slider)`` (step ``NEVER``, weight 0), in one
    comparison per pixel: without ``fix_steps`` release grows with v, so "never released" is
    "v below a threshold"; the threshold is found by bisecting float32 values with the exact
    float64 arithmetic of the per-pixel rule. With ``fix_steps`` (a schedule per strength) every
    pixel is evaluated.
    ``MapValues`` with 8-bit stored values: the threshold becomes an 8-bit one, and a quarter
    of the bytes are read (no float map is made).
    """
    strengths = strengths if isinstance(strengths, MapValues) else MapValues(strengths)
    if fix_steps:
        release = release_steps(torch.from_numpy(np.ascontiguousarray(strengths.values)).to(torch.float64) * slider, levels, steps=steps, run_strength=run_strength, fix_steps=True)
        return (release == NEVER).numpy()
    run_levels = levels.step_levels(img2img_start(run_strength, steps, False)).tolist()  # plain floats: no tensor work per key

    if smooth:
        anchors = _LevelAnchors.of(run_levels, levels, steps, steps - 1)

        def released(value: np.float32) -> bool:
            release, weight = anchors.release(np.array([np.float64(value) * slider]))
            return release[0] != NEVER or weight[0] > 0

    else:

        def key_released(key: int) -> bool:
            return _steps_noisier_than(run_levels, levels.start_level(Img2ImgStart(steps, key))) < len(run_levels)

        first_released = bisect.bisect_left(range(steps), True, key=key_released)  # released keys: from the first up
        if first_released == steps:
            return np.ones(strengths.shape, dtype=bool)

        def released(value: np.float32) -> bool:
            product = float(np.float64(value) * slider)  # as release_steps: float64 of the float32 value, times the slider
            return product > 0 and math.floor(min(product, 0.999) * steps) >= first_released

    if strengths.stored_8bit is not None:
        # The decoded values grow with the stored ones: bisect the 256 of them.
        first = bisect.bisect_left(range(256), True, key=lambda index: released(EIGHT_BIT_VALUES[index]))
        return strengths.stored_8bit < np.uint8(first) if first < 256 else np.ones(strengths.shape, dtype=bool)
    # Non-negative float32 values order like their bit patterns: bisect those.
    one = int(np.float32(1.0).view(np.int32))
    first = bisect.bisect_left(range(one + 1), True, key=lambda bits: released(np.int32(bits).view(np.float32)))
    if first > one:
        return np.ones(strengths.shape, dtype=bool)
    return strengths.values < np.int32(first).view(np.float32)


def _key_strength(key: int, steps: int) -> float:
    """The smallest strength whose img2img start key is at least ``key`` (as the host floors it)."""
    if key > int(0.999 * steps):
        return 1.0  # no strength reaches it
    strength = key / steps
    while int(min(strength, 0.999) * steps) < key:  # 1/49 * 49 is 0.999...
        strength = math.nextafter(strength, 1.0)
    return strength


def skip_start_strength(pixel_strengths: torch.Tensor, run_strength: float, steps: int, smooth: bool = False) -> float:
    """Strength to start the run at: the largest pixel strength, if below the slider.

    Every step before the first release pins all pixels, so starting at the
    first release gives the same result with fewer model calls for samplers
    that keep no history and draw no sequential noise (the engine's tests prove
    which); for the others it makes a uniform map exactly plain img2img at its
    strength. With ``smooth``, a largest strength between two levels is released
    partly in the upper level's step: the run starts there. Never below the smallest
    strength that still samples one step more than the last (``t_enc >= 1``): some
    samplers fail on a single step.
    """
    largest = float(pixel_strengths.to(torch.float64).max())
    if smooth:
        # The level above the largest strength (in steps: key 0 sits at half a step; on a key, none).
        scaled = min(largest, 0.999) * steps
        nearest = round(scaled)
        if scaled > 0 and not (abs(scaled - nearest) < ON_LEVEL_TOLERANCE and nearest >= 1):
            largest = max(largest, _key_strength(1 if scaled >= 0.5 else 0, steps) if scaled < 1 else _key_strength(min(math.floor(scaled) + 1, steps - 1), steps))
    start = min(largest, run_strength)
    return max(start, min(_key_strength(1, steps), run_strength))


@dataclass(frozen=True)
class StepCounting:
    """What in the host counts steps from the run's start; any of them forbids step skipping."""

    fix_steps: bool = False  # img2img_fix_steps: the schedule depends on the strength
    skip_early_cfg: bool = False  # CFG off for the first steps, by step fraction
    uncond_every_other_call: bool = False  # negative guidance minimum sigma alternates by call count
    refiner_switch_by_steps: bool = False
    sampler_needs_its_steps: bool = False  # UniPC fails with fewer steps than its order
    prompt_schedules: bool = False  # prompt editing [a:b:step]


def can_skip_steps(counting: StepCounting) -> bool:
    """Skip the all-pinned first steps unless something counts steps from the run's start."""
    return not any(astuple(counting))


def has_prompt_schedules(conditionings: Iterable[Any]) -> bool:
    """Whether any prompt switches by step (``[a:b:step]``).

    Takes the host's conditionings: a MulticondLearnedConditioning (per image:
    composable prompts, each with its schedules) or a list per image of
    scheduled conditionings.
    """
    for conditioning in conditionings:
        for entries in getattr(conditioning, "batch", conditioning) or ():
            if not isinstance(entries, (list, tuple)):
                continue
            if any(len(getattr(entry, "schedules", ())) > 1 for entry in entries):
                return True
            if len(entries) > 1 and not any(hasattr(entry, "schedules") for entry in entries):
                return True
    return False
