"""The extension's arguments: one settings table, one typed model, validated once.

``SETTINGS`` gives every field's label, hover hint, infotext key, UI element
id, default and range; the UI, the API, its schema, the infotext, the
Settings page and the X/Y/Z axes all read it, and ``DifferentialDiffusionArgs``
checks every value against it (nothing downstream checks again).
API form: ``{"enabled": true, "map": "<base64>", ...}`` (a dict means enabled
unless it says ``"enabled": false``); UI/positional form: the values in
``POSITIONAL_ORDER``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Sequence

from .errors import EXTENSION_NAME, DifferentialDiffusionError
from .fan import FAN_LAYOUTS, MAX_FAN_COUNT, MIN_FAN_COUNT
from .maps import MapOptions

ELEM_PREFIX = "differential_diffusion"
SOURCES = ("map", "inpaint mask", "fan", "draw", "preprocessor")


@dataclass(frozen=True)
class Setting:
    name: str
    label: str
    infotext_key: str | None  # None: not written to the infotext (the map's pixels, server paths)
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    info: str = ""  # hover hint / help text
    api: bool = True  # accepted in the API's dict form
    panel_default: bool = False  # its default can be set in Settings -> Differential Diffusion

    @property
    def elem_id(self) -> str:
        return f"{ELEM_PREFIX}_{self.name}"


# Written by the run itself, only where the model took an inpainting conditioning (whether the map drove it).
MODEL_MASK_INFOTEXT_KEY = "DD model mask"
# The host writes this one whenever the model took an inpainting mask.
HOST_MODEL_MASK_INFOTEXT_KEY = "Conditional mask weight"

SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", "Differential Diffusion", "Differential Diffusion", False),
    Setting(
        "map", "Change map (white = change, black = keep)", None, None,
        info="Grayscale: each pixel changes like img2img at (map value x denoising strength). "
        "It gets the same resize and crop as the init image.",
    ),
    Setting(
        "source", "Map source", "DD source", "map", choices=SOURCES,
        info="The uploaded map; the inpaint mask (after its blur) as change amounts; a strength fan "
        "(regions from strength at black to strength at white, side by side); a map drawn in the panel; "
        "or a preprocessor's output made from the init image.",
    ),
    Setting(
        "invert", "Invert map (white = keep)", "DD invert", False, panel_default=True,
        info="Flip the map first: white keeps the input, black changes fully (the paper's own maps are drawn this way).",
    ),
    Setting(
        "gamma", "Gamma", "DD gamma", 1.0, 0.05, 10.0, 0.05, panel_default=True,
        info="map ** gamma, after invert: above 1 weakens mid-grays, below 1 strengthens them.",
    ),
    Setting(
        "blur", "Blur (Gaussian sigma, px)", "DD blur", 0.0, 0.0, 256.0, 1.0, panel_default=True,
        info="Softens the map's edges: a Gaussian blur whose standard deviation is this many output pixels.",
    ),
    Setting(
        "low", "Strength at black (x denoising)", "DD low", 0.0, 0.0, 1.0, 0.01, panel_default=True,
        info="Fraction of the denoising strength slider that black gets (after invert): strength = low + (high - low) x map.",
    ),
    Setting(
        "high", "Strength at white (x denoising)", "DD high", 1.0, 0.0, 1.0, 0.01, panel_default=True,
        info="Fraction of the denoising strength slider that white gets (after invert): strength = low + (high - low) x map.",
    ),
    Setting(
        "preserve", "Preserve unchanged pixels", "DD preserve", True, panel_default=True,
        info="Where the strength is 0, output the input pixels exactly instead of a VAE round trip.",
    ),
    # UI only (img2img batch tab): a server-side folder, so the API refuses it.
    Setting(
        "map_folder", "Map folder (batch tab: one map per image, matched by file name)", None, "", api=False,
        info="A folder on the server: each batch input gets the map with its file name (any image extension).",
    ),
    # Source "fan": the map is drawn by the extension (see fan.py).
    Setting(
        "fan_count", "Fan regions", "DD fan count", 4, MIN_FAN_COUNT, MAX_FAN_COUNT, 1,
        info="Region #1 gets the strength at black, the last the strength at white, evenly spaced between.",
    ),
    Setting(
        "fan_layout", "Fan layout", "DD fan layout", FAN_LAYOUTS[0], choices=FAN_LAYOUTS,
        info="Vertical bands (left to right), horizontal bands (top to bottom) or radial sectors (clockwise from 12 o'clock).",
    ),
    # Source "draw": the panel's editor sends its drawing here (a PNG data URL); over the API it is a "map".
    Setting("drawn_map", "Drawn map", None, "", api=False),
    # Last: positional callers (UI values, API "args" lists) written before it keep their places.
    Setting(
        "smooth", "Smooth strengths between steps", "DD smooth", True, panel_default=True,
        info="A pixel whose strength falls between two sampling steps is released partly in the step between "
        "them, so a gradient changes gradually even at 4-8 steps. Off: every strength snaps to the step grid "
        "(the results of earlier versions, bit for bit).",
    ),
    Setting(
        "model_mask", "Map as an inpainting model's mask", MODEL_MASK_INFOTEXT_KEY, True, panel_default=True,
        info="Inpainting checkpoints (SD1/SD2 inpainting, SDXL inpainting) take a mask and the masked image: the map's "
        "strengths become that mask, so the model sees the kept pixels as context and fills what the map changes. "
        "Off: the host's own mask (in the img2img tab: all changing, no context).",
    ),
    # Source "preprocessor": one of the host's (ControlNet) preprocessors, run on each init image; the
    # names are the host's, so the adapter checks them (the API schema lists them).
    Setting(
        "preprocessor", "Preprocessor", "DD preprocessor", "",
        info="Made from the init image by this preprocessor (read as gray; white = change). Depth maps are bright "
        "near, so depth changes near things most: invert it to change the background and keep the subject.",
    ),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
POSITIONAL_ORDER = tuple(setting.name for setting in SETTINGS)
API_KEYS = tuple(setting.name for setting in SETTINGS if setting.api)
FAN_SETTING_NAMES = ("fan_count", "fan_layout")
PANEL_DEFAULT_NAMES = tuple(setting.name for setting in SETTINGS if setting.panel_default)
MAP_HASH_INFOTEXT_KEY = "DD map hash"
INFOTEXT_KEYS = frozenset([*(setting.infotext_key for setting in SETTINGS if setting.infotext_key), MAP_HASH_INFOTEXT_KEY])
# Sources whose pixels come from the user (never written to the infotext, only hashed).
USER_MAP_SOURCES = {"map": "map", "draw": "drawn_map"}


def is_empty_image(value: Any) -> bool:
    """No image given: None, an empty string, or a gradio editor dict without an image."""
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return len(value) == 0
    if isinstance(value, Mapping):
        return is_empty_image(value.get("image"))
    return False


def unwrap_image(value: Any) -> Any:
    """Gradio image editors hand over dicts; the map is their image."""
    return value.get("image") if isinstance(value, Mapping) else value


def _check(setting: Setting, value: Any) -> Any:
    """``value`` checked against its setting, normalised (numbers to float/int, paths stripped)."""
    name, default = setting.name, setting.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise DifferentialDiffusionError(name, f"must be true or false, got {value!r}")
        return value
    if setting.choices is not None:
        if not isinstance(value, str) or value not in setting.choices:
            raise DifferentialDiffusionError(name, f"must be one of {', '.join(repr(c) for c in setting.choices)}, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        # bool is an int in Python; a checkbox value here is a client bug.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DifferentialDiffusionError(name, f"must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise DifferentialDiffusionError(name, f"must be a finite number, got {value!r}")
        if not setting.minimum <= number <= setting.maximum:
            raise DifferentialDiffusionError(name, f"must be between {setting.minimum:g} and {setting.maximum:g}, got {number:g}")
        if isinstance(default, int):
            if not number.is_integer():
                raise DifferentialDiffusionError(name, f"must be a whole number, got {value!r}")
            return int(number)
        return number
    if isinstance(default, str):  # free text: folders, data URLs
        if value is None:
            return ""
        if not isinstance(value, str):
            raise DifferentialDiffusionError(name, f"must be text, got {type(value).__name__}")
        return value.strip()
    return value  # the map: decoded (and checked) by maps.decode_map


@dataclass(frozen=True)
class DifferentialDiffusionArgs:
    """Validated arguments of one generation (checked against ``SETTINGS`` on creation)."""

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
    drawn_map: str = ""
    smooth: bool = True
    model_mask: bool = True
    preprocessor: str = ""

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            object.__setattr__(self, setting.name, _check(setting, getattr(self, setting.name)))
        if self.low > self.high:
            raise DifferentialDiffusionError("low", f"must not exceed high ({self.low:g} > {self.high:g}); use invert to swap black and white")
        if not self.enabled:
            return
        if self.source == "map" and is_empty_image(self.map) and not self.map_folder:
            raise DifferentialDiffusionError("map", "no change map given (upload one, or choose map source 'inpaint mask', 'fan' or 'draw')")
        if self.source == "preprocessor" and not self.preprocessor:
            raise DifferentialDiffusionError("preprocessor", "no preprocessor chosen (map source 'preprocessor' makes the map with one)")
        if self.source == "draw" and not self.drawn_map:
            raise DifferentialDiffusionError("drawn_map", "nothing drawn: draw a map in the panel's editor, or choose another map source")

    @classmethod
    def from_api(cls, value: Mapping[str, Any]) -> DifferentialDiffusionArgs:
        """The API's dict form. Unknown and UI-only keys are refused, naming the key."""
        if not isinstance(value, Mapping):
            raise DifferentialDiffusionError("args", f"expected an object with keys {', '.join(API_KEYS)}, got {type(value).__name__}")
        unknown = sorted(str(key) for key in value if key not in API_KEYS)
        if unknown:
            raise DifferentialDiffusionError(unknown[0], f"unknown key (known: {', '.join(API_KEYS)})")
        if value.get("source") == "draw":
            raise DifferentialDiffusionError("source", "'draw' is the panel's editor; send the drawing as \"map\" with source 'map'")
        return cls(**{"enabled": True, **value})

    @classmethod
    def from_ui(cls, *values: Any) -> DifferentialDiffusionArgs:
        """The UI's positional values, in ``POSITIONAL_ORDER``."""
        if len(values) > len(POSITIONAL_ORDER):
            raise DifferentialDiffusionError("args", f"expected at most {len(POSITIONAL_ORDER)} values ({', '.join(POSITIONAL_ORDER)}), got {len(values)}")
        return cls(**dict(zip(POSITIONAL_ORDER, values)))

    @classmethod
    def from_script_args(cls, args: Sequence[Any]) -> DifferentialDiffusionArgs:
        """Whatever the WebUI hands the script: a dict first (API form) or positional values."""
        if len(args) >= 1 and isinstance(args[0], Mapping):
            # The API puts the dict where the first UI value goes; the WebUI fills
            # the other positions with the UI's defaults, which do not apply.
            return cls.from_api(args[0])
        if not args or args[0] is None:
            return cls()
        return cls.from_ui(*args)

    def refuse_server_paths(self) -> None:
        """API requests may not make the server read its files (positional ``map_folder``)."""
        if self.map_folder:
            raise DifferentialDiffusionError("map_folder", "is for the img2img batch tab only; the API cannot read folders on the server")

    def user_map(self) -> Any:
        """The image the user gave for sources "map" and "draw" (None for the others)."""
        name = USER_MAP_SOURCES.get(self.source)
        return None if name is None else unwrap_image(getattr(self, name))

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
            if setting.name == "preprocessor" and self.source != "preprocessor":
                continue
            if setting.infotext_key == MODEL_MASK_INFOTEXT_KEY:
                continue  # only for models that take a mask: the run writes it
            if setting.infotext_key is not None:
                result[setting.infotext_key] = getattr(self, setting.name)
        if map_hash:
            result[MAP_HASH_INFOTEXT_KEY] = map_hash
        return result


def values_from_infotext(params: Mapping[str, str]) -> dict[str, Any]:
    """UI values restored from pasted infotext; a missing key turns the panel off.

    A run whose map came from the user (uploaded or drawn) cannot be repeated
    from the infotext alone (it holds the map's hash, not its pixels): the
    settings are restored but the panel stays off, and ``missing_map_note``
    says what to do.
    """
    enabled = str(params.get("Differential Diffusion", "")).strip().lower() == "true"
    values: dict[str, Any] = {"enabled": enabled}
    if not enabled:
        return values
    for setting in SETTINGS:
        if setting.infotext_key is None or setting.name == "enabled" or setting.infotext_key not in params:
            continue
        raw = str(params[setting.infotext_key]).strip()
        try:
            if isinstance(setting.default, bool):
                value: Any = raw.lower() == "true"
            elif isinstance(setting.default, int):
                value = int(float(raw))
            elif isinstance(setting.default, float):
                value = float(raw)
            else:
                value = raw
            values[setting.name] = _check(setting, value)
        except (ValueError, DifferentialDiffusionError):
            continue  # a hand-edited or foreign value: keep the panel's own
    if SETTINGS_BY_NAME["smooth"].infotext_key not in params:
        values["smooth"] = False  # made before smooth release existed: every strength snapped to the step grid
    if MODEL_MASK_INFOTEXT_KEY not in params and HOST_MODEL_MASK_INFOTEXT_KEY in params:
        values["model_mask"] = False  # an inpainting model's run made before the map drove its mask: the host's own
    if values.get("source", SETTINGS_BY_NAME["source"].default) in USER_MAP_SOURCES:
        values["enabled"] = False
    return values


def missing_map_note(params: Mapping[str, str]) -> str:
    """What to tell the user after pasting an infotext whose map cannot be restored ("" if none)."""
    if str(params.get("Differential Diffusion", "")).strip().lower() != "true":
        return ""
    source = str(params.get(SETTINGS_BY_NAME["source"].infotext_key, SETTINGS_BY_NAME["source"].default)).strip()
    if source not in USER_MAP_SOURCES:
        return ""
    what = "upload the change map" if source == "map" else "draw the map again (or upload it)"
    map_hash = str(params.get(MAP_HASH_INFOTEXT_KEY, "")).strip()
    known = f" (its hash: {map_hash})" if map_hash else ""
    return (
        f"The pasted image was made with Differential Diffusion and a {'drawn' if source == 'draw' else 'uploaded'} map{known}. "
        f"Its settings are restored; {what} and tick the panel to repeat it."
    )


def schema(preprocessors: Sequence[str] = ()) -> dict[str, Any]:
    """JSON schema of the API's dict form; ``preprocessors``: the names this host has."""
    properties: dict[str, Any] = {}
    for setting in SETTINGS:
        if not setting.api:
            continue
        if setting.name == "map":
            entry: dict[str, Any] = {"type": "string", "description": "base64 PNG/JPEG/WEBP or a data URL; grayscale, white = change"}
        elif setting.name == "enabled":
            entry = {"type": "boolean", "default": True, "description": "a dict given means enabled unless this is false"}
        elif setting.name == "source":
            entry = {"type": "string", "enum": [choice for choice in SOURCES if choice != "draw"], "default": setting.default}
        elif setting.name == "preprocessor":
            entry = {"type": "string", "enum": list(preprocessors), "description": f"for source 'preprocessor'. {setting.info}"}
        elif isinstance(setting.default, bool):
            entry = {"type": "boolean", "default": setting.default}
        elif setting.choices is not None:
            entry = {"type": "string", "enum": list(setting.choices), "default": setting.default}
        elif isinstance(setting.default, int):
            entry = {"type": "integer", "default": setting.default, "minimum": int(setting.minimum), "maximum": int(setting.maximum)}
        else:
            entry = {"type": "number", "default": setting.default, "minimum": setting.minimum, "maximum": setting.maximum}
        entry["title"] = setting.label
        if setting.info and "description" not in entry:
            entry["description"] = setting.info
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


# --- X/Y/Z plot axes ---------------------------------------------------------------

XYZ_AXES = ("enabled", "invert", "gamma", "blur", "low", "high", "smooth", "model_mask", "preprocessor")
"""Settings the X/Y/Z plot can sweep (a fan is a sweep of its own)."""


def axis_label(name: str) -> str:
    return f"[{EXTENSION_NAME}] {name.replace('_', ' ').capitalize()}"


def axis_value(name: str, value: Any, *, check_range: bool = False) -> Any:
    """One X/Y/Z cell's value for setting ``name``: "True"/"False" for switches, a name for text, a number otherwise.

    Raises ValueError naming the setting (X/Y/Z shows it). The range is
    checked when asked (before the grid starts); a cell's run checks it anyway.
    """
    setting = SETTINGS_BY_NAME[name]
    try:
        if isinstance(setting.default, bool):
            text = str(value).strip().lower()
            if not isinstance(value, bool) and text not in ("true", "false"):
                raise DifferentialDiffusionError(name, f"expected True or False, got {value!r}")
            return value if isinstance(value, bool) else text == "true"
        if isinstance(setting.default, str):  # a name; the host knows which exist
            text = str(value).strip()
            if not text:
                raise DifferentialDiffusionError(name, "must not be empty")
            return text
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DifferentialDiffusionError(name, f"must be a number, got {value!r}") from None
        return _check(setting, number) if check_range else number
    except DifferentialDiffusionError as error:
        raise ValueError(str(error)) from None
