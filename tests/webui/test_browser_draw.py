"""The panel's map editor (map source "draw") used for real in the WebUI page, by headless Chromium.

browser_draw.js draws, with the mouse, a radial gradient (100 % at the centre to 0 % at radius
40) and two hard brush strokes (60 %, then 100 %), presses "]" and "[", Ctrl+Z, Ctrl+Shift+Z and
Ctrl+Z over the editor (the second stroke is undone), shows the raw gray map, and generates.
Checked here:

* the editor's map equals the same drawing computed independently (numpy, from the points the
  editor recorded, which must be where the mouse went), and the map the server received (the
  test route's ``received_map``, 16 bits) equals the editor's map within one gray level;
* the output follows it: where the map is 0 (the surround, the undone stroke) the result is the
  init image exactly (Preserve on), where it is 60 % or more it changed;
* keys, undo depth, the overlay's colours, the Preview, the infotext;
* the inpaint tab: an init image of another size stretches the drawing (with a note), the
  page's own inpaint brush still paints its mask, keys over it are not the editor's even with
  the focus in the editor, and back in the img2img tab the drawing is exactly as it was.

With DD_UPDATE_DOCS=1 (tools/update_docs_pictures.py) the steps make docs/draw.png.
Tools as for test_browser.py (node, Debian chromium, npm playwright-core; missing -> skip).
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from webui.host import ARTIFACTS, MEASUREMENTS, NAN_SAMPLES_WARNING, PROJECT_ROOT, SCRIPT_TITLE, make_init_image
from webui.test_browser import _mentions_extension, browser_tools, run_browser_script  # noqa: F401  (fixture)
from webui.test_browser_panel import _save_small

pytestmark = [pytest.mark.webui, pytest.mark.browser]

HERE = Path(__file__).resolve().parent
DRAW_JS = HERE / "browser_draw.js"
DOCS = PROJECT_ROOT / "docs"
SIZE = 128
INPAINT_SIZE = (96, 160)
DENOISE = 0.75
MAX_VALUE = 65535
GRADIENT = {"x0": 64, "y0": 60, "x1": 104, "y1": 60, "from": 100, "to": 0}
STROKES = [
    {"amount": 60, "size": 24, "points": [[14, 112], [40, 116]]},  # kept: lies where the gradient is 0
    {"amount": 100, "size": 20, "points": [[100, 12], [120, 20]]},  # undone
]
# Overlay pixels read at these map points: the gradient's centre (100 %) and a corner (0 %).
OVERLAY_PROBES = [[64, 60], [2, 2]]
STEP_CAPTIONS = [
    ("step1_gradient", "1  radial gradient 100 % -> 0 %"),
    ("step2_stroke", "2  brush 60 %"),
    ("step3_stroke", "3  brush 100 %"),
    ("step4_undo", "4  Ctrl+Z"),
    ("step5_gray", "5  raw gray map"),
]


def expected_drawing(gradient: dict, stroke: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The radial gradient then one hard, full-flow brush stroke, in 16-bit values, and a mask of
    the pixels whose value is certain (not on the stroke's 1-pixel antialiased edge)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    radius = np.hypot(gradient["x1"] - gradient["x0"], gradient["y1"] - gradient["y0"])
    t = np.minimum(1.0, np.hypot(x - gradient["x0"], y - gradient["y0"]) / radius)
    a, b = gradient["from"], gradient["to"]
    values = np.rint((a + (b - a) * t) * MAX_VALUE)
    points = np.asarray(stroke["points"], dtype=np.float64)[:, :2]  # x, y (pressure is 1 for a mouse)
    distance = np.full(x.shape, np.inf)
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]) if len(points) > 1 else [(points[0], points[0])]:
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        s = np.clip(((x - ax) * dx + (y - ay) * dy) / length2, 0, 1) if length2 else 0.0
        distance = np.minimum(distance, np.hypot(x - ax - s * dx, y - ay - s * dy))
    r = stroke["radius"]
    values[distance <= r - 1] = np.rint(stroke["amount"] * MAX_VALUE)
    certain = (distance <= r - 1) | (distance >= r)
    return values.astype(np.int64), certain


def _strip(shots: dict, captions: list, result_image: Path, target: Path) -> None:
    """The steps side by side with captions, then the result."""
    tiles = [(Image.open(shots[name]).convert("RGB"), caption) for name, caption in captions]
    tiles.append((Image.open(result_image).convert("RGB"), f"{len(captions) + 1}  result (0 % kept exactly)"))
    height = 256
    scaled = [(tile.resize((round(tile.width * height / tile.height), height), Image.Resampling.LANCZOS), caption) for tile, caption in tiles]
    gap, caption_height = 8, 22
    strip = Image.new("RGB", (sum(t.width for t, _ in scaled) + gap * (len(scaled) + 1), height + caption_height + gap * 2), (250, 250, 250))
    draw = ImageDraw.Draw(strip)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: the small bitmap font
        font = ImageFont.load_default()
    left = gap
    for tile, caption in scaled:
        strip.paste(tile, (left, gap + caption_height))
        draw.text((left, gap + 2), caption, fill=(20, 20, 20), font=font)
        left += tile.width + gap
    target.parent.mkdir(parents=True, exist_ok=True)
    strip.save(target, optimize=True)


def test_draw_map_in_browser(browser_tools, ui_server, tmp_path):  # noqa: F811
    init_path, inpaint_path = tmp_path / "init.png", tmp_path / "inpaint.png"
    # Gray pictures: the heat colours of the overlay read better over them (docs/draw.png).
    init = make_init_image(SIZE, SIZE).convert("L").convert("RGB")
    init.save(init_path)
    make_init_image(*INPAINT_SIZE).convert("L").convert("RGB").save(inpaint_path)
    res, stderr = run_browser_script(
        browser_tools, DRAW_JS, ui_server, tmp_path, timeout_s=780,
        initImage=str(init_path), inpaintImage=str(inpaint_path), inpaintSize=list(INPAINT_SIZE),
        width=SIZE, height=SIZE, steps=10, denoise=DENOISE, gradient=GRADIENT, strokes=STROKES, overlayProbes=OVERLAY_PROBES,
        timeoutMs=120_000, generateTimeoutMs=240_000, totalTimeoutMs=720_000,
    )
    print("steps:", json.dumps(res.get("steps"), indent=1))
    assert res.get("ok"), (f"browser run failed (main flow done: {res.get('mainFlowOk')}): {res.get('error')}\nsteps: {res.get('steps')}\n"
                           f"inpaint: {res.get('inpaint')}\nstderr: {stderr[-2000:]}")

    # The editor, at the init image's size; nothing sent before anything is drawn.
    assert res["editorShown"] is True
    assert res["mapSizes"]["initial"] == {"width": SIZE, "height": SIZE, "hasDrawing": False}, res["mapSizes"]
    assert res["textboxInitially"] == "", "an untouched editor must send nothing ('nothing drawn')"

    # Keys over the editor.
    keys = res["brushSizeKeys"]
    assert keys["afterBracket"] > keys["before"] and keys["afterBoth"] < keys["afterBracket"], f"'[' / ']' over the editor: {keys}"
    depths = [res["snapshots"][name]["undo"] for name in ("gradient", "undo1", "redo", "final")]
    assert depths == [1, 2, 3, 2], f"undo depth after the gradient, Ctrl+Z, Ctrl+Shift+Z, Ctrl+Z: {depths}"
    assert res["snapshots"]["final"]["redo"] == 1
    edits = [entry["edit"] for entry in res["journal"]]
    assert edits == ["radial", "brush", "brush", "undo", "redo", "undo"], edits

    # The overlay: heat colours leave 0 % clear and show ~100 % red and opaque; raw gray shows the values.
    drawn = np.asarray(res["drawnValues"], dtype=np.int64).reshape(SIZE, SIZE)
    (heat_centre, heat_corner), (gray_centre, gray_corner) = res["overlay"]["heat"], res["overlay"]["gray"]
    assert heat_corner[3] == 0, f"heat overlay at 0 % is not clear: {heat_corner}"
    assert heat_centre[3] > 240 and heat_centre[0] > 200 > max(heat_centre[1:3]), f"heat overlay at ~100 %: {heat_centre}"
    centre_gray = drawn[OVERLAY_PROBES[0][1], OVERLAY_PROBES[0][0]] / 257
    assert gray_centre[3] == 255 and len(set(gray_centre[:3])) == 1 and abs(gray_centre[0] - centre_gray) <= 1, f"raw gray overlay {gray_centre}, map {centre_gray:.1f}"
    assert gray_corner == [0, 0, 0, 255], f"raw gray overlay at 0 %: {gray_corner}"

    # The recorded drawing is where the mouse went.
    gradient = res["journal"][0]
    for key in ("x0", "y0", "x1", "y1"):
        assert abs(gradient[key] - GRADIENT[key]) <= 0.5, f"gradient {key}: {gradient[key]} (dragged to {GRADIENT[key]})"
    assert (gradient["from"], gradient["to"]) == (GRADIENT["from"] / 100, GRADIENT["to"] / 100)
    stroke = res["journal"][1]
    assert (stroke["amount"], stroke["radius"], stroke["softness"], stroke["flow"]) == (0.6, 12, 0, 1), stroke
    assert np.abs(np.asarray(stroke["points"][0][:2]) - STROKES[0]["points"][0]).max() <= 0.5
    assert np.abs(np.asarray(stroke["points"][-1][:2]) - STROKES[0]["points"][-1]).max() <= 0.5

    # (a) The editor's map is that drawing, and the server received it.
    expected, certain = expected_drawing(gradient, stroke, SIZE)
    off = np.abs(drawn - expected)[certain]
    assert certain.sum() > 0.9 * SIZE * SIZE and off.max() <= 1, f"editor map vs numpy: max |diff| {off.max()} (16-bit units) on {int((off > 1).sum())} pixels"
    assert res["lastRun"]["map_source"] == "draw", res["lastRun"]
    assert res.get("receivedMap"), f"no received_map from the test route: {res['lastRun']}"
    received_image = Image.open(res["receivedMap"])
    assert received_image.size == (SIZE, SIZE), received_image.size
    received = np.asarray(received_image).astype(np.int64)
    assert np.abs(received - drawn).max() <= 257, f"the server's map differs from the drawing by up to {np.abs(received - drawn).max()} / 65535"
    gray_levels_off = int(np.abs(received - drawn).max())

    # The Preview shows the drawn map.
    assert not res.get("previewError"), f"the preview reported: {res['previewError']}"
    assert res.get("preview") and res["preview"][0]["w"] > 0, f"no preview of the drawn map: {res.get('preview')}"

    # (b) The output: 0 stays the input exactly, 60 % and up changed.
    info = res.get("generationInfo") or ""
    assert f"{SCRIPT_TITLE}: True" in info and "DD source: draw" in info, f"infotext: {info[:1000]}"
    assert not (res.get("galleryError") or "").strip(), res["galleryError"]
    out = np.asarray(Image.open(res["resultImage"]).convert("RGB")).astype(np.int32)
    diff = np.abs(out - np.asarray(init).astype(np.int32)).max(axis=-1)
    kept, changed = received == 0, received >= 0.6 * MAX_VALUE
    undone_stroke = np.zeros_like(kept)
    undone_stroke[12:21, 100:121] = True
    assert kept[undone_stroke].all(), "the undone stroke is still in the received map"
    assert kept.sum() > 5000 and changed.sum() > 500, (int(kept.sum()), int(changed.sum()))
    assert diff[kept].max() == 0, f"{int((diff[kept] > 0).sum())} pixels with map 0 changed"
    assert diff[changed].mean() > 10, f"pixels with map >= 60 % barely changed: mean {diff[changed].mean():.1f}"

    # Inpaint tab and back.
    inpaint = res["inpaint"]
    stretched = inpaint["mapStretched"]
    assert (stretched["width"], stretched["height"]) == INPAINT_SIZE and stretched["hasDrawing"], stretched
    assert "stretched" in stretched["note"], stretched["note"]
    assert inpaint["maskPixels"]["painted"] > 100, f"the inpaint brush painted no mask after using the editor: {inpaint['maskPixels']}"
    keys_there = inpaint["editorAfterKeys"]
    assert keys_there["focusInEditor"], keys_there
    assert (keys_there["brushSize"], keys_there["undo"], keys_there["tool"]) == (keys_there["brushSizeBefore"], keys_there["undoBefore"], keys_there["toolBefore"]), \
        f"keys over the inpaint canvas reached the editor (which had the focus): {keys_there}"
    assert (inpaint["mapBack"]["width"], inpaint["mapBack"]["height"]) == (SIZE, SIZE) and inpaint["backEqual"] is True, inpaint["mapBack"]

    assert not res.get("pageErrors"), f"page errors: {res['pageErrors']}"
    ext_requests = [r for r in res.get("failedRequests", []) if _mentions_extension(r.get("url"))]
    assert not ext_requests, ext_requests
    other = [e for e in res.get("consoleErrors", []) if "ERR_BLOCKED_BY_CLIENT" not in e.get("text", "")]
    assert not other, f"console errors: {other}"

    waits = [round(w, 1) for w in res.get("generateWaitMs") or []]
    MEASUREMENTS.append(f"browser draw: received map within {gray_levels_off}/65535 of the drawing; Generate waited {waits} ms for the map "
                        f"({SIZE}x{SIZE}); encodes {[round(e['ms'], 1) for e in res.get('encodes') or []]} ms; "
                        f"frame work {res.get('frames', {}).get('work')}")
    for name, shot in res["screenshots"].items():
        ARTIFACTS.append(f"screenshot {name}: {shot}")

    target = DOCS if os.environ.get("DD_UPDATE_DOCS") == "1" else tmp_path / "docs"
    if ui_server.nan_samples_since_start():
        print(f"warning: the UI server decoded NaN samples (black images): '{NAN_SAMPLES_WARNING}' in {ui_server.log_path}")
        if target == DOCS:
            pytest.fail("docs/ not updated: this server start decoded NaN samples (black images). Run again (a new server start).")
    strip = tmp_path / "draw_strip.png"
    _strip(res["screenshots"], STEP_CAPTIONS, Path(res["resultImage"]), strip)
    size = _save_small(strip, target / "draw.png")
    assert size < 300_000, f"draw.png is {size} bytes"
    ARTIFACTS.append(f"picture draw.png: {target / 'draw.png'} ({size} bytes)")
