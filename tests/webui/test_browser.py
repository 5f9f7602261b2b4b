"""The extension's panel in the real WebUI page, seen by headless Chromium.

Needs: `node`, Debian's `chromium` (apt-get install -y chromium) and the npm package
`playwright-core` (tests/browser/install.sh puts it in tests/browser/node_modules, which is
gitignored). Missing pieces skip the test with a reason. Override with CHROMIUM_PATH and
PLAYWRIGHT_CORE_DIR (the package folder).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from webui.host import ARTIFACTS, EXTENSION_NAME, PROJECT_ROOT, SCRIPT_TITLE

pytestmark = [pytest.mark.webui, pytest.mark.browser]

HERE = Path(__file__).resolve().parent
CHECK_JS = HERE / "browser_check.js"
ID_PREFIX = "differential_diffusion"
# A console message or failed request that mentions one of these is the extension's.
EXTENSION_HINTS = (EXTENSION_NAME.lower(), "differential_diffusion", "differential diffusion",
                   "differential-diffusion", "lib_differential_diffusion")


def _node():
    return shutil.which("node")


def _chromium():
    for cand in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _playwright_core(node):
    env_dir = os.environ.get("PLAYWRIGHT_CORE_DIR")
    cands = [Path(env_dir)] if env_dir else []
    cands.append(PROJECT_ROOT / "tests" / "browser" / "node_modules" / "playwright-core")
    for c in cands:
        if (c / "package.json").is_file():
            return str(c)
    try:  # NODE_PATH / global install
        out = subprocess.run([node, "-e", "console.log(require.resolve('playwright-core'))"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return "playwright-core"
    except (OSError, subprocess.SubprocessError):
        pass
    return None


@pytest.fixture(scope="session")  # same scope as ui_server, listed first: skips before a server starts
def browser_tools():
    node = _node()
    if not node:
        pytest.skip("browser test: `node` not found")
    chromium = _chromium()
    if not chromium:
        pytest.skip("browser test: chromium not found (apt-get install -y chromium, or set CHROMIUM_PATH)")
    pwc = _playwright_core(node)
    if not pwc:
        pytest.skip("browser test: npm playwright-core not found (bash tests/browser/install.sh, "
                    "or set PLAYWRIGHT_CORE_DIR)")
    return node, chromium, pwc


def _mentions_extension(*texts):
    blob = " ".join(t or "" for t in texts).lower()
    return any(h in blob for h in EXTENSION_HINTS)



def run_browser_script(browser_tools, script: Path, server, tmp_path: Path, timeout_s: float, **options) -> tuple[dict, str]:
    """Run one of the browser scripts (browser_common.js's runAndReport) against ``server``'s page
    with ``options`` added to the common config; print what went wrong in the page; return its
    JSON result and stderr."""
    node, chromium, pwc = browser_tools
    cfg = {
        "url": server.url + "/",
        "chromium": chromium,
        "playwrightCore": pwc,
        "outDir": str(tmp_path / "screens"),
        "userDataDir": str(tmp_path / "chromium-profile"),
        **options,
    }
    try:
        proc = subprocess.run([node, str(script), json.dumps(cfg)], capture_output=True, text=True, timeout=timeout_s, cwd=str(HERE))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{script.name} timed out; stderr: {(e.stderr or '')[-2000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from {script.name} (rc {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    res = json.loads(lines[-1])
    for kind in ("consoleErrors", "pageErrors", "failedRequests", "blockedRequests"):
        if res.get(kind):
            print(f"{kind}: {json.dumps(res[kind], indent=1)[:3000]}")
    return res, proc.stderr


def test_img2img_panel_in_browser(browser_tools, ui_server, tmp_path):
    res, stderr = run_browser_script(browser_tools, CHECK_JS, ui_server, tmp_path, timeout_s=450,
                                     panelText=SCRIPT_TITLE, idPrefix=ID_PREFIX, timeoutMs=120_000, totalTimeoutMs=400_000)

    for name, p in res.get("screenshots", {}).items():
        print(f"screenshot {name}: {p}")
        ARTIFACTS.append(f"screenshot {name}: {p}")
    print("panel:", json.dumps(res.get("panel"), indent=1)[:1500])

    assert res.get("ok"), f"browser run failed: {res.get('error')}\nsteps: {res.get('steps')}\nstderr: {stderr[-2000:]}"
    panel = res.get("panel") or {}
    assert panel.get("foundById") or panel.get("foundByText"), f"no {SCRIPT_TITLE!r} panel in the img2img tab: {panel}"
    assert panel.get("inScriptContainer"), f"panel not inside #img2img_script_container: {panel}"
    assert panel.get("visible"), f"panel not visible: {panel}"
    assert SCRIPT_TITLE in (panel.get("text") or ""), panel
    assert res["screenshots"].get("img2img") and Path(res["screenshots"]["img2img"]).is_file()

    ext_console = [e for e in res.get("consoleErrors", []) if _mentions_extension(e.get("text"), e.get("url"))]
    ext_page = [e for e in res.get("pageErrors", []) if _mentions_extension(e.get("text"))]
    ext_requests = [r for r in res.get("failedRequests", []) if _mentions_extension(r.get("url"))]
    assert not ext_console, f"console errors from the extension: {ext_console}"
    assert not ext_page, f"page errors from the extension: {ext_page}"
    assert not ext_requests, f"failed requests for the extension's files: {ext_requests}"
    # the server's start-up log must not show the extension failing to load or build its UI
    log = ui_server.startup_log()
    bad = [l for l in log.splitlines() if ("Error" in l or "Traceback" in l) and _mentions_extension(l)]
    assert not bad, "extension errors in the server log:\n" + "\n".join(bad[:20])
