"""The panel's layout in the real page, per map source (headless Chromium).

Each map source shows its own controls only (the upload field for an uploaded map, the editor for
a drawn one, the fan's settings, the preprocessor's), the help lives in hover hints, and the
panel stays short: its height per source is measured at the page's own width (a 1280 px window).
Pasting a preprocessor run's parameters restores it completely and switches the panel on.

Tools as for test_browser.py (node, Debian chromium, npm playwright-core; missing -> skip).
"""
from pathlib import Path

import pytest

from lib_differential_diffusion.args import SETTINGS_BY_NAME
from webui.host import ARTIFACTS, MEASUREMENTS
from webui.test_browser import browser_tools, run_browser_script  # noqa: F401  (fixture)

pytestmark = [pytest.mark.webui, pytest.mark.browser]

HERE = Path(__file__).resolve().parent
LAYOUT_JS = HERE / "browser_layout.js"
# The last source is the one whose controls' hints are read (they are on screen then).
SOURCES = ("inpaint mask", "fan", "draw", "preprocessor", "map")
# Each source's own controls, by elem id (after the prefix); the others must not show with it.
OWN = {"map": "map", "fan": "fan_group", "draw": "draw_group", "preprocessor": "preprocessor_group"}
HINTED = ("invert", "gamma", "blur", "low", "high", "preserve", "smooth", "model_mask")
# At most this tall (px), at the page's 590 px: the map editor's canvas makes "draw" taller. Before
# the compact layout the panel was 1401 (inpaint mask, map), 1507 (preprocessor), 1700 (fan) and
# 2088 px (draw) tall here (A1111 v1.10.1).
MAX_HEIGHT = 700
MAX_DRAW_HEIGHT = 1100
PASTED = "a cat\nSteps: 6, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Denoising strength: 0.75, " \
         "Differential Diffusion: True, DD source: preprocessor, DD preprocessor: depth_midas, DD invert: True"


def test_each_source_shows_its_own_controls_in_a_short_panel(browser_tools, ui_server, tmp_path):  # noqa: F811
    res, stderr = run_browser_script(
        browser_tools, LAYOUT_JS, ui_server, tmp_path, timeout_s=330,
        sources=list(SOURCES), controls=list(OWN.values()), hinted=list(HINTED), pasteText=PASTED, timeoutMs=120_000, totalTimeoutMs=300_000,
    )
    assert res.get("ok"), f"browser run failed: {res.get('error')}\nsteps: {res.get('steps')}\nstderr: {stderr[-2000:]}"
    heights = {source: res["sources"][source]["height"] for source in SOURCES}
    width = res["sources"]["map"]["width"]
    MEASUREMENTS.append(f"panel height at {width} px wide: " + ", ".join(f"{source} {height} px" for source, height in heights.items()))
    for source, shot in res.get("screenshots", {}).items():
        ARTIFACTS.append(f"panel with source {source}: {shot}")
    for source in SOURCES:
        shown = res["sources"][source]["shown"]
        expected = {control: OWN.get(source) == control for control in OWN.values()}
        assert shown == expected, f"source {source!r}: controls shown {shown}, expected {expected}"
    for name in HINTED:
        assert res["hints"][name] == SETTINGS_BY_NAME[name].info, f"{name}: hover hint {res['hints'][name]!r}"
    # "Change the background": a depth preprocessor, inverted (the button shows where the host has one).
    schema_names = ui_server.get("/differential-diffusion/v1/schema").json()["properties"]["preprocessor"]["enum"]
    if any("depth" in name for name in schema_names):
        assert res["background"] is not None, "no 'Change the background' button on a host with depth preprocessors"
        assert res["background"]["source"] == "preprocessor" and res["background"]["invert"] is True, res["background"]
        assert "depth" in res["background"]["preprocessor"], res["background"]
        MEASUREMENTS.append(f"change the background: {res['background']}")
    else:
        assert res["background"] is None
    assert res["pasted"] == {"enabled": True, "source": "preprocessor", "preprocessor": "depth_midas", "invert": True, "groupShown": True}, res["pasted"]
    assert heights.pop("draw") <= MAX_DRAW_HEIGHT and max(heights.values()) <= MAX_HEIGHT, res["sources"]
    assert not res.get("pageErrors"), res["pageErrors"]
