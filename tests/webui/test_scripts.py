"""Differential Diffusion inside the WebUI's own img2img scripts and other extensions (real host).

Each script calls img2img with its own init images and geometry; the map must follow:
SD upscale (tiles of the upscaled image), Ultimate SD Upscale (only-masked passes over the
upscaled image, seams-fix passes too), loopback (every loop), the outpainting scripts (a map
cannot be placed on the grown canvas: refused unless the source is the inpaint mask), and soft
inpainting switched on together with Differential Diffusion (ours is the latent blend).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from webui.host import (MEASUREMENTS, SCRIPT_TITLE, decode_images, find_script_info, images_equal, make_init_image, make_map_image, max_change,
                        mean_change, post_img2img, response_info, script_args, script_info)
from webui.test_extension import assert_ok, dd

pytestmark = pytest.mark.webui


def measure(line: str) -> None:
    MEASUREMENTS.append(line)
    print(line)


def upscaler_index(server, name: str) -> int:
    return [u["name"] for u in server.get("/sdapi/v1/upscalers").json()].index(name)


def upscaler_and_source(server, init: Image.Image) -> tuple[str, Image.Image]:
    """The host's "Nearest" upscaler and ``init``; on a host without one (Neo: "None" and ESRGAN models
    only, whose weights cannot be downloaded here) "None" and ``init`` upscaled by Nearest beforehand."""
    upscalers = [u["name"] for u in server.get("/sdapi/v1/upscalers").json()]
    return ("Nearest", init) if "Nearest" in upscalers else ("None", Image.fromarray(nearest_x2(init)))


def nearest_x2(image: Image.Image) -> np.ndarray:
    """The "Nearest" upscaler at scale 2 (modules/upscaler.py UpscalerNearest)."""
    return np.asarray(image.convert("RGB").resize((image.width * 2, image.height * 2), resample=Image.NEAREST))


@pytest.mark.parametrize("overlap, batch_size", [(0, 1), (16, 2)])
def test_sd_upscale_tiles_take_their_part_of_the_map(sd1_server, overlap, batch_size):
    """x2 with the Nearest upscaler in 64x64 tiles: the map's black left half keeps the upscaled
    input exactly (across tiles and their overlaps), the white half changes. A host that lists no
    Nearest upscaler (Neo: "None" and ESRGAN models only, whose weights cannot be downloaded here)
    gets the input upscaled by Nearest beforehand and the "None" upscaler: the same tiles."""
    init = make_init_image(64, 64)
    upscaled = nearest_x2(init)
    upscaler, source = upscaler_and_source(sd1_server, init)
    args = script_args(sd1_server, "sd upscale", Tile_overlap=overlap, Upscaler=upscaler_index(sd1_server, upscaler), Scale_Factor=2.0)
    r = assert_ok(post_img2img(sd1_server, init_image=source, width=64, height=64, batch_size=batch_size, denoising_strength=0.6,
                               script_name="sd upscale", script_args=args, alwayson_scripts=dd(make_map_image(kind="halves"))))
    (result,) = decode_images(r)[:1]
    result = np.asarray(result.convert("RGB"))
    assert result.shape == upscaled.shape == (128, 128, 3)
    kept_diff = int(np.abs(result[:, :56].astype(int) - upscaled[:, :56]).max())
    changed = float(np.abs(result[:, 72:].astype(int) - upscaled[:, 72:]).mean())
    measure(f"SD upscale x2 ({upscaler} upscaler, overlap {overlap}, batch {batch_size}), halves map: kept half max diff {kept_diff}, changed half mean {changed:.1f}")
    assert kept_diff <= 1 and changed > 2


def test_ultimate_sd_upscale_follows_the_map_through_tiles_and_seam_passes(sd1_server):
    info = [s for s in sd1_server.get("/sdapi/v1/script-info").json() if s["name"] == "ultimate sd upscale" and s["is_img2img"]]
    if not info:
        pytest.skip("Ultimate SD Upscale is not installed (put its checkout in SD_WEBUI_TEST_EXTENSIONS)")
    init = make_init_image(64, 64)
    upscaled = nearest_x2(init)
    # Without a Nearest upscaler (Neo) the input comes upscaled by Nearest and the script keeps its size with
    # "None" (ultimate-upscale.py: "None" resizes to the canvas, here the same size): the same tiles.
    upscaler, source = upscaler_and_source(sd1_server, init)
    scale = 2.0 if upscaler == "Nearest" else 1.0
    # scripts/ultimate-upscale.py run() order: info, tile_width, tile_height, mask_blur, padding, seams_fix_width,
    # seams_fix_denoise, seams_fix_padding, upscaler_index, save_upscaled_image, redraw_mode, save_seams_fix_image,
    # seams_fix_mask_blur, seams_fix_type, target_size_type, custom_width, custom_height, custom_scale
    args = [None, 64, 64, 4, 16, 32, 0.35, 16, upscaler_index(sd1_server, upscaler), False, 0, False, 4, 2, 2, 128, 128, scale]
    r = assert_ok(post_img2img(sd1_server, init_image=source, denoising_strength=0.6, script_name="ultimate sd upscale", script_args=args,
                               alwayson_scripts=dd(make_map_image(kind="halves"))))
    result = np.asarray(decode_images(r)[0].convert("RGB"))
    assert result.shape == upscaled.shape
    kept_diff = int(np.abs(result[:, :56].astype(int) - upscaled[:, :56]).max())
    changed = float(np.abs(result[:, 72:].astype(int) - upscaled[:, 72:]).mean())
    measure(f"Ultimate SD Upscale x2 ({upscaler} upscaler, 64 px tiles, linear redraw, half-tile seams fix), halves map: kept half max diff {kept_diff}, changed half mean {changed:.1f}")
    assert kept_diff <= 1 and changed > 2


def test_loopback_keeps_the_zero_region_the_original_across_loops(sd1_server):
    init = make_init_image(64, 64)
    args = script_args(sd1_server, "loopback", Loops=3, Final_denoising_strength=0.5)
    r = assert_ok(post_img2img(sd1_server, init_image=init, denoising_strength=0.6, script_name="loopback", script_args=args,
                               alwayson_scripts=dd(make_map_image(kind="halves"))))
    images = decode_images(r)
    final = images[0] if len(images) == 1 else images[-1]
    measure(f"loopback 3 loops, halves map: zero half max diff {max_change(final, init, box=(0, 0, 32, 64))}, "
            f"white half mean change {mean_change(final, init, box=(32, 0, 64, 64)):.1f}")
    assert max_change(final, init, box=(0, 0, 28, 64)) == 0
    assert mean_change(final, init, box=(36, 0, 64, 64)) > 2


# Both round the grown canvas up to a multiple of 64; mk2 draws its masks in p's size, so it
# needs a 128-wide target for its 64 px more on a 64-wide input.
@pytest.mark.parametrize("script, expand, width, result_width", [
    ("poor man's outpainting", 32, 64, 128),
    ("outpainting mk2", 64, 128, 128),
])
def test_outpainting_scripts_refuse_a_map_and_take_the_inpaint_mask(sd1_server, script, expand, width, result_width):
    info = find_script_info(sd1_server, script)
    if info is None:
        pytest.skip(f"the host has no {script!r} script (Forge Classic and Neo removed both)")
    init = make_init_image(64, 64)
    title = info["name"]
    args = script_args(sd1_server, script, Pixels_to_expand=expand, Outpainting_direction=["right"])
    common = dict(init_image=init, width=width, script_name=title, script_args=args)
    r = post_img2img(sd1_server, alwayson_scripts=dd(make_map_image(kind="halves")), **common)
    assert r.status_code == 422, r.text[:500]
    assert "Differential Diffusion: script:" in r.json()["detail"] and "grows the canvas" in r.json()["detail"]
    r = assert_ok(post_img2img(sd1_server, alwayson_scripts={SCRIPT_TITLE: {"args": [{"source": "inpaint mask"}]}}, **common))
    assert decode_images(r)[0].width == result_width


def test_soft_inpainting_together_keeps_only_its_final_composite(sd1_server):
    """Both want the latent mask blend: Differential Diffusion takes it (its strengths already hold
    the mask), soft inpainting keeps its final composite, and the infotext says so."""
    init, mask = make_init_image(64, 64), make_map_image(kind="halves")  # inpaint the right half
    soft = {"soft inpainting": {"args": [True, 1, 0.5, 4, 0, 0.5, 2]}}
    white = make_map_image(kind="constant", high=255)
    common = dict(init_image=init, mask=mask, mask_blur=4, denoising_strength=0.8, prime=True)
    soft_only = decode_images(assert_ok(post_img2img(sd1_server, alwayson_scripts=soft, **common)))[0]
    dd_only = decode_images(assert_ok(post_img2img(sd1_server, alwayson_scripts=dd(white), **common)))[0]
    r = assert_ok(post_img2img(sd1_server, alwayson_scripts={**soft, **dd(white)}, **common))
    both = decode_images(r)[0]
    params = response_info(r)["extra_generation_params"]
    assert params.get("DD soft inpainting") == "final composite only" and params.get("Soft inpainting enabled") is True
    # The host's mask blur 4 is a 21-px Gaussian kernel: the mask (and so the strengths) is 0
    # left of column 22. Between there and the mask's edge strengths are small but not 0, and
    # soft inpainting's final composite (widened by the latent difference) shows them.
    kept = (0, 0, 22, 64)
    measure(f"soft inpainting (mask right half, blur 4): alone changes the zero-mask columns by max {max_change(soft_only, init, box=kept)}; "
            f"with DD those columns max {max_change(both, init, box=kept)}, masked half vs DD alone mean {mean_change(both, dd_only, box=(36, 0, 64, 64)):.2f}")
    assert max_change(both, init, box=kept) == 0
    no_op = sd1_server.host.profile.cannot("soft_inpainting")
    if no_op:
        # The host's soft inpainting returns the input everywhere (its final composite pastes the
        # original over the whole result): ours leaves that composite to it, so the result is what
        # soft inpainting alone gives there, the input, not a result of its own.
        assert images_equal(soft_only, init), f"{no_op}, yet soft inpainting alone changed max {max_change(soft_only, init)}"
        assert images_equal(both, soft_only), f"max diff {max_change(both, soft_only)}"
    else:
        assert mean_change(both, init, box=(36, 0, 64, 64)) > 2
