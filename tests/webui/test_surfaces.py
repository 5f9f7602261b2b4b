"""Drift test: every host surface the extension uses (differential_diffusion_webui/surfaces.py)
exists on this host tree with the parameters the glue passes.

Run on every host tree the harness is given (SD_WEBUI_ROOT). The same table is checked against
the project's stand-in in CI (tests/test_core_glue_logic.py), so stand-in and hosts cannot
drift apart without a test failing. Importable surfaces are checked inside the server process
(test route); attributes of ``p`` during a real generation; element ids when the UI is built.
"""
from __future__ import annotations

import pytest

from differential_diffusion_webui.surfaces import ELEM_IDS, P_ATTRIBUTES, SURFACES
from webui.host import MEASUREMENTS, make_init_image, make_map_image
from webui.test_extension import assert_ok, dd, last_run
from webui.host import post_img2img

pytestmark = pytest.mark.webui

ROUTE = "/differential-diffusion/v1/test/surfaces"


def surfaces_report(server) -> dict:
    r = server.get(ROUTE)
    assert r.status_code == 200, f"{ROUTE} answered {r.status_code}"
    return r.json()


def test_importable_surfaces_exist_with_their_parameters(sd1_server):
    report = surfaces_report(sd1_server)
    assert report["surfaces"] == len(SURFACES), "the server runs another version of the table"
    assert report["static_problems"] == {}, report["static_problems"]
    MEASUREMENTS.append(f"surfaces: {len(SURFACES)} listed; importable ones all present on {sd1_server.host.root}")


def test_p_attributes_exist_during_a_generation(sd1_server):
    """An inpaint "only masked" run, so the crop attributes exist too."""
    mask = make_map_image(64, 64, kind="halves")
    assert_ok(post_img2img(sd1_server, init_image=make_init_image(64, 64), mask=mask, inpaint_full_res=True, mask_blur=0,
                           alwayson_scripts=dd(make_map_image(kind="ramp"))))
    missing = last_run(sd1_server)["p_attributes_missing"]
    assert missing == [], f"attributes of p the glue reads or writes, missing on this host: {missing} (of {len(P_ATTRIBUTES)})"


def test_ui_element_ids_exist(ui_server):
    report = surfaces_report(ui_server)
    assert report["elem_ids_missing"] == [], f"img2img elements the Preview reads, missing: {report['elem_ids_missing']} (of {ELEM_IDS})"
    assert report["static_problems"] == {}, report["static_problems"]
