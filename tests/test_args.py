"""The settings table and the args model: validation once, from the table."""

from __future__ import annotations

import pytest

from lib_differential_diffusion.args import (
    API_KEYS,
    MAP_HASH_INFOTEXT_KEY,
    POSITIONAL_ORDER,
    SETTINGS,
    SETTINGS_BY_NAME,
    DifferentialDiffusionArgs,
    axis_value,
    missing_map_note,
    schema,
    values_from_infotext,
)
from lib_differential_diffusion.errors import DifferentialDiffusionError


def refused(field: str, make) -> str:
    with pytest.raises(DifferentialDiffusionError) as caught:
        make()
    assert caught.value.field == field, str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.minimum is not None], ids=lambda s: s.name)
def test_every_range_comes_from_the_table(setting):
    base = {"enabled": True, "source": "fan"}
    DifferentialDiffusionArgs(**base, **{setting.name: setting.minimum})
    DifferentialDiffusionArgs(**base, **{setting.name: setting.maximum})
    below = refused(setting.name, lambda: DifferentialDiffusionArgs(**base, **{setting.name: setting.minimum - 1}))
    assert f"between {setting.minimum:g} and {setting.maximum:g}" in below
    refused(setting.name, lambda: DifferentialDiffusionArgs(**base, **{setting.name: float("nan")}))
    refused(setting.name, lambda: DifferentialDiffusionArgs(**base, **{setting.name: True}))


@pytest.mark.parametrize("setting", [s for s in SETTINGS if isinstance(s.default, bool)], ids=lambda s: s.name)
def test_switches_take_booleans_only(setting):
    for bad in ("true", 1, None):
        refused(setting.name, lambda: DifferentialDiffusionArgs(**{setting.name: bad}))


def test_low_above_high_is_refused_and_ints_become_floats():
    assert "use invert" in refused("low", lambda: DifferentialDiffusionArgs(low=0.8, high=0.2))
    args = DifferentialDiffusionArgs(gamma=2, fan_count=5.0)
    assert type(args.gamma) is float and type(args.fan_count) is int
    refused("fan_count", lambda: DifferentialDiffusionArgs(fan_count=4.5))


def test_drawn_map_is_the_map_of_source_draw():
    drawn = DifferentialDiffusionArgs(enabled=True, source="draw", drawn_map="  data:image/png;base64,iVBOR  ")
    assert drawn.user_map() == "data:image/png;base64,iVBOR"
    assert "nothing drawn" in refused("drawn_map", lambda: DifferentialDiffusionArgs(enabled=True, source="draw"))
    # The panel may hold a drawing while another source is chosen: it is simply unused.
    assert DifferentialDiffusionArgs(enabled=True, source="fan", drawn_map="data:...").user_map() is None
    uploaded = DifferentialDiffusionArgs(enabled=True, map={"image": "abc", "mask": None})
    assert uploaded.user_map() == "abc"


def test_api_refuses_ui_only_fields_and_the_draw_source():
    assert set(POSITIONAL_ORDER) - set(API_KEYS) == {"map_folder", "drawn_map"}
    refused("map_folder", lambda: DifferentialDiffusionArgs.from_api({"source": "fan", "map_folder": "/tmp"}))
    refused("drawn_map", lambda: DifferentialDiffusionArgs.from_api({"source": "fan", "drawn_map": "x"}))
    assert "as \"map\"" in refused("source", lambda: DifferentialDiffusionArgs.from_api({"source": "draw"}))
    assert schema()["properties"]["source"]["enum"] == ["map", "inpaint mask", "fan", "preprocessor"]
    # Positional values from the API may not name a server folder.
    positional = DifferentialDiffusionArgs.from_ui(True, "x", "map", False, 1.0, 0.0, 0.0, 1.0, True, "/srv/maps")
    refused("map_folder", positional.refuse_server_paths)


def test_every_setting_the_user_sees_has_a_hint():
    for setting in SETTINGS:
        if setting.name not in ("enabled", "drawn_map"):
            assert setting.info, setting.name


def test_infotext_of_a_user_map_leaves_the_panel_off_with_a_note():
    for source, words in (("map", "upload the change map"), ("draw", "draw the map again")):
        args = DifferentialDiffusionArgs(enabled=True, source=source, map="x", drawn_map="y", gamma=2.0)
        params = {key: str(value) for key, value in args.infotext("0123456789").items()}
        values = values_from_infotext(params)
        assert values["enabled"] is False and values["gamma"] == 2.0 and values["source"] == source
        note = missing_map_note(params)
        assert words in note and "0123456789" in note
    fan = {key: str(value) for key, value in DifferentialDiffusionArgs(enabled=True, source="fan").infotext(None).items()}
    assert values_from_infotext(fan)["enabled"] is True and missing_map_note(fan) == ""
    assert missing_map_note({}) == "" and MAP_HASH_INFOTEXT_KEY not in fan


def test_infotext_values_out_of_range_are_ignored():
    values = values_from_infotext({"Differential Diffusion": "True", "DD source": "fan", "DD gamma": "-3", "DD blur": "abc", "DD low": "0.2"})
    assert "gamma" not in values and "blur" not in values and values["low"] == 0.2


def test_axis_values_name_the_setting():
    assert axis_value("invert", "True") is True and axis_value("enabled", " false ") is False
    assert axis_value("gamma", "0") == 0.0  # converted; the range is the run's (or confirm's) business
    with pytest.raises(ValueError, match="^Differential Diffusion: gamma: must be between 0.05 and 10"):
        axis_value("gamma", "0", check_range=True)
    with pytest.raises(ValueError, match="^Differential Diffusion: invert: expected True or False"):
        axis_value("invert", "maybe")
    with pytest.raises(ValueError, match="^Differential Diffusion: blur: must be a number"):
        axis_value("blur", "wide")
    assert SETTINGS_BY_NAME["blur"].label.startswith("Blur (Gaussian sigma")
