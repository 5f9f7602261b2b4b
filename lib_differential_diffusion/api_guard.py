"""Refuses malformed "Differential Diffusion" entries of an API request before the host parses it.

The WebUI would answer such requests or drop the entry before the script
runs: a 500 for "args" that is not a list, silence for a missing "args" or a
non-dict entry, extra positional values cut off. ``ArgsShapeGuard`` wraps one
route's ASGI app: it refuses with 422 and the WebUI's own error body, else
replays the body to the route unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from .args import POSITIONAL_ORDER
from .errors import EXTENSION_NAME, DifferentialDiffusionError

GUARDED_API_PATHS = ("/sdapi/v1/img2img", "/sdapi/v1/txt2img")


def request_shape_error(body: bytes) -> DifferentialDiffusionError | None:
    """What is wrong with the request's entry for this extension (None: nothing, or not ours to judge)."""
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        return None  # not JSON: the WebUI answers that itself
    entries = payload.get("alwayson_scripts") if isinstance(payload, dict) else None
    if not isinstance(entries, dict):
        return None
    for name, entry in entries.items():
        if str(name).lower() != EXTENSION_NAME.lower():
            continue
        if not isinstance(entry, dict) or "args" not in entry:
            return DifferentialDiffusionError("args", 'expected {"args": [{...}]} under "Differential Diffusion"')
        if not isinstance(entry["args"], list):
            return DifferentialDiffusionError("args", f"must be a list, got {type(entry['args']).__name__}")
        if len(entry["args"]) > len(POSITIONAL_ORDER):
            return DifferentialDiffusionError("args", f"expected at most {len(POSITIONAL_ORDER)} values ({', '.join(POSITIONAL_ORDER)}), got {len(entry['args'])}")
    return None


class ArgsShapeGuard:
    """ASGI wrapper of one API route: refuses a malformed entry with 422, else replays the body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message.get("type") != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        error = request_shape_error(body)
        if error is not None:
            # The WebUI's own error body (api.py handle_exception), so clients parse it alike.
            content = json.dumps({"error": "ArgumentsRefused", "detail": str(error), "body": "", "errors": str(error)}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
            await send({"type": "http.response.start", "status": 422, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
