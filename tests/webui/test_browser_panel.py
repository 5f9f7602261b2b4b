"""The Differential Diffusion panel used for real in the WebUI page, by headless Chromium.

Upload an init image (img2img tab) and a change map (the panel), click the panel's Preview
button and see the preview, click Generate and see the result in the gallery; no console or
page errors from the extension. The result file is fetched from the page and checked: where the
map is black it is the init image exactly. Then the strength fan on the same page: choose map
source "fan" (its settings show), 4 vertical bands, Preview, Generate -> the image and its
labelled copy (band #1 is the init image exactly, the others changed), select the copy, then
"Apply region's strength" for region #3 -> the denoising strength becomes 0.5 (2/3 x 0.75) and
the panel turns off, with a note saying so.
Screenshots of the panel (with its preview), the result, the fan's preview and the fan's
labelled result are written for the README: to docs/panel.png, docs/result.png,
docs/preview.png and docs/fan.png when DD_UPDATE_DOCS=1 (tools/update_docs_pictures.py),
else next to the test's tmp files (listed under "webui artifacts"), so a plain test run leaves
the checkout clean.

Tools as for test_browser.py (node, Debian chromium, npm playwright-core; missing -> skip).
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.host import ARTIFACTS, MEASUREMENTS, NAN_SAMPLES_WARNING, PROJECT_ROOT, SCRIPT_TITLE, make_init_image
from webui.test_browser import _mentions_extension, browser_tools, run_browser_script  # noqa: F401  (fixture)

pytestmark = [pytest.mark.webui, pytest.mark.browser]

HERE = Path(__file__).resolve().parent
PANEL_JS = HERE / "browser_panel.js"
DOCS = PROJECT_ROOT / "docs"
MAX_SCREENSHOT_BYTES = 300_000
SIZE = 128
DENOISE = 0.75
FAN_COUNT = 4
FAN_REGION = 3  # strength 2/3 (low 0, high 1) -> 2/3 x 0.75 = 0.5
SCREENSHOTS = ("panel", "result", "preview", "fan")


def disc_map(size: int = SIZE) -> Image.Image:
    """White centre fading to black at 2/3 of the half-width; black corners."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(x - (size - 1) / 2, y - (size - 1) / 2) / (size / 2)
    return Image.fromarray(np.clip(np.rint(255 * np.clip(1.6 - 2.4 * r, 0, 1)), 0, 255).astype(np.uint8), "L")


def _save_small(src: Path, dst: Path) -> int:
    """Copy a screenshot to docs/, palette-quantized if it is over the size limit."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if dst.stat().st_size > MAX_SCREENSHOT_BYTES:
        Image.open(src).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    return dst.stat().st_size


def test_panel_preview_and_generate_in_browser(browser_tools, ui_server, tmp_path):  # noqa: F811
    init_path, map_path = tmp_path / "init.png", tmp_path / "map.png"
    init = make_init_image(SIZE, SIZE)
    change_map = disc_map()
    init.save(init_path)
    change_map.save(map_path)
    res, stderr = run_browser_script(
        browser_tools, PANEL_JS, ui_server, tmp_path, timeout_s=780,
        initImage=str(init_path), mapImage=str(map_path),
        width=SIZE, height=SIZE, steps=10, denoise=DENOISE,
        fanCount=FAN_COUNT, fanLayout="vertical bands", fanRegion=FAN_REGION,
        timeoutMs=120_000, generateTimeoutMs=240_000, totalTimeoutMs=720_000,
    )
    print("steps:", json.dumps(res.get("steps"), indent=1))
    print("fan:", json.dumps(res.get("fan"), indent=1)[:6000])

    assert res.get("ok"), (f"browser run failed (map flow done: {res.get('mapFlowOk')}): {res.get('error')}\nsteps: {res.get('steps')}\n"
                           f"fan: {json.dumps(res.get('fan'))[:3000]}\nstderr: {stderr[-2000:]}")
    assert res["panelOpen"], "the panel did not open"
    assert res["enabledChecked"] is True, "opening the panel did not enable it"
    preview = res["preview"] or {}
    assert preview.get("complete") and preview.get("w", 0) > 0 and preview.get("h", 0) > 0, f"no preview image: {preview}"
    assert not res.get("previewError"), f"the preview reported an error: {res['previewError']}"
    images = (res.get("gallery") or {}).get("images") or []
    assert any(i.get("complete") and i.get("w") == SIZE and i.get("h") == SIZE for i in images), f"no {SIZE}x{SIZE} result in the gallery: {images}"
    assert not (res.get("galleryError") or "").strip(), f"the generation reported: {res['galleryError']}"
    info = res.get("generationInfo") or ""
    assert f"{SCRIPT_TITLE}: True" in info and "DD map hash" in info, f"the result's infotext lacks the extension's fields: {info[:1000]}"

    # The generated file: black map pixels are the init image exactly, white ones changed.
    assert res.get("resultImage"), f"result file not fetched: {res.get('resultFetch')}"
    out = np.asarray(Image.open(res["resultImage"]).convert("RGB")).astype(np.int32)
    diff = np.abs(out - np.asarray(init).astype(np.int32)).max(axis=-1)
    m = np.asarray(change_map)
    assert (m == 0).sum() > 1000
    assert diff[m == 0].max() == 0, f"{int((diff[m == 0] > 0).sum())} black-map pixels changed in the UI result"
    assert diff[m == 255].mean() > 20, "the white centre did not change"

    _check_fan(res.get("fan") or {}, init)

    ext_console = [e for e in res.get("consoleErrors", []) if _mentions_extension(e.get("text"), e.get("url"))]
    ext_page = [e for e in res.get("pageErrors", []) if _mentions_extension(e.get("text"))]
    ext_requests = [r for r in res.get("failedRequests", []) if _mentions_extension(r.get("url"))]
    assert not ext_console, f"console errors from the extension: {ext_console}"
    assert not res.get("pageErrors"), f"page errors: {res['pageErrors']}"
    assert not ext_page and not ext_requests, (ext_page, ext_requests)
    # The only console error allowed is the blocked cdnjs request (tests/webui/README.md).
    other = [e for e in res.get("consoleErrors", []) if "ERR_BLOCKED_BY_CLIENT" not in e.get("text", "")]
    assert not other, f"console errors: {other}"

    target = DOCS if os.environ.get("DD_UPDATE_DOCS") == "1" else tmp_path / "docs"
    # Black (NaN) samples pass the checks above (black differs from the input) but make
    # useless README pictures: a host/checkpoint problem of that server start, not the extension's.
    nan_samples = ui_server.nan_samples_since_start()  # the harness restarts NaN starts; a later model load may still hit one
    if nan_samples:
        print(f"warning: the UI server decoded NaN samples (black images): '{NAN_SAMPLES_WARNING}' in {ui_server.log_path}")
        if target == DOCS:
            pytest.fail(f"docs/ not updated: this server start decoded NaN samples (black images; '{NAN_SAMPLES_WARNING}' in "
                        f"{ui_server.log_path}, from its warm-up on). Run again (a new server start).")
    sizes = {}
    for name in SCREENSHOTS:
        shot = res["screenshots"].get(name)
        assert shot and Path(shot).is_file(), f"no {name} screenshot"
        sizes[name] = _save_small(Path(shot), target / f"{name}.png")
        assert sizes[name] < MAX_SCREENSHOT_BYTES, f"{name}.png is {sizes[name]} bytes"
        ARTIFACTS.append(f"screenshot {name}: {target / f'{name}.png'} ({sizes[name]} bytes)")
    timings = res["timings"]
    pictures = ", ".join(f"{name}.png {sizes[name]} B" for name in SCREENSHOTS)
    MEASUREMENTS.append(("NaN samples (black images)! " if nan_samples else "")
                        + f"browser: preview {timings.get('preview_s')} s, generate {timings.get('generate_s')} s, "
                        f"fan preview {timings.get('fan_preview_s')} s, fan generate {timings.get('fan_generate_s')} s "
                        f"({SIZE}x{SIZE}, 10 steps); {pictures} -> {target}")


def _check_fan(fan: dict, init: Image.Image) -> None:
    """The strength fan phase of browser_panel.js (result.fan)."""
    assert not fan.get("error"), f"fan phase failed: {fan.get('error')}"
    assert fan.get("groupVisible") is True, f"the fan settings did not show after choosing map source 'fan': {fan}"
    preview = fan.get("preview") or {}
    assert preview.get("complete") and preview.get("w", 0) > 0 and preview.get("h", 0) > 0, f"no fan preview image: {preview}"
    assert fan.get("previewChanged") is True, "the preview did not change for the fan"
    assert not fan.get("previewError"), f"the fan preview reported an error: {fan['previewError']}"

    gallery = fan.get("gallery") or {}
    images = gallery.get("images") or []
    assert gallery.get("count") == 2, f"a fan generation should show the image and its labelled copy: {images}"
    assert all(i.get("complete") and i.get("w") == SIZE and i.get("h") == SIZE for i in images), f"not two {SIZE}x{SIZE} images: {images}"
    assert not (fan.get("galleryError") or "").strip(), f"the fan generation reported: {fan['galleryError']}"
    info = fan.get("generationInfo") or ""
    assert "DD source: fan" in info, f"the fan result's infotext lacks 'DD source: fan': {info[:1000]}"
    assert (fan.get("selected") or {}).get("isLabelledCopy") is True, f"the labelled copy was not shown large: {fan.get('selected')}"

    # Where change happens: band #1 (strength 0) is the init image exactly, the others changed;
    # the labelled copy is the image with seams and labels drawn on it.
    assert fan.get("plainImage") and fan.get("labelledImage"), f"fan results not fetched: {fan.get('fetches')}"
    out = np.asarray(Image.open(fan["plainImage"]).convert("RGB")).astype(np.int32)
    diff = np.abs(out - np.asarray(init).astype(np.int32)).max(axis=-1)
    band = SIZE // FAN_COUNT
    bands = [diff[:, i * band:(i + 1) * band] for i in range(FAN_COUNT)]
    assert bands[0].max() == 0, f"{int((bands[0] > 0).sum())} pixels of band #1 (strength 0) changed"
    assert all(b.max() > 0 for b in bands[1:]), f"bands #2..#{FAN_COUNT} should change: mean change {[float(b.mean()) for b in bands]}"
    assert bands[-1].mean() > 20, f"band #{FAN_COUNT} (strength {DENOISE}) barely changed: {float(bands[-1].mean()):.1f}"
    labelled = Image.open(fan["labelledImage"]).convert("RGB")
    assert labelled.size == (SIZE, SIZE)
    assert np.any(np.asarray(labelled).astype(np.int32) != out), "the labelled copy has no labels"

    # Apply region #3: denoising strength 2/3 x 0.75 = 0.5, the panel off, a note.
    denoising = float(fan.get("denoising") or "nan")
    assert abs(denoising - 0.5) < 1e-6, f"denoising strength after applying region #{FAN_REGION}: {fan.get('denoising')!r} (expected 0.5)"
    assert fan.get("enabledChecked") is False, f"the panel is still enabled after Apply: {fan.get('enabledChecked')}"
    note = fan.get("note") or ""
    assert "0.50" in note and f"#{FAN_REGION}" in note, f"the note after Apply: {note!r}"
