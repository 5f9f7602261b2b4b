"""The strength fan (``lib_differential_diffusion/fan.py``) and its arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from lib_differential_diffusion.args import DifferentialDiffusionArgs, values_from_infotext
from lib_differential_diffusion.errors import DifferentialDiffusionError
from lib_differential_diffusion.fan import (
    FAN_LAYOUTS,
    fan_denoising_strengths,
    fan_label_font_size,
    fan_label_points,
    fan_map,
    fan_regions,
    fan_strengths,
    fan_values,
    label_fan,
)
from lib_differential_diffusion.maps import MapOptions, apply_options
from lib_differential_diffusion.preview import pixel_release_steps
from lib_differential_diffusion.schedule import img2img_start


@pytest.mark.parametrize("count", [2, 3, 4, 7, 16])
@pytest.mark.parametrize("layout", ["vertical bands", "horizontal bands"])
def test_bands_are_equal_and_ordered(count, layout):
    width, height = 96, 80
    regions = fan_regions(width, height, count, layout)
    assert regions.shape == (height, width) and regions.dtype == np.int64
    along = regions[0, :] if layout == "vertical bands" else regions[:, 0]
    across = regions[:, 0] if layout == "vertical bands" else regions[0, :]
    assert (np.diff(along) >= 0).all() and along[0] == 0 and along[-1] == count - 1  # left to right / top to bottom
    assert (across == across[0]).all()  # a band spans the whole image the other way
    sizes = np.bincount(along, minlength=count)
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1, sizes
    # Each band starts where an exact split at k/count of the length puts it.
    length = len(along)
    for k in range(1, count):
        assert np.argmax(along >= k) == math.ceil(k * length / count - 0.5)


@pytest.mark.parametrize("count", [2, 3, 4, 8, 16])
def test_sectors_go_clockwise_from_twelve_o_clock(count):
    size = 401  # odd: the centre falls on a pixel centre
    regions = fan_regions(size, size, count, "radial sectors")
    centre = size // 2
    for region, (x, y) in enumerate(fan_label_points(size, size, count, "radial sectors")):
        assert regions[int(y), int(x)] == region  # each label sits inside its sector
    assert regions[0, centre] == 0  # straight up: the first sector
    assert regions[centre - 20, centre + 1] == 0  # just right of 12 o'clock
    assert regions[centre - 20, centre - 1] == count - 1  # just left of it: the last
    # Sectors of equal angle: equal areas inside the inscribed circle (not over the square's corners).
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    disc = np.hypot(xx - size / 2, yy - size / 2) < size / 2
    sizes = np.bincount(regions[disc], minlength=count)
    assert sizes.min() > 0 and (sizes.max() - sizes.min()) / sizes.mean() < 0.05, sizes


def test_values_run_from_zero_to_one_and_the_map_paints_them():
    assert fan_values(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert fan_values(2).tolist() == [0.0, 1.0]
    for layout in FAN_LAYOUTS:
        fan = fan_map(40, 30, 5, layout)
        assert fan.dtype == np.float32 and fan.shape == (30, 40)
        assert np.array_equal(fan, fan_values(5)[fan_regions(40, 30, 5, layout)])
        assert set(np.unique(fan).tolist()) == set(fan_values(5).tolist())


def test_unknown_layout_is_a_programming_error():
    with pytest.raises(ValueError):
        fan_regions(8, 8, 2, "diagonal")
    with pytest.raises(ValueError):
        fan_label_points(8, 8, 2, "diagonal")


@pytest.mark.parametrize(
    "options",
    [
        MapOptions(),
        MapOptions(low=0.2, high=0.9),
        MapOptions(invert=True),
        MapOptions(gamma=2.2, low=0.1, high=0.8),
        MapOptions(blur=12.0, low=0.3, high=0.6),
    ],
    ids=["plain", "low-high", "invert", "gamma", "blur"],
)
def test_region_strengths_are_the_run_s_options_applied_to_the_region_values(options):
    count = 6
    strengths = fan_strengths(count, options)
    # Far from any seam, the run's own per-pixel strengths (apply_options on the whole map,
    # blur included) are the region strengths.
    fan = fan_map(600, 20, count, "vertical bands")
    per_pixel = apply_options(fan, options)
    centres = [int(x) for x, _ in fan_label_points(600, 20, count, "vertical bands")]
    assert np.allclose(per_pixel[10, centres], strengths, atol=1e-6)
    expected = np.linspace(0, 1, count)
    if options.invert:
        expected = 1 - expected
    expected = options.low + (options.high - options.low) * expected**options.gamma
    assert np.allclose(strengths, expected, atol=1e-6)


def test_denoising_strengths_are_region_strength_times_slider_to_two_decimals():
    options = MapOptions(low=0.1, high=0.9)
    # float32 strengths 0.1, 0.3, 0.5, 0.7, 0.9 are a hair above/below: 0.0750000011 -> 0.08, 0.67499998 -> 0.67
    assert fan_denoising_strengths(5, options, 0.75) == [0.08, 0.23, 0.38, 0.52, 0.67]
    assert fan_denoising_strengths(3, MapOptions(), 1.0) == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("steps", [10, 20, 37])
@pytest.mark.parametrize("slider", [0.5, 0.75, 1.0])
def test_each_region_is_released_like_plain_img2img_at_its_strength(steps, slider):
    """The fan is an ordinary map: a region of strength v starts changing at the step where a
    plain img2img at v x slider starts, i.e. after the first (t_enc(slider) - t_enc(v x slider)) steps."""
    count = 5
    options = MapOptions(low=0.1, high=1.0)
    fan = apply_options(fan_map(50, 10, count, "vertical bands"), options)
    release = pixel_release_steps(fan, steps=steps, strength=slider, fix_steps=False)
    run = img2img_start(slider, steps, False)
    for region, strength in enumerate(fan_strengths(count, options)):
        columns = fan_regions(50, 10, count, "vertical bands")[0] == region
        released = np.unique(release[:, columns])
        assert len(released) == 1  # one release step per region
        plain = img2img_start(float(torch.tensor(float(strength), dtype=torch.float64) * slider), steps, False)
        if plain.t_enc > 0:
            assert released[0] == run.t_enc - plain.t_enc


def test_label_fan_draws_seams_and_labels_and_leaves_the_rest():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    labelled = label_fan(image, count=4, layout="vertical bands", denoising_strengths=[0.0, 0.25, 0.5, 0.75])
    out = np.asarray(labelled)
    assert labelled.size == image.size and labelled.mode == "RGB"
    assert np.array_equal(np.asarray(image), pixels)  # the input is untouched
    changed = (out != pixels).any(axis=2)
    for x, y in fan_label_points(200, 120, 4, "vertical bands"):
        assert changed[int(y), int(x)]  # a label at each region's middle
    for x in (50, 100, 150):
        assert changed[5, x] or changed[5, x - 1]  # the seams
    assert not changed[:30, 10:40].any()  # top-left, away from labels and seams
    assert changed.mean() < 0.2


def test_label_fan_with_a_box_touches_only_the_box():
    pixels = np.full((100, 160, 3), 90, dtype=np.uint8)
    box = (40, 20, 120, 80)
    labelled = np.asarray(label_fan(Image.fromarray(pixels), count=3, layout="radial sectors", denoising_strengths=[0.1, 0.2, 0.3], box=box))
    changed = (labelled != pixels).any(axis=2)
    inside = np.zeros_like(changed)
    inside[box[1] : box[3], box[0] : box[2]] = True
    assert changed[inside].any() and not changed[~inside].any()


def test_label_font_size_shrinks_with_many_regions():
    sizes = [fan_label_font_size(1024, 1024, count, "vertical bands") for count in (2, 4, 8, 16)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] >= 8 and sizes[0] <= 48
    assert fan_label_font_size(64, 64, 16, "radial sectors") == 8


# --- arguments ------------------------------------------------------------------------


def test_fan_source_needs_no_map_and_validates_its_options():
    args = DifferentialDiffusionArgs.from_api({"source": "fan", "fan_count": 5, "fan_layout": "radial sectors"})
    assert (args.source, args.fan_count, args.fan_layout, args.map) == ("fan", 5, "radial sectors", None)
    assert DifferentialDiffusionArgs.from_api({"source": "fan", "fan_count": 6.0}).fan_count == 6  # a slider's float
    assert isinstance(DifferentialDiffusionArgs.from_api({"source": "fan", "fan_count": 6.0}).fan_count, int)
    for value, words in [(1, "between 2 and 16"), (17, "between 2 and 16"), (2.5, "whole number"), ("4", "number"), (True, "number"), (math.inf, "finite")]:
        with pytest.raises(DifferentialDiffusionError) as caught:
            DifferentialDiffusionArgs.from_api({"source": "fan", "fan_count": value})
        assert caught.value.field == "fan_count" and words in caught.value.message
    with pytest.raises(DifferentialDiffusionError) as caught:
        DifferentialDiffusionArgs.from_api({"source": "fan", "fan_layout": "diagonal"})
    assert caught.value.field == "fan_layout" and "'vertical bands'" in caught.value.message


def test_fan_infotext_is_written_for_fans_only_and_reads_back():
    fan = DifferentialDiffusionArgs.from_api({"source": "fan", "fan_count": 7, "fan_layout": "horizontal bands", "low": 0.2})
    info = fan.infotext(None)
    assert info["DD source"] == "fan" and info["DD fan count"] == 7 and info["DD fan layout"] == "horizontal bands"
    restored = values_from_infotext({key: str(value) for key, value in info.items()})
    assert (restored["source"], restored["fan_count"], restored["fan_layout"], restored["low"]) == ("fan", 7, "horizontal bands", 0.2)
    assert isinstance(restored["fan_count"], int)
    plain = DifferentialDiffusionArgs.from_api({"map": np.ones((4, 4), np.float32)}).infotext("abc")
    assert "DD fan count" not in plain and "DD fan layout" not in plain
