"""The extension's arguments: one typed model, one settings table.

``SETTINGS`` gives every field's label, infotext key, UI element id, default
and range, so the UI, the API, the infotext and the X/Y/Z axes agree.
API form: ``{"enabled": true, "map": "<base64>", ...}`` (a dict means enabled
unless it says ``"enabled": false``); UI/positional form: the values in
``POSITIONAL_ORDER``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Sequence

from .errors import DifferentialDiffusionError
from .fan import FAN_LAYOUTS, MAX_FAN_COUNT, MIN_FAN_COUNT
from .maps import MapOptions

ELEM_PREFIX = "differential_diffusion"
SOURCES = ("map", "inpaint mask", "fan")


@dataclass(frozen=True)
class Setting:
    name: str
    label: str
    infotext_key: str | None  # None: not written to the infotext (the map's pixels)
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def elem_id(self) -> str:
        return f"{ELEM_PREFIX}_{self.name}"


SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", "Differential Diffusion", "Differential Diffusion", False),
    Setting("map", "Change map (white = change, black = keep)", None, None),
    Setting("source", "Map source", "DD source", "map", choices=SOURCES),
    Setting("invert", "Invert map (white = keep)", "DD invert", False),
    Setting("gamma", "Gamma", "DD gamma", 1.0, 0.05, 10.0, 0.05),
    Setting("blur", "Blur radius (px)", "DD blur", 0.0, 0.0, 256.0, 1.0),
    Setting("low", "Strength at black", "DD low", 0.0, 0.0, 1.0, 0.01),
    Setting("high", "Strength at white", "DD high", 1.0, 0.0, 1.0, 0.01),
    Setting("preserve", "Preserve unchanged pixels", "DD preserve", True),
    # UI only (img2img batch tab): a server-side folder, so the API refuses it.
    Setting("map_folder", "Map folder (batch tab: one map per image, matched by file name)", None, ""),
    # Source "fan": the map is drawn by the extension (see fan.py).
    Setting("fan_count", "Fan regions", "DD fan count", 4, MIN_FAN_COUNT, MAX_FAN_COUNT, 1),
    Setting("fan_layout", "Fan layout", "DD fan layout", FAN_LAYOUTS[0], choices=FAN_LAYOUTS),
)
FAN_SETTING_NAMES = ("fan_count", "fan_layout")
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
POSITIONAL_ORDER = tuple(setting.name for setting in SETTINGS)
API_KEYS = tuple(name for name in POSITIONAL_ORDER if name != "map_folder")
MAP_HASH_INFOTEXT_KEY = "DD map hash"


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise DifferentialDiffusionError(name, f"must be true or false, got {value!r}")


def _number(name: str, value: Any) -> float:
    # bool is an int in Python; a checkbox value here is a client bug.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DifferentialDiffusionError(name, f"must be a number, got {value!r}")
    number = float(value)
    setting = SETTINGS_BY_NAME[name]
    if not math.isfinite(number):
        raise DifferentialDiffusionError(name, f"must be a finite number, got {value!r}")
    if setting.minimum is not None and number < setting.minimum or setting.maximum is not None and number > setting.maximum:
        raise DifferentialDiffusionError(name, f"must be between {setting.minimum:g} and {setting.maximum:g}, got {number:g}")
    return number


def _whole_number(name: str, value: Any) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise DifferentialDiffusionError(name, f"must be a whole number, got {value!r}")
    return int(number)


def _choice(name: str, value: Any) -> str:
    choices = SETTINGS_BY_NAME[name].choices or ()
    if not isinstance(value, str) or value not in choices:
        raise DifferentialDiffusionError(name, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class DifferentialDiffusionArgs:
    """Validated arguments of one generation."""

    enabled: bool = False
    map: Any = None  # PIL image, numpy array, or base64 / data URL string: decoded by maps.decode_map
    source: str = "map"
    invert: bool = False
    gamma: float = 1.0
    blur: float = 0.0
    low: float = 0.0
    high: float = 1.0
    preserve: bool = True
    map_folder: str = ""
    fan_count: int = 4
    fan_layout: str = FAN_LAYOUTS[0]

    def __post_init__(self) -> None:
        for name in ("enabled", "invert", "preserve"):
            _boolean(name, getattr(self, name))
        for name in ("gamma", "blur", "low", "high"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        _choice("source", self.source)
        object.__setattr__(self, "fan_count", _whole_number("fan_count", self.fan_count))
        _choice("fan_layout", self.fan_layout)
        if self.low > self.high:
            raise DifferentialDiffusionError("low", f"must not exceed high ({self.low:g} > {self.high:g}); use invert to swap black and white")
        if self.map_folder is None:
            object.__setattr__(self, "map_folder", "")
        if not isinstance(self.map_folder, str):
            raise DifferentialDiffusionError("map_folder", f"must be a folder path, got {self.map_folder!r}")
        object.__setattr__(self, "map_folder", self.map_folder.strip())
        if self.enabled and self.source == "map" and _is_empty(self.map) and not self.map_folder:
            raise DifferentialDiffusionError("map", "no change map given (upload one, or choose map source 'inpaint mask' or 'fan')")

    @classmethod
    def from_api(cls, value: Mapping[str, Any]) -> DifferentialDiffusionArgs:
        """The API's dict form. Unknown keys are refused, naming the key."""
        if not isinstance(value, Mapping):
            raise DifferentialDiffusionError("args", f"expected an object with keys {', '.join(API_KEYS)}, got {type(value).__name__}")
        unknown = sorted(str(key) for key in value if key not in API_KEYS)
        if unknown:
            raise DifferentialDiffusionError(unknown[0], f"unknown key (known: {', '.join(API_KEYS)})")
        return cls(**{"enabled": True, **value})

    @classmethod
    def from_ui(cls, *values: Any) -> DifferentialDiffusionArgs:
        """The UI's positional values, in ``POSITIONAL_ORDER``."""
        if len(values) > len(POSITIONAL_ORDER):
            raise DifferentialDiffusionError("args", f"expected at most {len(POSITIONAL_ORDER)} values ({', '.join(POSITIONAL_ORDER)}), got {len(values)}")
        return cls(**dict(zip(POSITIONAL_ORDER, values)))

    @classmethod
    def from_script_args(cls, args: Sequence[Any]) -> DifferentialDiffusionArgs:
        """Whatever A1111 hands the script: a dict first (API form) or positional values."""
        if len(args) >= 1 and isinstance(args[0], Mapping):
            # The API puts the dict where the first UI value goes; A1111 fills
            # the other positions with the UI's defaults, which do not apply.
            return cls.from_api(args[0])
        if not args or args[0] is None:
            return cls()
        return cls.from_ui(*args)

    def map_options(self) -> MapOptions:
        """The options that turn the aligned map into strengths."""
        return MapOptions(invert=self.invert, gamma=self.gamma, blur=self.blur, low=self.low, high=self.high)

    def with_overrides(self, **overrides: Any) -> DifferentialDiffusionArgs:
        """A copy with some fields replaced (X/Y/Z axes), validated again."""
        return replace(self, **overrides)

    def infotext(self, map_hash: str | None) -> dict[str, Any]:
        """PNG-info fields of an enabled run: settings, and a short hash instead of the map's pixels."""
        result: dict[str, Any] = {}
        for setting in SETTINGS:
            if setting.name in FAN_SETTING_NAMES and self.source != "fan":
                continue  # fan options only matter, and are only written, for a fan
            if setting.infotext_key is not None:
                result[setting.infotext_key] = getattr(self, setting.name)
        if map_hash:
            result[MAP_HASH_INFOTEXT_KEY] = map_hash
        return result


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return len(value) == 0
    if isinstance(value, Mapping):  # gradio ImageEditor-style dict
        return _is_empty(value.get("image"))
    return False


def values_from_infotext(params: Mapping[str, str]) -> dict[str, Any]:
    """UI values restored from pasted infotext; a missing key turns the panel off."""
    enabled = str(params.get("Differential Diffusion", "")).strip().lower() == "true"
    values: dict[str, Any] = {"enabled": enabled}
    if not enabled:
        return values
    for setting in SETTINGS:
        if setting.infotext_key is None or setting.name == "enabled" or setting.infotext_key not in params:
            continue
        raw = str(params[setting.infotext_key]).strip()
        if isinstance(setting.default, bool):
            values[setting.name] = raw.lower() == "true"
        elif isinstance(setting.default, int):
            try:
                values[setting.name] = int(float(raw))
            except ValueError:
                continue
        elif isinstance(setting.default, float):
            try:
                values[setting.name] = float(raw)
            except ValueError:
                continue
        else:
            values[setting.name] = raw
    return values


def schema() -> dict[str, Any]:
    """JSON schema of the API's dict form."""
    properties: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name not in API_KEYS:
            continue
        if setting.name == "map":
            entry: dict[str, Any] = {"type": "string", "description": "base64 PNG/JPEG/WEBP or a data URL; grayscale, white = change"}
        elif setting.name == "enabled":
            entry = {"type": "boolean", "default": True, "description": "a dict given means enabled unless this is false"}
        elif isinstance(setting.default, bool):
            entry = {"type": "boolean", "default": setting.default}
        elif isinstance(setting.default, int):
            entry = {"type": "integer", "default": setting.default, "minimum": int(setting.minimum), "maximum": int(setting.maximum)}
        elif isinstance(setting.default, float):
            entry = {"type": "number", "default": setting.default, "minimum": setting.minimum, "maximum": setting.maximum}
        else:
            entry = {"type": "string", "enum": list(setting.choices or ()), "default": setting.default}
        entry["title"] = setting.label
        properties[setting.name] = entry
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Differential Diffusion",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


FIELD_NAMES = tuple(field.name for field in fields(DifferentialDiffusionArgs))
assert FIELD_NAMES == POSITIONAL_ORDER, "the settings table and the args model must list the same fields in the same order"
