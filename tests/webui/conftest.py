"""pytest wiring for the real-host tests (see tests/webui/README.md).

* Every test under tests/webui gets the ``webui`` marker (test_browser*.py also ``browser``).
* Without a usable host (SD_WEBUI_ROOT unset/invalid, see host.find_host) they are all
  skipped with a one-line reason.
* Server fixtures (``sd1_server``, ``sdxl_server``, ``ui_server``) are session-scoped and start
  lazily; by default only one server is alive at a time (SD_WEBUI_MAX_SERVERS): asking for
  another stops the previous one, and an autouse fixture restarts a stopped one that a test
  asks for. Tests are reordered (stably) to group those using the same server, so each one
  normally starts once per session. All are stopped (process group) at session end.
* A failing test's report gets the last lines of the server log(s) it used.
* Hosts differ (host.PROFILES): a test marked ``@pytest.mark.needs("graded"|"sdxl"|"sd3")``, or
  using ``sdxl_server``/``sd3_server``, is skipped where the host cannot do that, with a one-line
  reason naming the host and the cause.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from webui import host as _host
from webui.host import FLUX, SD1, SD1_EDIT, SD1_INPAINT, SD3, SDXL, SDXL_INPAINT, UI, ServerManager

HERE = Path(__file__).resolve().parent

SERVER_FIXTURES = {"sd1_server": SD1, "sdxl_server": SDXL, "sd3_server": SD3, "flux_server": FLUX, "ui_server": UI, "sd1_inpaint_server": SD1_INPAINT,
                   "sdxl_inpaint_server": SDXL_INPAINT, "sd1_edit_server": SD1_EDIT}
_SERVER_ORDER = list(SERVER_FIXTURES)
# A server fixture implies a capability of the host (host.CAPABILITIES).
FIXTURE_NEEDS = {"sdxl_server": "sdxl", "sd3_server": "sd3", "flux_server": "flux",
                "sdxl_inpaint_server": "sdxl_inpainting", "sd1_edit_server": "instruct_pix2pix"}

_HOST, _SKIP_REASON = _host.find_host()
_MANAGER: ServerManager | None = None


def _in_here(item) -> bool:
    try:
        return Path(str(item.path)).resolve().is_relative_to(HERE)
    except (AttributeError, ValueError):
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    mine = [i for i, it in enumerate(items) if _in_here(it)]
    for i in mine:
        it = items[i]
        it.add_marker(pytest.mark.webui)
        if Path(str(it.path)).name.startswith("test_browser"):
            it.add_marker(pytest.mark.browser)
        if _HOST is None:
            it.add_marker(pytest.mark.skip(reason=_SKIP_REASON))
            continue
        needs = [c for m in it.iter_markers("needs") for c in m.args]
        needs += [c for name, c in FIXTURE_NEEDS.items() if name in getattr(it, "fixturenames", ())]
        for capability in needs:
            if capability not in _host.CAPABILITIES:
                raise pytest.UsageError(f"{it.nodeid}: unknown capability {capability!r} (host.CAPABILITIES)")
            reason = _HOST.profile.cannot(capability)
            if reason:
                it.add_marker(pytest.mark.skip(reason=reason))
                break

    # Group tests by the server they use (in-place, stable; other tests keep their slots).
    def key(it):
        used = [n for n in _SERVER_ORDER if n in getattr(it, "fixturenames", ())]
        return _SERVER_ORDER.index(used[0]) + 1 if used else 0

    ordered = sorted((items[i] for i in mine), key=key)
    for slot, it in zip(mine, ordered):
        items[slot] = it


def pytest_report_header(config):
    if _HOST is None:
        return f"webui: {_SKIP_REASON}"
    return f"webui: {_HOST.profile.title} host {_HOST.root} (python {_HOST.python}), fixtures {_HOST.fixtures}"


@pytest.fixture(scope="session")
def webui_host():
    if _HOST is None:
        pytest.skip(_SKIP_REASON)
    return _HOST


@pytest.fixture(scope="session")
def webui_servers(webui_host, tmp_path_factory):
    """The ServerManager. Use ``webui_servers.acquire(ServerSpec(...))`` for a custom server."""
    global _MANAGER
    mgr = ServerManager(webui_host, tmp_path_factory.mktemp("webui"))
    _MANAGER = mgr
    try:
        yield mgr
    finally:
        mgr.stop_all()


def _server_fixture(name: str, what: str):
    """A session fixture ``name`` handing out the warmed-up server of SERVER_FIXTURES[name]."""
    spec = SERVER_FIXTURES[name]

    def server(webui_servers):
        return webui_servers.acquire(spec)

    server.__doc__ = f"{'Full gradio UI + API' if spec.ui else 'API-only (--nowebui) WebUI'} with {what}, warmed up."
    return pytest.fixture(scope="session", name=name)(server)


sd1_server = _server_fixture("sd1_server", "sd1_graded (or the host's SD1.5 stand-in)")
sdxl_server = _server_fixture("sdxl_server", "sdxl_base_graded (sdxl_refiner_graded in the same ckpt dir), and one full "
                                             "base+refiner run (refiner_switch_at 0.5)")
sd3_server = _server_fixture("sd3_server", "a generated SD3 checkpoint (flow matching; T5 off)")
flux_server = _server_fixture("flux_server", "a generated Flux.1-dev checkpoint (small transformer, full-size text encoders)")
sd1_inpaint_server = _server_fixture("sd1_inpaint_server", "a 9-channel inpainting SD1 made from sd1_graded at test time")
sdxl_inpaint_server = _server_fixture("sdxl_inpaint_server", "a 9-channel SDXL inpainting checkpoint made from sdxl_base_graded at test time")
sd1_edit_server = _server_fixture("sd1_edit_server", "an 8-channel instruct-pix2pix SD1 made from sd1_graded at test time")
ui_server = _server_fixture("ui_server", "sd1_graded (or the host's SD1.5 stand-in)")


@pytest.fixture(autouse=True)
def _webui_servers_alive(request):
    """Restart, before each test, any server fixture it uses that was stopped meanwhile to
    make room for another one (the session fixture keeps handing out the same object)."""
    names = [n for n in _SERVER_ORDER if n in request.fixturenames]
    if names and _MANAGER is not None:
        _MANAGER.ensure([SERVER_FIXTURES[n] for n in names])
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _MANAGER is not None:
        _MANAGER.touched = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or _MANAGER is None or not _in_here(item):
        return
    servers = list(_MANAGER.touched)
    for name in _SERVER_ORDER:
        srv = _MANAGER.servers.get(SERVER_FIXTURES[name].key)
        if name in item.fixturenames and srv is not None and srv not in servers:
            servers.append(srv)
    for srv in servers:
        report.sections.append((
            f"webui server log {srv.spec.key} ({srv.log_path}), last {_host.LOG_TAIL_LINES} lines",
            srv.log_tail(_host.LOG_TAIL_LINES)))


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if _host.ARTIFACTS:
        tr.section("webui artifacts")
        for a in _host.ARTIFACTS:
            tr.write_line(a)
    if _host.MEASUREMENTS:
        tr.section("webui measurements")
        for m in _host.MEASUREMENTS:
            tr.write_line(m)
    if _MANAGER is None or not _MANAGER.starts:
        return
    tr.section("webui servers")
    for s in _MANAGER.starts:
        srv = _MANAGER.servers.get(s["key"])
        tr.write_line(f"{s['key']}: {'ok' if s['ok'] else 'FAILED'}; API after {s['ready_s'] or 0:.1f}s, "
                      f"warmed up after {s['warm_s'] or 0:.1f}s (total {s['total_s']:.1f}s); "
                      + (f"{s['nan_restarts']} start(s) with NaN samples thrown away; " if s.get("nan_restarts") else "") +
                      f"log {srv.log_path if srv else '?'}")
    alive = [srv for srv in _MANAGER.servers.values() if srv.alive]
    if alive:
        tr.write_line(f"still alive (stopping at exit): {alive}")
