"""Real-host proofs for inpainting, the WebUI's sampling options and several init images.

Each test checks that a zero region of the change map keeps the input pixel for
pixel while the rest changes, under one host feature that touches sampling or
geometry. Bit-for-bit comparisons prime the request (tests/webui/README.md).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from webui.host import SCRIPT_TITLE, options_set_back, decode_images, make_init_image, make_map_image, mean_change, png_b64, post_img2img

pytestmark = pytest.mark.webui

SIZE = 64


def dd(map_image: Image.Image | None = None, **options) -> dict:
    args = dict(options)
    if map_image is not None:
        args["map"] = png_b64(map_image)
    return {SCRIPT_TITLE: {"args": [args]}}


def ok_images(response) -> list[Image.Image]:
    assert response.status_code == 200, response.text[:500]
    return decode_images(response)


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def left_half_zero() -> Image.Image:
    """Black (keep) on the left half, white (change) on the right."""
    return make_map_image(SIZE, SIZE, kind="halves", low=0, high=255)


KEEP = (slice(None), slice(0, SIZE // 2 - 6))  # away from the map's edge and the preserve ramp
CHANGE = (slice(None), slice(SIZE // 2 + 6, SIZE))


def assert_left_kept_right_changed(result: Image.Image, init: Image.Image) -> None:
    assert np.array_equal(rgb(result)[KEEP], rgb(init)[KEEP]), "the map's zero half changed"
    assert np.abs(rgb(result)[CHANGE] - rgb(init)[CHANGE]).mean() > 5, "the map's white half did not change"


def test_halves_map_is_white_right_half():
    values = np.asarray(left_half_zero())
    assert values[:, : SIZE // 2].max() == 0 and values[:, SIZE // 2 :].min() == 255


# --------------------------------------------------------------------------- inpainting

def _mask(kind: str) -> Image.Image:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    if kind == "top":  # inpaint the top half
        return Image.fromarray(np.where(yy < SIZE // 2, 255, 0).astype(np.uint8))
    if kind == "ramp":  # soft mask rising left to right
        return Image.fromarray(np.clip(xx * 255 / (SIZE - 1), 0, 255).astype(np.uint8))
    raise ValueError(kind)


def test_inpaint_strength_is_map_times_mask(sd1_server):
    """Inpaint (mask = top half) with a map keeping the left half: only the top-right quarter changes."""
    init = make_init_image(SIZE, SIZE)
    (result,) = ok_images(post_img2img(sd1_server, init_image=init, mask=png_b64(_mask("top")), mask_blur=0, inpainting_fill=1,
                                       denoising_strength=0.9, alwayson_scripts=dd(left_half_zero())))
    top, bottom = slice(0, SIZE // 2 - 4), slice(SIZE // 2 + 4, SIZE)
    assert np.array_equal(rgb(result)[bottom], rgb(init)[bottom]), "outside the mask changed"
    assert np.array_equal(rgb(result)[top, : SIZE // 2 - 6], rgb(init)[top, : SIZE // 2 - 6]), "the map's zero half changed"
    assert np.abs(rgb(result)[top, SIZE // 2 + 6 :] - rgb(init)[top, SIZE // 2 + 6 :]).mean() > 5


@pytest.mark.needs("graded")
def test_inpaint_mask_as_the_change_map(sd1_server):
    """Source "inpaint mask": the soft mask's gray levels are change amounts (the paper's soft inpainting)."""
    init = make_init_image(SIZE, SIZE)
    (result,) = ok_images(post_img2img(sd1_server, init_image=init, mask=png_b64(_mask("ramp")), mask_blur=0, inpainting_fill=1,
                                       denoising_strength=1.0, alwayson_scripts=dd(source="inpaint mask")))
    change = np.abs(rgb(result) - rgb(init)).mean(axis=(0, 2))
    bands = [float(change[i * 16 + 2 : (i + 1) * 16 - 2].mean()) for i in range(4)]
    assert bands[0] < bands[1] < bands[2] < bands[3], bands
    assert change[0] == 0, "mask value 0 (left column) changed"


def _product(map_image: Image.Image, mask: Image.Image) -> Image.Image:
    return Image.fromarray(np.rint(np.asarray(map_image, np.float64) * np.asarray(mask, np.float64) / 255).astype(np.uint8))


SAME_STRENGTH_CASES = {
    # source "inpaint mask" (strength = mask) vs an all-white map in the same inpaint run (strength = 1 x mask)
    "inpaint mask as the source": ("ramp", dict(source="inpaint mask"), lambda mask: dict(map_image=make_map_image(SIZE, SIZE, kind="constant"))),
    # map x mask vs the product uploaded as the map (the mask is binary: the same strengths)
    "map x mask": ("top", dict(map_image=left_half_zero()), lambda mask: dict(map_image=_product(left_half_zero(), mask))),
}


@pytest.mark.parametrize("case", list(SAME_STRENGTH_CASES))
def test_inpaint_strengths_equal_the_same_strengths_uploaded(sd1_server, case):
    """An inpaint run is the run of another map with the same strengths, bit for bit: source
    "inpaint mask" is an all-white map under that mask, and map x mask is their product uploaded."""
    mask_kind, first, second = SAME_STRENGTH_CASES[case]
    init, mask = make_init_image(SIZE, SIZE), _mask(mask_kind)
    runs = []
    for options in (first, second(mask)):
        options = dict(options)
        map_image = options.pop("map_image", None)
        (result,) = ok_images(post_img2img(sd1_server, init_image=init, mask=png_b64(mask), mask_blur=0, inpainting_fill=1, prime=True,
                                           denoising_strength=0.9, alwayson_scripts=dd(map_image, **options)))
        runs.append(rgb(result))
    assert np.abs(runs[0] - rgb(init)).mean() > 5, "the inpaint run did not change the image: the comparison would prove nothing"
    assert np.array_equal(runs[0], runs[1]), f"{case}: differs from the same strengths uploaded: max {np.abs(runs[0] - runs[1]).max()}"
    if mask_kind == "ramp":
        assert np.array_equal(runs[0][:, 0], rgb(init)[:, 0]), "mask value 0 (left column) changed"


def test_inpaint_mask_source_without_a_mask_is_refused(sd1_server):
    r = post_img2img(sd1_server, alwayson_scripts=dd(source="inpaint mask"))
    assert r.status_code == 422 and "Differential Diffusion: source:" in r.text


def test_inpaint_only_masked_crops_the_map_like_the_mask(sd1_server):
    """Inpaint "only masked": the map is cropped like the mask; the map's zero half stays the input."""
    init = make_init_image(SIZE, SIZE)
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))  # centre square
    (result,) = ok_images(post_img2img(sd1_server, init_image=init, mask=png_b64(mask), mask_blur=0, inpainting_fill=1,
                                       inpaint_full_res=True, inpaint_full_res_padding=0, denoising_strength=0.9,
                                       alwayson_scripts=dd(left_half_zero())))
    inside_left, inside_right = (slice(18, 46), slice(18, SIZE // 2 - 3)), (slice(18, 46), slice(SIZE // 2 + 3, 46))
    assert np.array_equal(rgb(result)[inside_left], rgb(init)[inside_left])
    assert np.abs(rgb(result)[inside_right] - rgb(init)[inside_right]).mean() > 5
    outside = np.ones((SIZE, SIZE), bool)
    outside[14:50, 14:50] = False
    assert np.array_equal(rgb(result)[outside], rgb(init)[outside])


# --------------------------------------------------------------------------- sampling options

OPTION_CASES = {
    "AND prompt": dict(prompt="a red square AND a blue circle"),
    "prompt editing": dict(prompt="[a red square:a blue circle:3]"),
    "negative guidance minimum sigma": dict(s_min_uncond=5.0),
    "skip early CFG": dict(override_settings={"skip_early_cond": 0.3}),
    "img2img_fix_steps": dict(override_settings={"img2img_fix_steps": True}),
    "sigma churn": dict(override_settings={"s_churn": 0.5}),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_sampling_options_keep_working(sd1_server, case):
    """With each option, an all-white map is plain img2img and a half-black map keeps its half."""
    extra = OPTION_CASES[case]
    # The host never restores an override of a key its config file lacks (these three).
    with options_set_back(sd1_server, extra.get("override_settings", {})) as before:
        sampling_option_case(sd1_server, case, extra)
    after = sd1_server.get("/sdapi/v1/options").json()
    assert {key: after[key] for key in before} == before


def sampling_option_case(sd1_server, case: str, extra: dict) -> None:
    init = make_init_image(SIZE, SIZE)
    white = make_map_image(SIZE, SIZE, kind="constant", low=255, high=255)
    (plain,) = ok_images(post_img2img(sd1_server, init_image=init, prime=True, denoising_strength=0.8, **extra))
    (ones,) = ok_images(post_img2img(sd1_server, init_image=init, prime=True, denoising_strength=0.8, alwayson_scripts=dd(white), **extra))
    assert np.array_equal(rgb(plain), rgb(ones)), f"{case}: an all-white map is not plain img2img"
    (halves,) = ok_images(post_img2img(sd1_server, init_image=init, denoising_strength=0.8, alwayson_scripts=dd(left_half_zero()), **extra))
    assert_left_kept_right_changed(halves, init)


# --------------------------------------------------------------------------- several init images

def test_each_init_image_keeps_its_own_original(sd1_server):
    """Two init images in one request (batch size 2): each output keeps its own input where the map is 0."""
    first = make_init_image(SIZE, SIZE)
    second = Image.fromarray(255 - rgb(first).astype(np.uint8))
    r = post_img2img(sd1_server, init_image=first, init_images=[png_b64(first), png_b64(second)], batch_size=2,
                     denoising_strength=0.8, alwayson_scripts=dd(left_half_zero()))
    out_first, out_second = ok_images(r)[:2]
    assert_left_kept_right_changed(out_first, first)
    assert_left_kept_right_changed(out_second, second)
    assert mean_change(out_first, out_second) > 20
