"""The one error type the extension raises for bad input."""

from __future__ import annotations

EXTENSION_NAME = "Differential Diffusion"


class DifferentialDiffusionError(ValueError):
    """Bad input, named by the field it came from.

    ``str(error)`` is the message shown to users and API clients, e.g.
    ``Differential Diffusion: map: not a valid image``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{EXTENSION_NAME}: {field}: {message}")
