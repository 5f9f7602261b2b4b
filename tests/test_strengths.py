"""Per-pixel strengths (one function for the run and the Preview) and the preserve composite."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_differential_diffusion.args import DifferentialDiffusionArgs
from lib_differential_diffusion.fan import fan_map
from lib_differential_diffusion.maps import Geometry, align_map, apply_options
from lib_differential_diffusion.strengths import PRESERVE_FEATHER, fan_over, pixel_strengths, preserve


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_preserve_keeps_zero_strength_pixels_exactly_and_ramps_smoothly():
    rng = np.random.default_rng(1)
    original = Image.fromarray(rng.integers(0, 256, (64, 96, 3)).astype(np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (64, 96, 3)).astype(np.uint8))
    strengths = np.ones((64, 96), dtype=np.float32)
    strengths[:, :40] = 0.0  # kept
    strengths[:, 40:48] = 0.3  # weak but changing
    result = pixels(preserve(generated, original, strengths <= 0))
    a, b = pixels(original).astype(float), pixels(generated).astype(float)
    assert np.array_equal(result[:, :40], pixels(original)[:, :40])
    far = 40 + int(np.ceil(4 * PRESERVE_FEATHER)) + 1
    assert np.array_equal(result[:, far:], pixels(generated)[:, far:])
    # weight of the generated image per column: 0 on the kept side, rising without jumps to 1
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.nanmedian((result.astype(float) - a) / (b - a), axis=(0, 2))
    ramp = weight[40:far]
    assert np.all(np.diff(ramp) >= -0.02) and ramp[0] < 0.15 and ramp[-1] > 0.95
    assert np.max(np.diff(weight[39 : far + 1])) < 0.25
    # sizes that do not match (another script resized the image): left alone
    smaller = generated.resize((48, 32))
    assert preserve(smaller, original, strengths <= 0) is smaller


def test_preserve_in_place_writes_the_same_pixels_into_the_generated_image():
    rng = np.random.default_rng(2)
    original = Image.fromarray(rng.integers(0, 256, (64, 96, 3)).astype(np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (64, 96, 3)).astype(np.uint8))
    before = pixels(generated).copy()
    kept = np.zeros((64, 96), dtype=bool)
    kept[8:40, 10:50] = True
    copied = preserve(generated, original, kept)
    assert copied is not generated and np.array_equal(pixels(generated), before)  # the argument untouched
    edited = preserve(generated, original, kept, in_place=True)
    assert edited is generated and np.array_equal(pixels(edited), pixels(copied)) and not np.array_equal(pixels(edited), before)
    gray = Image.fromarray(before[:, :, 0])  # not RGB: converted, so never in place
    assert preserve(gray, original, kept, in_place=True) is not gray


def test_preserve_without_kept_pixels_returns_the_generated_image():
    generated = Image.new("RGB", (16, 16), (1, 2, 3))
    assert preserve(generated, Image.new("RGB", (16, 16)), np.zeros((16, 16), bool)) is generated


def ramp(width: int = 48, height: int = 32) -> np.ndarray:
    return np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))


@pytest.mark.parametrize("resize_mode", [0, 1, 2, 3])
def test_map_strengths_are_the_aligned_map_through_the_options(resize_mode):
    args = DifferentialDiffusionArgs(enabled=True, map="x", gamma=2.0, low=0.1, high=0.8)
    geometry = Geometry((48, 32), 64, 64, resize_mode)
    expected = apply_options(align_map(ramp(), geometry), args.map_options())
    np.testing.assert_array_equal(pixel_strengths(args, geometry, user_map=ramp()).values, expected)


def test_inpaint_mask_multiplies_the_map_or_is_the_source():
    mask = np.zeros((32, 48), np.float32)
    mask[:, 24:] = 0.5
    geometry = Geometry((48, 32), 48, 32)
    with_map = pixel_strengths(DifferentialDiffusionArgs(enabled=True, map="x"), geometry, user_map=ramp(), inpaint_mask=mask).values  # in the output frame
    np.testing.assert_allclose(with_map, ramp() * mask)
    as_source = pixel_strengths(DifferentialDiffusionArgs(enabled=True, source="inpaint mask", invert=True), geometry, inpaint_mask=mask).values
    np.testing.assert_allclose(as_source, 1 - mask)  # options apply to the mask as the source, nothing multiplies it


def test_fan_is_drawn_in_the_output_frame_whatever_the_geometry():
    args = DifferentialDiffusionArgs(enabled=True, source="fan", fan_count=3, fan_layout="horizontal bands")
    for mode in (0, 1, 2):
        strengths = pixel_strengths(args, Geometry((10, 90), 60, 30, mode)).values
        np.testing.assert_array_equal(strengths, fan_map(60, 30, 3, "horizontal bands"))
    boxed = pixel_strengths(args, Geometry((100, 80), 100, 80), fan_box=(10, 20, 70, 50)).values
    assert np.all(boxed[:20] == 0) and np.all(boxed[:, :10] == 0) and np.all(boxed[50:] == 0)
    np.testing.assert_array_equal(boxed[20:50, 10:70], fan_map(60, 30, 3, "horizontal bands"))
    np.testing.assert_array_equal(fan_over((100, 80), args, (10, 20, 70, 50)), boxed)


def test_drawn_map_is_aligned_like_an_uploaded_one():
    drawn = DifferentialDiffusionArgs(enabled=True, source="draw", drawn_map="data:image/png;base64,AAAA")
    uploaded = DifferentialDiffusionArgs(enabled=True, map="x")
    geometry = Geometry((48, 32), 96, 64, 1)
    np.testing.assert_array_equal(pixel_strengths(drawn, geometry, user_map=ramp()).values, pixel_strengths(uploaded, geometry, user_map=ramp()).values)


def test_preserve_confines_its_work_to_the_kept_box_and_the_ramp():
    rng = np.random.default_rng(2)
    original = Image.fromarray(rng.integers(0, 256, (300, 400, 3)).astype(np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (300, 400, 3)).astype(np.uint8))
    kept = np.zeros((300, 400), bool)
    kept[101:150, 203:260] = True  # not on the reduced grid
    result = pixels(preserve(generated, original, kept))
    assert np.array_equal(result[kept], pixels(original)[kept])
    reach = int(np.ceil(4 * PRESERVE_FEATHER)) + 1
    far = np.ones_like(kept)
    far[101 - reach : 150 + reach, 203 - reach : 260 + reach] = False
    assert np.array_equal(result[far], pixels(generated)[far])
    # Along a row through the box: the original's weight falls from 1 to 0 without jumps.
    a, b = pixels(original)[125].astype(float), pixels(generated)[125].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.nanmedian((result[125].astype(float) - a) / (b - a), axis=1)
    ramp = weight[260 : 260 + reach]
    assert ramp[0] < 0.15 and ramp[-1] > 0.95 and np.all(np.diff(ramp) >= -0.02) and np.max(np.diff(ramp)) < 0.25
    assert preserve(generated, original, np.zeros_like(kept)) is generated


def test_preserve_ramps_alike_on_both_sides_of_a_kept_band():
    """The ramp is blurred at a quarter of the resolution and stretched back by exactly 4: a kept
    band ramps out alike to its left and right wherever it starts and however wide it is (a
    box cut mid-block stretched back by another scale shifted the far side's ramp: 124/255)."""
    original, generated = Image.new("RGB", (160, 64), (0, 0, 0)), Image.new("RGB", (160, 64), (255, 255, 255))
    worst = 0
    for left in range(40, 48):
        for width in range(9, 30):
            kept = np.zeros((64, 160), bool)
            kept[:, left:left + width] = True
            row = pixels(preserve(generated, original, kept))[32, :, 0].astype(int)  # 0: original, 255: generated
            before, after = row[left - 20:left][::-1], row[left + width:left + width + 20]
            worst = max(worst, int(np.abs(before - after).max()))
    # What remains is the quarter grid's phase against the band's edges.
    assert worst <= 24, worst


def _whole_box(blocks, factor, blur_reach):
    """``_regions`` without its classification: the whole box, its weight computed everywhere."""
    return [(0, 0, blocks.shape[1] * factor, blocks.shape[0] * factor, True)]


@pytest.mark.parametrize("seed", range(6))
def test_preserve_by_regions_is_the_whole_box_composite_exactly(seed, monkeypatch):
    """Copying where the weight is surely 255, skipping where it is surely 0 and computing the
    ramp only in between gives exactly the pixels of computing it over the whole box."""
    from lib_differential_diffusion import strengths as module

    rng = np.random.default_rng(seed)
    height, width = (int(size) for size in rng.integers(20, 300, 2)) if seed > 1 else ((24, 90), (300, 12))[seed]  # two without a reduced grid
    original = Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype(np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype(np.uint8))
    kept = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, 5))):  # rectangles and lone pixels, some on the edges
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        kept[y : y + int(rng.integers(1, height)), x : x + int(rng.integers(1, width))] = True
    kept[rng.random((height, width)) < 0.001] = True
    by_regions = pixels(preserve(generated, original, kept))
    monkeypatch.setattr(module, "_regions", _whole_box)
    whole = pixels(preserve(generated, original, kept))
    assert np.array_equal(by_regions, whole)
    assert np.array_equal(by_regions[kept], pixels(original)[kept])


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_the_reduced_kept_mask_is_pils_reduce_of_the_0_255_mask(factor):
    """preserve counts kept pixels per block instead of making a full-size 8-bit mask for PIL to
    reduce: the same 8-bit values as PIL's ``reduce`` of that mask, for every count a block can hold."""
    from lib_differential_diffusion import strengths as module

    rng = np.random.default_rng(factor)
    size = factor * factor
    kept = rng.random((factor * 24, factor * (size + 1))) < rng.random((factor * 24, 1))  # rows from empty to full
    kept[:factor, :factor], kept[factor : 2 * factor, :factor] = True, False
    for count in range(size + 1):  # a block row holding every count
        kept[2 * factor : 3 * factor, count * factor : (count + 1) * factor] = (np.arange(size) < count).reshape(factor, factor)
    reduced = module._block_means(factor).take(module._kept_per_block(kept, factor))
    expected = np.asarray(Image.fromarray(kept.astype(np.uint8) * 255, "L").reduce(factor))
    assert np.array_equal(reduced, expected) and reduced[0, 0] == 255 and reduced[1, 0] == 0
    counts = module._kept_per_block(kept, factor)
    assert set(np.unique(counts).tolist()) == set(range(factor * factor + 1))  # every count was met
