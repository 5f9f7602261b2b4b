"""``modules/script_callbacks.py`` of A1111 v1.10.1: the callbacks the extension registers.

Same registration signatures (``callback, *, name=None``) and the host's
unique callback names (``<extension>/<file>/<category>[/name]``); the
``*_callback`` runners report a failing callback instead of raising, as the host does.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

from modules import errors


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: any
    name: str = "unnamed"


callback_map = dict(
    callbacks_app_started=[],
    callbacks_ui_settings=[],
    callbacks_before_ui=[],
    callbacks_script_unloaded=[],
)


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"

    # The host finds the extension that holds ``filename``; here: the folder above scripts/.
    extension_name = os.path.basename(os.path.dirname(os.path.dirname(filename))) or "base"
    callback_name = f"{extension_name}/{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f"/{name}"

    unique_callback_name = callback_name
    for index in range(1000):
        existing = any(x.name == unique_callback_name for x in callbacks)
        if not existing:
            break

        unique_callback_name = f"{callback_name}-{index+1}"

    callbacks.append(ScriptCallback(filename, fun, unique_callback_name))


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def _run(category, *args):
    for c in callback_map[f"callbacks_{category}"]:
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {c.name} for {category}", exc_info=True)


def app_started_callback(demo, app):
    _run("app_started", demo, app)


def ui_settings_callback():
    _run("ui_settings")


def before_ui_callback():
    _run("before_ui")


def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_before_ui(callback, *, name=None):
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def script_unloaded_callback():
    _run("script_unloaded")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def remove_current_script_callbacks():
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    for callback_list in callback_map.values():
        for callback_to_remove in [cb for cb in callback_list if cb.script == filename]:
            callback_list.remove(callback_to_remove)
