"""``modules/errors.py`` (v1.10.1): ``report`` prints and moves on; here it also records, for tests."""

from __future__ import annotations

import sys
import traceback

reported: list[tuple[str, BaseException | None]] = []


def report(message: str, *, exc_info: bool = False) -> None:
    error = sys.exc_info()[1] if exc_info else None
    reported.append((message, error))
    print("***", message, file=sys.stderr)
    if exc_info:
        traceback.print_exc()
