"""Host-free pieces the WebUI glue relies on: batch map files, the API request guard, the
step-skipping decision, and the stand-in's agreement with the table of host surfaces."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from lib_differential_diffusion.api_guard import ArgsShapeGuard, request_shape_error
from lib_differential_diffusion.args import POSITIONAL_ORDER
from lib_differential_diffusion.batch import is_batch_input, map_for_batch_image
from lib_differential_diffusion.errors import DifferentialDiffusionError
from lib_differential_diffusion.schedule import StepCounting, can_skip_steps, has_prompt_schedules

ROOT = Path(__file__).resolve().parents[1]


# --- batch tab ------------------------------------------------------------------------------


def test_batch_inputs_are_files_under_the_folder_or_uploaded(tmp_path):
    folder = tmp_path / "in"
    assert is_batch_input(folder / "sub" / "a.png", folder) and is_batch_input(str(folder / "a.png"), str(folder))
    assert not is_batch_input(tmp_path / "inside.png", folder)  # a sibling whose name starts like the folder
    assert not is_batch_input(tmp_path / "in-other" / "a.png", folder)
    uploads = [types.SimpleNamespace(name=str(tmp_path / "up.png"))]
    assert is_batch_input(tmp_path / "up.png", uploads) and not is_batch_input(tmp_path / "other.png", uploads)
    assert not is_batch_input(None, folder) and not is_batch_input(12, folder)


def test_map_files_match_by_stem_with_any_image_extension(tmp_path):
    Image.new("L", (4, 4), 255).save(tmp_path / "a.webp", lossless=True)
    (tmp_path / "a.txt").write_text("not a map")
    data = map_for_batch_image([None, str(tmp_path / "in" / "a.png")], str(tmp_path), fallback=None)
    assert data == (tmp_path / "a.webp").read_bytes()
    assert map_for_batch_image([str(tmp_path / "b.png")], str(tmp_path), fallback="uploaded") == "uploaded"
    assert map_for_batch_image([str(tmp_path / "b.png")], "", fallback="uploaded") == "uploaded"  # no folder: the upload
    with pytest.raises(DifferentialDiffusionError, match=r"map_folder: no map named b\.\*"):
        map_for_batch_image([str(tmp_path / "b.png")], str(tmp_path), fallback=None)
    with pytest.raises(DifferentialDiffusionError, match="map_folder: not a folder"):
        map_for_batch_image([str(tmp_path / "a.png")], str(tmp_path / "missing"), fallback=None)
    with pytest.raises(DifferentialDiffusionError, match="need the img2img batch tab"):
        map_for_batch_image([None], str(tmp_path), fallback="")


# --- API request guard ---------------------------------------------------------------------


def _body(entry) -> bytes:
    return json.dumps({"prompt": "x", "alwayson_scripts": {"Differential Diffusion": entry}}).encode()


def test_request_shapes_the_host_would_drop_are_named_args():
    assert request_shape_error(_body("yes")).field == "args"
    assert request_shape_error(json.dumps({"alwayson_scripts": {"differential diffusion": {"args": {"map": "x"}}}}).encode()).field == "args"
    assert request_shape_error(_body({"no_args": []})).field == "args"
    too_many = request_shape_error(_body({"args": [0] * (len(POSITIONAL_ORDER) + 1)}))
    assert f"at most {len(POSITIONAL_ORDER)} values" in str(too_many)
    assert request_shape_error(_body({"args": [{"map": "x"}]})) is None
    assert request_shape_error(b"not json") is None and request_shape_error(json.dumps({"alwayson_scripts": {"Other": 5}}).encode()) is None
    assert request_shape_error(json.dumps([1, 2]).encode()) is None


def test_guard_refuses_with_the_hosts_error_body_and_replays_good_bodies():
    received = []

    async def route_app(scope, receive, send):
        received.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = ArgsShapeGuard(route_app)

    def call(body: bytes, method: str = "POST") -> list:
        chunks, sent = [body[:7], body[7:]], []

        async def receive():
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message):
            sent.append(message)

        asyncio.run(guard({"type": "http", "method": method, "path": "/sdapi/v1/img2img", "headers": []}, receive, send))
        return sent

    good = _body({"args": [{"map": "x"}]})
    assert call(good)[0]["status"] == 200 and received == [good]
    refused = call(_body({"args": None}))
    body = json.loads(refused[1]["body"])
    assert refused[0]["status"] == 422 and body["error"] == "ArgumentsRefused" and body["detail"].startswith("Differential Diffusion: args:")
    assert received == [good]


# --- step skipping ------------------------------------------------------------------------


def test_steps_are_skipped_only_when_nothing_counts_them():
    assert can_skip_steps(StepCounting())
    for flag in StepCounting.__dataclass_fields__:
        assert not can_skip_steps(StepCounting(**{flag: True})), flag


def test_prompt_schedules_are_found_in_both_conditioning_shapes():
    scheduled = types.SimpleNamespace
    plain_uc = [[scheduled(end_at_step=20, cond=None)]]
    # uc: a list per image of ScheduledPromptConditioning; c: MulticondLearnedConditioning.batch
    assert not has_prompt_schedules([plain_uc])
    assert has_prompt_schedules([[[scheduled(end_at_step=5), scheduled(end_at_step=20)]]])
    multicond = types.SimpleNamespace(batch=[[scheduled(schedules=[1]), scheduled(schedules=[1])]])
    assert not has_prompt_schedules([multicond])
    assert has_prompt_schedules([types.SimpleNamespace(batch=[[scheduled(schedules=[1, 2])]])])
    assert not has_prompt_schedules([None, None])


# --- the table of host surfaces, against the stand-in ----------------------------------------


def test_the_standin_has_every_importable_surface_the_table_lists(monkeypatch):
    """The same check the real-host drift test makes, run on tests/standin: the stand-in may not
    lack (or mis-sign) anything the glue uses on real hosts."""
    standin = ROOT / "tests" / "standin"
    extra = [str(standin)]
    if importlib.util.find_spec("cv2") is None:
        extra.append(str(standin / "cv2_fallback"))
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] in ("modules", "gradio", "cv2", "differential_diffusion_webui")}
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(extra[0])
    for path in extra[1:]:
        monkeypatch.syspath_prepend(path)
    try:
        from differential_diffusion_webui import surfaces

        problems = surfaces.check_static(xyz_module=types.SimpleNamespace(AxisOptionImg2Img=lambda label, type, apply, **_: None, axis_options=[]))
        assert problems == {}
        assert len(surfaces.P_ATTRIBUTES) > 20 and "img2img_image" in surfaces.ELEM_IDS
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] in ("modules", "gradio", "cv2", "differential_diffusion_webui")]:
            del sys.modules[name]
        sys.modules.update(saved)
