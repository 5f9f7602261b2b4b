"""Real-host proofs of the extension's promises on AUTOMATIC1111 WebUI v1.10.1 (CPU, tiny
graded checkpoints, 64x64-ish images, 10 steps).

What each test proves is in its docstring. Numbers that are measured rather than asserted
(diffs of non-identical samplers, timings) go to the "webui measurements" section of pytest's
terminal summary (``host.MEASUREMENTS``).

Every server runs with ``SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST=1`` (host.py), which mounts the
extension's test-only route ``GET /differential-diffusion/v1/test/last-run``: the last enabled
run's engine report ``{"sampler", "release": [B][1][h][w], "calls": [[step, level,
at_step_start], ...], "active"}``.

Bit-for-bit comparisons prime the request (``prime=True``): A1111's VAE encode draws from the
global torch RNG that the previous request left (tests/webui/README.md, "Pitfalls").
"""
from __future__ import annotations

import json
import threading
import time

import a1111_images
import numpy as np
import pytest
import requests
from PIL import Image

from webui.host import (MEASUREMENTS, SCRIPT_TITLE, current_profile, decode_images, images_equal, img2img_payload,
                        make_init_image, make_map_image, max_change, mean_change, png_b64,
                        post_img2img, response_info, xyz_args, xyz_axis_labels)

pytestmark = pytest.mark.webui

NEVER = 2**31 - 1
STEPS = 10
TEST_ROUTE = "/differential-diffusion/v1/test/last-run"

# The samplers A1111 v1.10.1 lists (GET /sdapi/v1/samplers); test_sampler_list_is_covered
# fails if the host lists one that is not here, so none is silently left out.
SAMPLERS = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
]
# Forge-family hosts list more (host.HostProfile.extra_samplers): all-ones and all-zeros cover them too.
_PROFILE = current_profile()
HOST_SAMPLERS = SAMPLERS + [s for s in (_PROFILE.extra_samplers if _PROFILE else ()) if s not in SAMPLERS]
TIMESTEP_SAMPLERS = {"DDIM", "DDIM CFG++", "PLMS", "UniPC"} - set(_PROFILE.sigma_samplers if _PROFILE else ())
# Adaptive solvers are left out of the per-sampler runs: their step count is their own error
# control's, and on the random-ish test models a run can run away (DPM adaptive: 0.35 s in some
# suites, 1500+ iterations in another, poisoning the server for the tests after it; reForge's
# ODE (Dopri5) sat at its first of 100 solve steps for minutes). Measured by hand on v1.10.1
# for DPM adaptive: all-ones == plain, all-zeros == input, uniform == plain, each bit for bit.
ADAPTIVE_SAMPLERS = {"DPM adaptive", "ODE (Bosh3)", "ODE (Fehlberg2)", "ODE (Adaptive Heun)", "ODE (Dopri5)", "ODE Custom"}
RUN_SAMPLERS = [s for s in HOST_SAMPLERS if s not in ADAPTIVE_SAMPLERS]
# The extension starts sampling at the map's largest strength except for these samplers
# (README "Speed"); a uniform map is then plain img2img at its strength, bit for bit.
NO_STEP_SKIP = {"UniPC"}


# --------------------------------------------------------------------------- helpers

def dd(map_image: Image.Image | str | None = None, **options) -> dict:
    """``alwayson_scripts`` value enabling the extension with ``map_image`` and ``options``."""
    args = dict(options)
    if map_image is not None:
        args["map"] = map_image if isinstance(map_image, str) else png_b64(map_image)
    return {SCRIPT_TITLE: {"args": [args]}}


def last_run(server) -> dict:
    r = server.get(TEST_ROUTE)
    assert r.status_code == 200, f"test route {TEST_ROUTE} answered {r.status_code} (is SD_WEBUI_DIFFERENTIAL_DIFFUSION_TEST=1 set?)"
    report = r.json()
    assert report, "the test route has no report: no enabled run has sampled yet"
    return report


def t_enc(strength: float, steps: int = STEPS) -> int:
    """A1111's img2img start (img2img_fix_steps off): int(min(strength, 0.999) * steps)."""
    return int(min(strength, 0.999) * steps)


def map_value(level8: int) -> float:
    """The extension's value of an 8-bit gray level (float32 division, as decode_map)."""
    return float(np.float32(level8) / np.float32(255))


def expected_release(v: float, strength: float, run_t_enc: int, timestep: bool) -> int:
    """Release step of a pixel of map value v (README; tests/webui brief):
    k-diffusion: t_enc(run) - t_enc(v*s) over t_enc(run) + 1 steps;
    timestep samplers: the same over t_enc(run) - 1 steps, never if >= t_enc(run) - 1."""
    if v <= 0:
        return NEVER
    release = run_t_enc - t_enc(v * strength)
    n_steps = run_t_enc - 1 if timestep else run_t_enc + 1
    return NEVER if release >= n_steps else release


def image_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def server_idle(server, timeout: float = 120.0) -> None:
    """Wait until the server has no job (after an interrupt or a client-side timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = server.get("/sdapi/v1/progress?skip_current_image=true", timeout=10).json()["state"]
            if not state.get("job_count"):
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"server still busy after {timeout} s")


def bounded_img2img(server, timeout: float, **payload) -> requests.Response | None:
    """post_img2img, but past ``timeout`` seconds interrupt the job and return None."""
    try:
        return post_img2img(server, timeout=timeout, **payload)
    except requests.Timeout:
        server.post("/sdapi/v1/interrupt", {}, timeout=30)
        server_idle(server)
        return None


def measure(line: str) -> None:
    MEASUREMENTS.append(line)
    print(line)


def band_map(levels=(0, 64, 128, 191, 255), width: int = 160, height: int = 64) -> Image.Image:
    """Vertical bands of the given 8-bit gray levels, each width/len(levels) pixels wide."""
    a = np.zeros((height, width), np.uint8)
    n = len(levels)
    for i, level in enumerate(levels):
        a[:, i * width // n:(i + 1) * width // n] = level
    return Image.fromarray(a, "L")


def band_width(server) -> int:
    """A width for five bands of whole latent pixels (160: 4 each) that the host generates as asked
    (Neo rounds sizes to 64: 320)."""
    return next(w for w in range(160, 2000, 160) if server.host.profile.generated_size(w, 64) == (w, 64))


def assert_ok(r: requests.Response) -> requests.Response:
    assert r is not None
    assert r.status_code == 200, f"img2img answered {r.status_code}: {r.text[:2000]}"
    return r


def assert_dd_in_infotext(r: requests.Response) -> None:
    params = response_info(r).get("extra_generation_params", {})
    assert params.get(SCRIPT_TITLE) is True, f"no 'Differential Diffusion: True' in the infotext: {params}"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def host_samplers(sd1_server) -> list[str]:
    r = sd1_server.get("/sdapi/v1/samplers")
    assert r.status_code == 200, r.text[:500]
    return [s["name"] for s in r.json()]


@pytest.fixture
def require_sampler(host_samplers):
    """Skips a sampler this host does not list."""

    def check(name: str) -> None:
        if name not in host_samplers:
            pytest.skip(f"the host does not list {name!r}")

    return check


# --------------------------------------------------------------------------- the sampler list

def test_sampler_list_is_covered(host_samplers):
    """Every sampler the host lists is in SAMPLERS or the host profile's extra samplers (so the
    per-sampler proofs cover them all)."""
    missing = [s for s in host_samplers if s not in HOST_SAMPLERS]
    assert not missing, f"samplers the host lists but these tests do not cover: {missing}"
    measure(f"host samplers ({len(host_samplers)}): {', '.join(host_samplers)}")


# --------------------------------------------------------------------------- all-ones / all-zeros

@pytest.mark.parametrize("sampler", RUN_SAMPLERS)
def test_all_ones_map_is_plain_img2img(sd1_server, require_sampler, sampler):
    """An all-white map is plain img2img, bit for bit (64x64, 10 steps, strength 0.5)."""
    require_sampler(sampler)
    init = make_init_image(64, 64)
    plain = assert_ok(bounded_img2img(sd1_server, 150, init_image=init, sampler_name=sampler, prime=True))
    ones = make_map_image(kind="constant", high=255)
    r = assert_ok(bounded_img2img(sd1_server, 150, init_image=init, sampler_name=sampler, prime=True,
                                  alwayson_scripts=dd(ones)))
    assert_dd_in_infotext(r)
    report = last_run(sd1_server)
    assert report["sampler"] == sampler
    assert not report["active"], "an all-white map pins no pixel: the engine must stay out of the way"
    assert set(np.unique(report["release"]).tolist()) == {0}
    (a,), (b,) = decode_images(plain), decode_images(r)
    assert mean_change(a, init) > 5, "plain img2img did not change the image: the comparison would prove nothing"
    assert images_equal(a, b), f"{sampler}: all-ones map differs from plain img2img: max {max_change(a, b)}, mean {mean_change(a, b):.3f}"


@pytest.mark.parametrize("sampler", RUN_SAMPLERS)
def test_all_zeros_map_returns_the_input(sd1_server, require_sampler, sampler):
    """An all-black map returns the input image, pixel for pixel (preserve on, the default)."""
    require_sampler(sampler)
    init = make_init_image(64, 64)
    zeros = make_map_image(kind="constant", high=0)
    r = assert_ok(bounded_img2img(sd1_server, 150, init_image=init, sampler_name=sampler, alwayson_scripts=dd(zeros)))
    assert_dd_in_infotext(r)
    report = last_run(sd1_server)
    assert report["sampler"] == sampler
    assert set(np.unique(report["release"]).tolist()) == {NEVER}, "a black pixel must never be released"
    (out,) = decode_images(r)
    assert images_equal(image_rgb(out), init), f"{sampler}: all-zeros map changed the input: max {max_change(out, init)}"


# --------------------------------------------------------------------------- uniform 0.5 map

# 153/255 = 0.6 is a level of the 10-step grid: with smooth release (the default) such a map is
# plain img2img; 128/255 lies between two levels, and snapped (smooth off) it is plain img2img too.
UNIFORM_CASES = {"on-a-level": (153, True), "snapped-128": (128, False)}


@pytest.mark.parametrize("case", list(UNIFORM_CASES))
@pytest.mark.parametrize("sampler", RUN_SAMPLERS)
def test_uniform_half_map_is_img2img_at_half_strength(sd1_server, require_sampler, sampler, case):
    """A uniform map of value8 (v = value8/255) at strength 1.0 is plain img2img at strength v:
    on a level of the step grid with smooth release, and for any value snapped.

    Asserted bit for bit for every sampler for which the extension starts at the map's largest
    strength (all but UniPC; the README promises identity for them); for UniPC the diff is
    measured and the result must be nearer plain img2img at 128/255 than at 1.0."""
    require_sampler(sampler)
    init = make_init_image(64, 64)
    value8, smooth = UNIFORM_CASES[case]
    v = value8 / 255
    plain = assert_ok(bounded_img2img(sd1_server, 150, init_image=init, sampler_name=sampler, prime=True,
                                      denoising_strength=v))
    r = assert_ok(bounded_img2img(sd1_server, 150, init_image=init, sampler_name=sampler, prime=True,
                                  denoising_strength=1.0, alwayson_scripts=dd(make_map_image(kind="constant", high=value8), smooth=smooth)))
    assert_dd_in_infotext(r)
    report = last_run(sd1_server)
    assert report["sampler"] == sampler
    (a,), (b,) = decode_images(plain), decode_images(r)
    diff_max, diff_mean = max_change(a, b), mean_change(a, b)
    if sampler in NO_STEP_SKIP:
        # no skipping: the run is at 1.0 and the pixels wait for step t_enc(1.0) - t_enc(v)
        timestep = sampler in TIMESTEP_SAMPLERS
        releases = set(np.unique(report["release"]).tolist())
        assert releases == {expected_release(map_value(value8), 1.0, t_enc(1.0), timestep)}, releases
        assert not np.any(report["release_weight"]), "on a level or snapped: no partial release"
        full = assert_ok(bounded_img2img(sd1_server, 150, init_image=init, sampler_name=sampler, prime=True,
                                         denoising_strength=1.0))
        (c,) = decode_images(full)
        measure(f"uniform {value8} map ({case}) at 1.0 vs plain at {value8}/255, {sampler}: max diff {diff_max}, mean {diff_mean:.2f} "
                f"(vs plain at 1.0: mean {mean_change(b, c):.2f}; plain 128/255 vs plain 1.0: mean {mean_change(a, c):.2f})")
        assert diff_mean < mean_change(b, c), f"{sampler}: nearer plain img2img at 1.0 than at {value8}/255"
    else:
        assert set(np.unique(report["release"]).tolist()) == {0}, "started at the map's strength: all released at once"
        measure(f"uniform {value8} map ({case}) at 1.0 vs plain at {value8}/255, {sampler}: max diff {diff_max}, mean {diff_mean:.2f}")
        assert images_equal(a, b), f"{sampler}: max diff {diff_max}, mean {diff_mean:.3f}"


# --------------------------------------------------------------------------- band map: release steps

BAND_LEVELS = (0, 64, 128, 191, 255)
LOW_BAND_LEVELS = (0, 32, 64, 96, 128)   # largest strength 128/255: the run starts there (step skipping)
BAND_CASES = [
    ("Euler", {}, BAND_LEVELS),
    ("Euler a", {}, BAND_LEVELS),
    ("DPM++ 2M", {"scheduler": "karras"}, BAND_LEVELS),
    ("DPM++ SDE", {}, BAND_LEVELS),
    ("DDIM", {}, BAND_LEVELS),
    ("UniPC", {}, BAND_LEVELS),
    ("Euler", {}, LOW_BAND_LEVELS),
    ("DDIM", {}, LOW_BAND_LEVELS),
    ("UniPC", {}, LOW_BAND_LEVELS),
]


@pytest.mark.parametrize("sampler,extra,levels", BAND_CASES,
                         ids=[f"{s}{'-karras' if e else ''}-{'low' if l == LOW_BAND_LEVELS else 'full'}" for s, e, l in BAND_CASES])
def test_band_map_releases_on_schedule(sd1_server, sampler, extra, levels):
    """Snapped to the step grid (smooth off; test_smooth_release.py has the smooth rule), five
    vertical bands (160x64 image, 32 px = 4 latent px each; 320x64 where the host rounds sizes to 64) at strength 1.0: every band's
    release step (engine report) is the schedule's, the model calls' step indices are consistent
    with it, and in pixels band 0 is unchanged exactly and the change grows band by band (the
    last on graded checkpoints only: host.CAPABILITIES)."""
    strength = 1.0
    width = band_width(sd1_server)
    band_px = width // 5
    init = make_init_image(width, 64)
    r = assert_ok(post_img2img(sd1_server, init_image=init, sampler_name=sampler, denoising_strength=strength,
                               alwayson_scripts=dd(band_map(levels, width=width), smooth=False), timeout=150, **extra))
    assert_dd_in_infotext(r)
    (out,) = decode_images(r)
    report = last_run(sd1_server)
    assert report["sampler"] == sampler and report["active"]
    release = np.array(report["release"])
    assert release.shape == (1, 1, 8, width // 8), release.shape

    timestep = sampler in TIMESTEP_SAMPLERS
    values = [map_value(level) for level in levels]
    run_strength = strength if sampler in NO_STEP_SKIP else max(values) * strength
    run_t_enc = t_enc(run_strength)
    n_steps = run_t_enc - 1 if timestep else run_t_enc + 1
    expected = [expected_release(v, strength, run_t_enc, timestep) for v in values]
    got = []
    for i in range(5):
        band = np.unique(release[0, 0, :, band_px // 8 * i:band_px // 8 * (i + 1)])
        assert band.size == 1, f"band {i}: mixed release steps {band.tolist()}"
        got.append(int(band[0]))
    assert got == expected, f"{sampler}: release steps per band {got}, schedule says {expected} (run t_enc {run_t_enc})"

    # The calls: steps 0..n_steps-1, in order, each step's first call at the step's own level
    # (UniPC evaluates between the table's levels: only its first call is at a step start).
    calls = report["calls"]
    steps = [c[0] for c in calls]
    levels_called = [c[1] for c in calls]
    assert steps == sorted(steps), f"step indices go back: {steps}"
    assert sorted(set(steps)) == list(range(n_steps)), f"steps {sorted(set(steps))}, expected 0..{n_steps - 1}"
    assert all(a >= b for a, b in zip(levels_called, levels_called[1:])), f"levels rise: {levels_called}"
    firsts = {}
    for step, level, at_start in calls:
        firsts.setdefault(step, at_start)
    if sampler == "UniPC":
        assert calls[0][2] is True
    else:
        assert all(firsts.values()), f"a step's first call is not at the step's level: {calls}"
        starts = [c for c in calls if c[2]]
        assert len(starts) == n_steps, f"{len(starts)} step-start calls for {n_steps} steps"
    for i, rel in enumerate(got):
        pinned_calls = [c for c in calls if c[0] < rel]
        free_calls = [c for c in calls if c[0] >= rel]
        if rel == NEVER:
            assert not free_calls
            continue
        if rel > 0:
            assert pinned_calls, f"band {i}: released at step {rel} but no call before it"
        assert free_calls and free_calls[0][0] == rel, f"band {i}: no model call at its release step {rel}"
        if sampler != "UniPC":
            assert free_calls[0][2], f"band {i}: the first call after its release is not at a step start"

    # Pixels: band 0 exactly the input; the change grows with the band's value.
    assert max_change(out, init, (0, 0, band_px, 64)) == 0, f"band 0 changed: max {max_change(out, init, (0, 0, band_px, 64))}"
    changes = [mean_change(out, init, (band_px * i + 4, 0, band_px * (i + 1) - 4, 64)) for i in range(5)]
    # A band with a value above 0 that is never released (its img2img would sample no step) keeps
    # the input latent: a VAE round trip of the input, not the input's pixels (preserve acts on
    # strength 0 only); it is left out of the ordering.
    measure(f"band map {sampler}{' ' + str(extra) if extra else ''} levels {levels}: release {['never' if g == NEVER else g for g in got]}, "
            f"{len(calls)} calls over {n_steps} steps; mean change per band {[round(c, 1) for c in changes]}")
    if sd1_server.host.profile.cannot("graded"):
        return  # a random-weight stand-in: the schedule and band 0 are checked, how much the bands change means nothing
    moving = [c for c, rel in zip(changes, got) if rel != NEVER]
    assert moving[0] > 3, f"the weakest released band barely changed: {changes}"
    # Grows band by band; near full strength this random-ish model saturates, so allow 5/255 slack.
    for i in range(1, len(moving)):
        assert moving[i] >= moving[i - 1] - 5, f"change not ordered by band: {[round(c, 1) for c in changes]}"
    assert moving[-1] > moving[0] + 10, f"strongest band not clearly above the weakest: {changes}"


# --------------------------------------------------------------------------- batches

def test_batch_size_2_count_2_honours_the_map(sd1_server):
    """batch_size 2 x n_iter 2: all four images keep the map's black half exactly, change the
    white half, and differ from each other (seeds 12345..12348)."""
    init = make_init_image(64, 64)
    r = assert_ok(post_img2img(sd1_server, init_image=init, batch_size=2, n_iter=2, denoising_strength=0.75,
                               alwayson_scripts=dd(make_map_image(kind="halves"))))
    images = decode_images(r)
    info = response_info(r)
    assert len(images) == 4, f"{len(images)} images"
    assert info["all_seeds"] == [12345, 12346, 12347, 12348], info["all_seeds"]
    assert all(SCRIPT_TITLE + ": True" in t for t in info["infotexts"]), info["infotexts"]
    report = last_run(sd1_server)
    assert len(report["release"]) == 2, "the last batch had two images"
    for k, im in enumerate(images):
        assert max_change(im, init, (0, 0, 32, 64)) == 0, f"image {k}: black half changed"
        assert mean_change(im, init, (36, 0, 64, 64)) > 20, f"image {k}: white half unchanged"
    for i in range(4):
        for j in range(i + 1, 4):
            assert not images_equal(images[i], images[j]), f"images {i} and {j} are identical"
            assert mean_change(images[i], images[j], (36, 0, 64, 64)) > 5, f"images {i} and {j} barely differ"


# --------------------------------------------------------------------------- resize modes

def host_resize_image(mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111 v1.10.1's resize_image (tests/a1111_images.py) on a canvas of the image's own mode,
    so a float ("F") map shows where its values land."""
    return a1111_images.resize_image(mode, im, width, height, canvas_mode=im.mode)


def l_shaped_map(width: int, height: int) -> Image.Image:
    """Black (keep) on the left half and the top third of the image, white elsewhere: an
    asymmetric shape, so both horizontal and vertical crops/fills show."""
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.where((x < width // 2) | (y < height // 3), 0, 255).astype(np.uint8), "L")


RESIZE_CASES = [((96, 64), (64, 64), 1), ((96, 64), (64, 64), 2), ((64, 64), (96, 64), 1),
                ((64, 64), (96, 64), 2), ((64, 96), (64, 64), 1), ((64, 96), (64, 64), 2)]


@pytest.mark.parametrize("init_size,out_size,resize_mode", RESIZE_CASES,
                         ids=[f"{i[0]}x{i[1]}-to-{o[0]}x{o[1]}-mode{m}" for i, o, m in RESIZE_CASES])
def test_map_lines_up_with_resized_init(sd1_server, init_size, out_size, resize_mode):
    """Crop and resize (1) / resize and fill (2) with a non-square init: a map drawn on the INIT
    image lands where the init's pixels land. Where the map's black region lands (computed with
    PIL mirroring resize_image on a float copy of the map), the output equals the host's own
    resized init exactly; where the white region lands it changes."""
    init = make_init_image(*init_size)
    change_map = l_shaped_map(*init_size)
    width, height = sd1_server.host.profile.generated_size(*out_size)  # out_size, but where the host rounds it
    host_resized = a1111_images.resize_image(resize_mode, init, width, height)
    assert images_equal(host_resize_image(resize_mode, init, width, height), host_resized)
    expected = np.asarray(host_resized).astype(np.int32)
    map_f = Image.fromarray(np.asarray(change_map, np.float32) / 255.0, "F")
    landed = np.clip(np.asarray(host_resize_image(resize_mode, map_f, width, height)), 0.0, 1.0)
    keep, change = landed <= 0.0, landed >= 0.999
    assert keep.sum() > 0.2 * keep.size and change.sum() > 0.15 * change.size, (keep.sum(), change.sum())

    r = assert_ok(post_img2img(sd1_server, init_image=init, width=out_size[0], height=out_size[1], resize_mode=resize_mode,
                               denoising_strength=0.75, alwayson_scripts=dd(change_map)))
    (out,) = decode_images(r)
    assert out.size == (width, height)
    out_a = np.asarray(image_rgb(out)).astype(np.int32)
    diff = np.abs(out_a - expected).max(axis=-1)
    assert diff[keep].max() == 0, (f"black region of the map (where it lands: {int(keep.sum())} px) is not the resized "
                                   f"init: {int((diff[keep] > 0).sum())} px differ, max {int(diff[keep].max())}")
    # The white region is generated (a few pixels next to the black region follow the preserve ramp).
    mean_white = float(diff[change].mean())
    unchanged_white = float((diff[change] == 0).mean())
    measure(f"resize_mode {resize_mode} {init_size}->{out_size}: {int(keep.sum())} kept px exact; white region "
            f"({int(change.sum())} px) mean change {mean_white:.1f}, {100 * unchanged_white:.1f}% of it unchanged (preserve ramp)")
    assert mean_white > 20, f"the white region barely changed: {mean_white:.1f}"
    assert unchanged_white < 0.2, f"{100 * unchanged_white:.1f}% of the white region unchanged"


# --------------------------------------------------------------------------- X/Y/Z plot

AXIS_LABEL = f"[{SCRIPT_TITLE}] Gamma"


def test_xyz_grid_over_gamma(ui_server):
    """X/Y/Z plot over "[Differential Diffusion] Gamma" through the API: three distinct cells,
    each the same image as a direct run with that gamma, and each cell's infotext says so."""
    labels = xyz_axis_labels(ui_server)
    expected_axes = [f"[{SCRIPT_TITLE}] {n}" for n in ("Enabled", "Invert", "Gamma", "Blur", "Low", "High")]
    assert all(a in labels for a in expected_axes), f"DD axes missing from {labels}"
    axis = labels.index(AXIS_LABEL)
    init = make_init_image(64, 64)
    ramp = make_map_image(kind="ramp")
    gammas = (0.5, 1.0, 3.0)
    post_img2img(ui_server, init_image=init)  # same seed and size before: cells are reproducible
    r = assert_ok(post_img2img(ui_server, init_image=init, alwayson_scripts=dd(ramp), script_name="x/y/z plot",
                               script_args=xyz_args(ui_server, axis, ", ".join(str(g) for g in gammas))))
    images = decode_images(r)
    info = response_info(r)
    assert len(images) == 1 + len(gammas), f"{len(images)} images (grid + cells expected)"
    grid, cells = images[0], images[1:]
    assert grid.size[0] >= 3 * 64, grid.size
    for gamma, text in zip(gammas, info["infotexts"][1:]):
        assert f"DD gamma: {gamma}" in text, text
    for i in range(len(cells)):
        for j in range(i + 1, len(cells)):
            assert not images_equal(cells[i], cells[j]), f"cells {i} and {j} identical"
    diffs = []
    for gamma, cell in zip(gammas, cells):
        (direct,) = decode_images(assert_ok(post_img2img(ui_server, init_image=init, prime=True, alwayson_scripts=dd(ramp, gamma=gamma))))
        diffs.append(max_change(direct, cell))
    assert diffs == [0] * len(gammas), f"cells differ from direct runs with the same gamma: max diffs {diffs}"
    measure(f"x/y/z over gamma {gammas}: cells pairwise mean diff "
            f"{[round(mean_change(cells[i], cells[j]), 1) for i, j in ((0, 1), (0, 2), (1, 2))]}; equal to direct runs")


def test_xyz_axes_exist_in_api_only_mode(sd1_server):
    """The DD axes are offered by X/Y/Z plot on an API-only (--nowebui) server too."""
    labels = xyz_axis_labels(sd1_server)
    assert AXIS_LABEL in labels, f"{AXIS_LABEL!r} not among the X/Y/Z axes of the --nowebui server: {labels}"


# --------------------------------------------------------------------------- no leftovers

def test_plain_runs_unchanged_after_dd_runs(sd1_server):
    """Plain img2img after DD runs (several samplers, a refused one -> 422, an interrupted one)
    is bit-identical to plain img2img before them, for Euler and DDIM; options are untouched."""
    init = make_init_image(64, 64)
    options_before = sd1_server.get("/sdapi/v1/options").json()
    before = {s: decode_images(assert_ok(post_img2img(sd1_server, init_image=init, sampler_name=s, prime=True)))[0]
              for s in ("Euler", "DDIM")}

    bands = band_map((0, 64, 128, 191, 255), 64, 64)
    for sampler in ("Euler", "DDIM", "UniPC", "Heun", "DPM++ 2M"):
        assert_ok(post_img2img(sd1_server, init_image=init, sampler_name=sampler, denoising_strength=0.8,
                               alwayson_scripts=dd(bands, gamma=0.7, blur=2)))
    bad = post_img2img(sd1_server, init_image=init, alwayson_scripts=dd("bm90IGFuIGltYWdl"))
    assert bad.status_code == 422, bad.text[:500]

    # Interrupted: a long DD run (128x128, 400 steps), interrupted once sampling is under way.
    interrupted = {}

    def interrupt_when_sampling():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = sd1_server.get("/sdapi/v1/progress?skip_current_image=true", timeout=10).json()["state"]
            if state.get("sampling_step", 0) >= 5:
                interrupted["at_step"] = state["sampling_step"]
                sd1_server.post("/sdapi/v1/interrupt", {}, timeout=30)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=interrupt_when_sampling, daemon=True)
    thread.start()
    t0 = time.monotonic()
    long_run = post_img2img(sd1_server, width=128, height=128, steps=400, denoising_strength=0.75,
                            alwayson_scripts=dd(make_map_image(128, 128, kind="halves")), timeout=300)
    elapsed = time.monotonic() - t0
    thread.join(timeout=10)
    assert "at_step" in interrupted, "the long run was never seen sampling, so it was not interrupted"
    assert long_run.status_code == 200, long_run.text[:500]
    calls = last_run(sd1_server)["calls"]
    assert len(calls) < 300, f"the interrupted run still made {len(calls)} model calls"
    measure(f"interrupted DD run: interrupt at sampling step {interrupted['at_step']}, answered after {elapsed:.1f} s "
            f"with {len(calls)} model calls of 301 planned")

    after = {s: decode_images(assert_ok(post_img2img(sd1_server, init_image=init, sampler_name=s, prime=True)))[0]
             for s in ("Euler", "DDIM")}
    for s in before:
        assert images_equal(before[s], after[s]), f"{s}: plain run changed after DD runs: max {max_change(before[s], after[s])}"
    options_after = sd1_server.get("/sdapi/v1/options").json()
    changed = {k for k in set(options_before) | set(options_after) if options_before.get(k) != options_after.get(k)}
    assert not changed, f"options changed by DD runs: {sorted(changed)}"


# --------------------------------------------------------------------------- refused input

GOOD_MAP = png_b64(make_map_image(kind="halves"))
BAD_INPUT = [
    ("unknown key", {"map": GOOD_MAP, "strength": 0.5}, "strength"),
    ("gamma as a string", {"map": GOOD_MAP, "gamma": "1"}, "gamma"),
    ("negative blur", {"map": GOOD_MAP, "blur": -1}, "blur"),
    ("gamma out of range", {"map": GOOD_MAP, "gamma": 11}, "gamma"),
    ("boolean as a string", {"map": GOOD_MAP, "invert": "true"}, "invert"),
    ("low above high", {"map": GOOD_MAP, "low": 0.8, "high": 0.2}, "low"),
    ("unknown source", {"map": GOOD_MAP, "source": "mask"}, "source"),
    ("inpaint mask without a mask", {"source": "inpaint mask"}, "source"),
    ("no map", {}, "map"),
    ("garbage map", {"map": "this is not base64 !!"}, "map"),
    ("base64 that is not an image", {"map": "aGVsbG8gd29ybGQ="}, "map"),
    ("map_folder through the API", {"map": GOOD_MAP, "map_folder": "/tmp"}, "map_folder"),
]


@pytest.mark.parametrize("case,args,field", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused(sd1_server, case, args, field):
    """Bad arguments: HTTP 422 naming the field ("Differential Diffusion: <field>:")."""
    r = post_img2img(sd1_server, alwayson_scripts={SCRIPT_TITLE: {"args": [args]}}, timeout=60)
    assert r.status_code == 422, f"{case}: {r.status_code} {r.text[:500]}"
    assert f"{SCRIPT_TITLE}: {field}:" in r.text, f"{case}: {r.text[:500]}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(sd1_server, literal):
    """Non-finite numbers (sent as the literals Python's JSON parser accepts) -> 422 naming gamma."""
    body = img2img_payload(alwayson_scripts=dd(make_map_image(kind="halves"), gamma="@GAMMA@"))
    raw = json.dumps(body).replace('"@GAMMA@"', literal)
    r = sd1_server.http.post(sd1_server.url + "/sdapi/v1/img2img", data=raw,
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 422, f"{literal}: {r.status_code} {r.text[:500]}"
    assert f"{SCRIPT_TITLE}: gamma: must be a finite number" in r.text, r.text[:500]


def test_server_keeps_serving_after_refusals(sd1_server):
    """After refused requests, the server answers a DD run and a plain run normally."""
    for args in ({"map": "!!"}, {"map": GOOD_MAP, "gamma": -1}):
        assert post_img2img(sd1_server, alwayson_scripts={SCRIPT_TITLE: {"args": [args]}}).status_code == 422
    init = make_init_image(64, 64)
    r = assert_ok(post_img2img(sd1_server, init_image=init, alwayson_scripts=dd(make_map_image(kind="halves"))))
    assert max_change(decode_images(r)[0], init, (0, 0, 32, 64)) == 0
    assert_ok(post_img2img(sd1_server, init_image=init))
    assert sd1_server.get("/differential-diffusion/v1/schema").status_code == 200


# --------------------------------------------------------------------------- SDXL refiner

@pytest.mark.needs("sdxl_refiner")
@pytest.mark.parametrize("switch_at", [0.5, 0.8])
def test_refiner_run_keeps_zero_half(sdxl_server, switch_at):
    """SDXL base + refiner (switch at 0.5 / 0.8), half-black map: the black half is the input
    exactly, the white half changes, and the refiner really took part (the result differs from
    the same DD run without a refiner)."""
    refiner = sdxl_server.model_name("sdxl_refiner_graded")
    init = make_init_image(64, 64)
    halves = make_map_image(kind="halves")
    results = {}
    for use_refiner in (False, True):
        extra = {"refiner_checkpoint": refiner, "refiner_switch_at": switch_at} if use_refiner else {}
        r = assert_ok(post_img2img(sdxl_server, init_image=init, denoising_strength=0.9, prime=True,
                                   alwayson_scripts=dd(halves), timeout=300, **extra))
        assert_dd_in_infotext(r)
        params = response_info(r).get("extra_generation_params", {})
        if use_refiner:
            assert str(params.get("Refiner", "")).startswith(refiner), params
            assert float(params.get("Refiner switch at")) == switch_at, params
        (results[use_refiner],) = decode_images(r)
    out = results[True]
    assert max_change(out, init, (0, 0, 32, 64)) == 0, f"black half changed: max {max_change(out, init, (0, 0, 32, 64))}"
    assert mean_change(out, init, (36, 0, 64, 64)) > 20
    refiner_effect = mean_change(out, results[False], (32, 0, 64, 64))
    measure(f"SDXL refiner switch {switch_at}: black half exact; white half mean change {mean_change(out, init, (36, 0, 64, 64)):.1f}, "
            f"differs from the no-refiner DD run by mean {refiner_effect:.2f}")
    assert refiner_effect > 0, "the refiner made no difference: it did not run"
