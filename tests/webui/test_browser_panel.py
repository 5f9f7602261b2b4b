"""The Differential Diffusion panel used for real in the WebUI page, by headless Chromium.

Upload an init image (img2img tab) and a change map (the panel), click the panel's Preview
button and see the preview, click Generate and see the result in the gallery; no console or
page errors from the extension. The result file is fetched from the page and checked: where the
map is black it is the init image exactly. Screenshots of the panel (with its preview) and of the
result are written for the README: to docs/panel.png and docs/result.png when
DD_UPDATE_DOCS=1, else next to the test's tmp files (listed under "webui artifacts"), so a plain
test run leaves the checkout clean.

Tools as for test_browser.py (node, Debian chromium, npm playwright-core; missing -> skip).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.host import ARTIFACTS, MEASUREMENTS, PROJECT_ROOT, SCRIPT_TITLE, make_init_image
from webui.test_browser import _mentions_extension, browser_tools  # noqa: F401  (fixture)

pytestmark = [pytest.mark.webui, pytest.mark.browser]

HERE = Path(__file__).resolve().parent
PANEL_JS = HERE / "browser_panel.js"
DOCS = PROJECT_ROOT / "docs"
MAX_SCREENSHOT_BYTES = 300_000
SIZE = 128


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
    node, chromium, pwc = browser_tools
    init_path, map_path = tmp_path / "init.png", tmp_path / "map.png"
    init = make_init_image(SIZE, SIZE)
    change_map = disc_map()
    init.save(init_path)
    change_map.save(map_path)
    out_dir = tmp_path / "screens"
    cfg = {
        "url": ui_server.url + "/",
        "chromium": chromium,
        "playwrightCore": pwc,
        "outDir": str(out_dir),
        "userDataDir": str(tmp_path / "chromium-profile"),
        "initImage": str(init_path),
        "mapImage": str(map_path),
        "width": SIZE, "height": SIZE, "steps": 10, "denoise": 0.75,
        "timeoutMs": 120_000, "generateTimeoutMs": 240_000, "totalTimeoutMs": 450_000,
    }
    try:
        proc = subprocess.run([node, str(PANEL_JS), json.dumps(cfg)], capture_output=True, text=True,
                              timeout=480, cwd=str(HERE))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"browser_panel.js timed out; stderr: {(e.stderr or '')[-2000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from browser_panel.js (rc {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    res = json.loads(lines[-1])
    print("steps:", json.dumps(res.get("steps"), indent=1))
    for kind in ("consoleErrors", "pageErrors", "failedRequests", "blockedRequests"):
        if res.get(kind):
            print(f"{kind}: {json.dumps(res[kind], indent=1)[:3000]}")

    assert res.get("ok"), f"browser run failed: {res.get('error')}\nsteps: {res.get('steps')}\nstderr: {proc.stderr[-2000:]}"
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
    sizes = {}
    for name in ("panel", "result"):
        shot = res["screenshots"].get(name)
        assert shot and Path(shot).is_file(), f"no {name} screenshot"
        sizes[name] = _save_small(Path(shot), target / f"{name}.png")
        assert sizes[name] < MAX_SCREENSHOT_BYTES, f"{name}.png is {sizes[name]} bytes"
        ARTIFACTS.append(f"screenshot {name}: {target / f'{name}.png'} ({sizes[name]} bytes)")
    MEASUREMENTS.append(f"browser: preview {res['timings'].get('preview_s')} s, generate {res['timings'].get('generate_s')} s "
                        f"({SIZE}x{SIZE}, 10 steps); panel.png {sizes['panel']} B, result.png {sizes['result']} B -> {target}")
