#!/usr/bin/env python3
"""Regenerate the README's pictures (docs/*.png) from a real AUTOMATIC1111 WebUI host.

Every picture in docs/ is a screenshot taken by the real-host browser tests
tests/webui/test_browser_panel.py and tests/webui/test_browser_draw.py: they start the WebUI
(with this checkout installed as an extension), drive the img2img tab in headless Chromium
and, with DD_UPDATE_DOCS=1, write what they saw to

    docs/panel.png    the panel with a radial change map and its preview
    docs/result.png   the result of that map in the gallery, with its infotext
    docs/preview.png  the preview of a 4-band strength fan (map over image, then the
                      regions released step by step)
    docs/fan.png      the fan's labelled copy in the gallery (seams, "#1".."#4" and strengths)
    docs/draw.png     the map editor step by step (radial gradient, two brush strokes, undo,
                      the raw gray map) and the result

This script runs exactly those tests with DD_UPDATE_DOCS=1 and then lists which pictures
changed (size and sha256 before and after). The test's own assertions still apply: a
failing run updates nothing. It also refuses (fails) when the server start decoded NaN
samples (black images, seen as numpy's "invalid value encountered in cast" in the server
log, warm-up included: a host/checkpoint hiccup, not the extension's); just run it again.

The pictures come from a tiny random test checkpoint (the harness's fixtures), so the
generated content is noise; only *where* change happens matters (black map / region #1
keeps the input exactly, white / the last region changes most).

Needs: SD_WEBUI_ROOT (or --webui-root) pointing at the WebUI folder (the one with
launch.py), plus the harness's fixtures and browser tools (see tests/webui/README.md;
`bash tests/browser/install.sh` installs Chromium and playwright-core). Standard library only.

usage: python3 tools/update_docs_pictures.py [--webui-root DIR] [--python EXE] [-- PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCS = PROJECT_ROOT / "docs"
TESTS = ("tests/webui/test_browser_panel.py", "tests/webui/test_browser_draw.py")
EXPECTED = ("panel.png", "result.png", "preview.png", "fan.png", "draw.png")


def snapshot() -> dict[str, tuple[int, str]]:
    """name -> (size, sha256) of every docs/*.png."""
    return {path.name: (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()) for path in sorted(DOCS.glob("*.png"))}


def test_outcomes(junit: Path) -> dict[str, str]:
    """test name -> passed / failed / error / skipped, from pytest's JUnit XML."""
    outcomes: dict[str, str] = {}
    if not junit.is_file():
        return outcomes
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (element.get("message") or "").strip().splitlines()
                if message:
                    outcome += f": {message[0][:300]}"
                break
        outcomes[case.get("name", "?")] = outcome
    return outcomes


def describe(entry: tuple[int, str] | None) -> str:
    return "(none)" if entry is None else f"{entry[0]:>8} B  sha256 {entry[1][:16]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Arguments after -- go to pytest.")
    parser.add_argument("--webui-root", help="the WebUI folder (has launch.py); default: $SD_WEBUI_ROOT")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest (default: this one)")
    parser.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    root = args.webui_root or os.environ.get("SD_WEBUI_ROOT", "")
    if not root:
        print(
            "update_docs_pictures: no WebUI host. The README's pictures are screenshots of a real "
            "AUTOMATIC1111 WebUI; set SD_WEBUI_ROOT=/path/to/stable-diffusion-webui or pass "
            "--webui-root (see tests/webui/README.md).",
            file=sys.stderr,
        )
        return 2
    root_path = Path(root).expanduser().resolve()
    if not (root_path / "launch.py").is_file():
        print(f"update_docs_pictures: {root_path} is not a WebUI folder (no launch.py).", file=sys.stderr)
        return 2

    before = snapshot()
    env = {**os.environ, "SD_WEBUI_ROOT": str(root_path), "DD_UPDATE_DOCS": "1"}
    with tempfile.TemporaryDirectory(prefix="dd-docs-") as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [args.python, "-m", "pytest", *TESTS, "-m", "webui", "-ra", "-s", f"--junitxml={junit}", *args.pytest_args]
        print("$ DD_UPDATE_DOCS=1 SD_WEBUI_ROOT=" + str(root_path) + " " + " ".join(command), flush=True)
        started = time.monotonic()
        rc = subprocess.call(command, cwd=str(PROJECT_ROOT), env=env)
        elapsed = time.monotonic() - started
        outcomes = test_outcomes(junit)
    after = snapshot()

    print(f"\nupdate_docs_pictures: pytest exit {rc} after {elapsed:.0f} s")
    for name, outcome in outcomes.items() or {"(no test ran)": ""}.items():
        print(f"  {name}: {outcome}")
    print("\ndocs/*.png (before -> after):")
    changed = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        state = "unchanged" if old == new else ("new" if old is None else ("removed" if new is None else "changed"))
        if state != "unchanged":
            changed.append(name)
        print(f"  {name:<12} {state:<9}  {describe(old)}  ->  {describe(new)}")
    missing = [name for name in EXPECTED if name not in after]
    if missing:
        print(f"  missing: {', '.join(missing)}")
    print(f"\n{len(changed)} picture(s) changed" + (f": {', '.join(changed)}" if changed else ""))

    passed = bool(outcomes) and all(outcome == "passed" for outcome in outcomes.values())
    if rc != 0:
        return rc
    if not passed:
        print("update_docs_pictures: a browser test did not pass (skipped?), so its pictures were not regenerated.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
