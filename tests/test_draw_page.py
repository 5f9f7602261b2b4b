"""The map editor in Chromium on a stand-in page (tests/browser/draw_page_check.js; no WebUI):
pen pressure, touch, eraser, shift-constrained gradient, the buttons and 35-step undo/redo,
Escape, whose keys are whose, "Edit uploaded map", "Download PNG", a new init image size and
back, Generate held until the map is current, "nothing drawn", and the encoders without Worker,
without CompressionStream and past the 16-bit size limit. What the page sends is decoded by the
server's own map decoder.

Needs node, Debian's chromium and npm playwright-core (bash tests/browser/install.sh); skipped
with a reason otherwise. The real page: tests/webui/test_browser_draw.py.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lib_differential_diffusion.maps import decode_map
from webui.test_browser import browser_tools  # noqa: F401  (fixture: node, chromium, playwright-core or skip)

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
CHECK_JS = ROOT / "tests" / "browser" / "draw_page_check.js"
MAX_VALUE = 65535


def _decoded(url: str, shape: tuple[int, int]) -> np.ndarray:
    """A sent map as 16-bit values, through the server's decoder."""
    values = decode_map(url) * MAX_VALUE
    assert values.shape == shape, values.shape
    return values


@pytest.fixture(scope="module")
def page_checks(browser_tools, tmp_path_factory):  # noqa: F811
    node, chromium, playwright_core = browser_tools
    out_dir = tmp_path_factory.mktemp("draw-page")
    config = {"chromium": chromium, "playwrightCore": playwright_core, "outDir": str(out_dir), "totalTimeoutMs": 240_000}
    proc = subprocess.run([node, str(CHECK_JS), json.dumps(config)], capture_output=True, text=True, timeout=300, cwd=CHECK_JS.parent)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from {CHECK_JS.name} (rc {proc.returncode}): {proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{CHECK_JS.name} failed: {result['error']}\n{proc.stderr[-2000:]}"
    assert not result["pageErrors"] and not result["consoleErrors"], (result["pageErrors"], result["consoleErrors"])
    return result["checks"]


def test_pen_pressure_touch_and_eraser(page_checks):
    assert abs(page_checks["pressure"]["pen"] - 0.3 * MAX_VALUE) <= 0.01 * MAX_VALUE, page_checks["pressure"]
    assert page_checks["pressure"]["touch"] == MAX_VALUE, "touch reports no real pressure: full amount"
    assert page_checks["eraser"] == {"erased": 0, "beside": MAX_VALUE}


def test_shift_constrains_the_gradient(page_checks):
    g = page_checks["gradientShift"]
    entry = g["entry"]
    assert entry["y1"] == entry["y0"] == 100 and math.isclose(entry["x1"] - entry["x0"], math.hypot(100, 30)), entry
    assert (g["left"], g["right"]) == (0, MAX_VALUE)
    assert abs(g["middle"] - MAX_VALUE * (72.5 - 20) / math.hypot(100, 30)) <= 1, g


def test_buttons_escape_and_35_undo_steps(page_checks):
    b = page_checks["buttons"]
    assert (b["fill"], b["inverted"], b["cleared"]) == (round(0.4 * MAX_VALUE), MAX_VALUE - round(0.4 * MAX_VALUE), 0)
    assert b["restored"], "three undos after fill, invert, clear did not restore the map"
    assert b["escaped"] == {"depth": b["escaped"]["depthBefore"], "depthBefore": b["escaped"]["depthBefore"], "same": True}, b["escaped"]
    assert b["undoneOk"] and b["redoneOk"], "35 undo / redo steps did not restore every state"
    assert b["undoDisabledAtEnd"], "Redo stays enabled with nothing to redo"


def test_keys_are_the_editors_only_when_focus_or_pointer_is_in_it(page_checks):
    keys = page_checks["keys"]
    assert keys["elsewhere"]["size"] == keys["elsewhere"]["size0"] and keys["elsewhere"]["depth"] == keys["elsewhere"]["depth0"], keys
    focused = keys["focused"]
    assert focused["grown"] > focused["size0"] and focused["shrunk"] == focused["size0"], focused
    assert (focused["afterUndo"], focused["afterRedo"]) == (focused["depth0"] - 1, focused["depth0"]), focused
    assert focused["tool"] == "radial"


def test_edit_uploaded_map(page_checks):
    loaded = page_checks["loadUploaded"]
    assert loaded["monotone"] and loaded["rowsEqual"], loaded
    assert loaded["first"] < 0.02 * MAX_VALUE and loaded["last"] > 0.98 * MAX_VALUE and abs(loaded["middle"] - MAX_VALUE / 2) < 0.02 * MAX_VALUE, loaded
    assert "60×40" in loaded["note"] and "300×200" in loaded["note"], loaded["note"]


def test_download_is_the_map_at_16_bits(page_checks):
    download = page_checks["download"]
    assert download["suggested"] == "change-map.png"
    width, height = download["size"]
    values = np.asarray(download["values"], dtype=np.float64).reshape(height, width)
    np.testing.assert_allclose(_decoded(Path(download["file"]).read_bytes(), (height, width)), values, atol=1e-3)


def test_new_init_size_stretches_and_back_restores(page_checks):
    init = page_checks["initSize"]
    assert init["stretched"]["size"] == [150, 100] and "stretched from 300×200 to 150×100" in init["stretched"]["note"], init["stretched"]
    assert init["back"]["same"] and init["back"]["depth"] == init["depthBefore"] and init["back"]["note"] == "", init["back"]
    assert "stretched from 150×100 to 300×200" in init["restretched"], "an edit at the new size makes that the drawing"


def test_generate_waits_for_the_current_map(page_checks):
    g = page_checks["generate"]
    assert g["heldAtClick"] and g["current"], g
    assert g["notHeld"], "Generate was held although the map source is not 'draw'"
    values = np.asarray(g["values"], dtype=np.float64).reshape(200, 300)
    # The map sent was the one drawn before the second stroke (with source "map"): compare where that stroke did not reach.
    sent = _decoded(g["sent"], (200, 300))
    np.testing.assert_allclose(sent[:80], values[:80], atol=1e-3)


def test_nothing_drawn_sends_nothing(page_checks):
    nothing = page_checks["nothingDrawn"]
    assert nothing["initially"] == "" and nothing["drawn"] == "data:image/png;base64," and nothing["afterUndo"] == "", nothing
    assert "nothing drawn" in nothing["status"]


@pytest.mark.parametrize(("variant", "bit_depth", "worker"), [("noWorker", 16, False), ("noCompressionStream", 8, False)])
def test_encoders_without_worker_or_compression_stream(page_checks, variant, bit_depth, worker):
    check = page_checks[variant]
    assert check["encode"]["bitDepth"] == bit_depth and check["encode"]["worker"] is worker, check["encode"]
    values = np.asarray(check["values"], dtype=np.float64).reshape(70, 90)
    tolerance = 1e-3 if bit_depth == 16 else 257 / 2 + 1e-3
    np.testing.assert_allclose(_decoded(check["url"], (70, 90)), values, atol=tolerance)


def test_too_large_for_16_bits_falls_back_to_8(page_checks):
    large = page_checks["tooLargeFor16Bit"]
    assert large["encode"]["bitDepth"] == 8 and large["encode"]["worker"] is True, large
    assert large["urlLength"] <= 8 * 1024 * 1024, large
