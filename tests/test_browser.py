"""The run inspector in a real browser: JupyterLab + Debian Chromium via playwright.

Needs ``/usr/bin/chromium`` (Debian's ``chromium``, which ``make install`` installs
through ``tools/ensure-browser`` when run as root) and the ``playwright`` Python
package (never ``playwright install``). Skipped only where Chromium cannot be
installed (not root, or no apt-get); where it can, a missing browser fails the test
with the fix.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
_CAN_INSTALL_CHROMIUM = os.geteuid() == 0 and shutil.which("apt-get") is not None
if not CHROMIUM.exists() and not _CAN_INSTALL_CHROMIUM:
    pytest.skip(
        "/usr/bin/chromium is missing and cannot be installed here (not root): "
        "sudo apt-get install -y chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("jupyterlab")


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    """Root with apt-get can have Chromium: its absence is a set-up error, not a skip."""
    if not CHROMIUM.exists():
        pytest.fail(
            "/usr/bin/chromium is missing; install it with `sh tools/ensure-browser` "
            "(run by `make install`), i.e. apt-get install -y chromium",
            pytrace=False,
        )


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
NOTEBOOK = "inspector.ipynb"
CELL = """\
from agentlab.demo import build_support_agent
from agentlab.ui import RunInspector

agent = build_support_agent("scripted:schema", trace=True)
run = agent.start("What is the status of order O-1003?")
run.step_sync()
inspector = RunInspector(live_run=run)
inspector"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(CELL)],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        },
    )
    nb.cells[0]["id"] = "inspector"
    nbformat.write(nb, path)


@pytest.fixture
def lab(tmp_path) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 with a token and isolated config; yields the notebook URL."""
    root = tmp_path / "root"
    root.mkdir()
    _write_notebook(root / NOTEBOOK)
    env = dict(os.environ)
    for var, name in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ]:
        env[var] = str(tmp_path / name)
    labconfig = tmp_path / "config" / "labconfig"  # no "get notified about news?" popup
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env["AGENTLAB_WORKSPACE"] = str(root / "ws")
    token = secrets.token_hex(16)
    port = _free_port()
    log = (tmp_path / "jupyter.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    text = (tmp_path / "jupyter.log").read_text(errors="replace")[-3000:]
                    pytest.fail(f"JupyterLab did not start within 60 s:\n{text}")
                time.sleep(0.2)
        yield f"{base}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        _stop(server)
        log.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its kernels (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            if sig == signal.SIGTERM:  # kernels may outlive the server by a moment
                time.sleep(0.5)
                os.killpg(process.pid, signal.SIGKILL)
            return
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


@pytest.fixture
def page(tmp_path) -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 2400})
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def _run_first_cell(page: sync_api.Page) -> None:
    """Ctrl+Enter in the first cell, retried: a fresh server sometimes drops it."""
    prompt = page.locator(".jp-Cell").first.locator(".jp-InputPrompt")
    accept = page.locator(".jp-Dialog .jp-mod-accept")  # e.g. "Select Kernel" on a slow start
    for _ in range(5):
        if accept.count():
            accept.first.click()
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Control+Enter")
        try:
            sync_api.expect(prompt).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=8_000)
            return
        except AssertionError:
            continue
    raise AssertionError("the cell never started executing after 5 Ctrl+Enter")


@pytest.mark.timeout(180)
def test_inspector_renders_and_next_step_advances_the_run(lab, page, tmp_path):
    expect = sync_api.expect
    shot = tmp_path / "inspector.png"
    try:
        page.goto(lab, wait_until="domcontentloaded")
        expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=60_000)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        expect(idle.first).to_be_attached(timeout=60_000)
        _run_first_cell(page)

        inspector = page.locator(".agentlab-inspector")
        expect(inspector).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Loading widget...")).to_have_count(0)
        rows = inspector.locator("table.agentlab-steps tbody tr")
        expect(rows.first).to_be_visible()
        expect(rows).to_have_count(2)  # step 1: a model call and its tool call
        before = inspector.locator("table.agentlab-steps").inner_text()
        expect(inspector.locator(".widget-image, img").first).to_be_visible()  # the chart

        button = inspector.get_by_role("button", name="Next step")
        expect(button).to_be_enabled()
        button.click()
        expect(rows).to_have_count(4)  # step 2: another model call and tool call
        after = inspector.locator("table.agentlab-steps").inner_text()
        assert after != before
        assert "list_orders" not in before and "get_order" in after

        for rows_after in (6, 7):  # step 3: the last tool; step 4: the answer
            expect(button).to_be_enabled()
            button.click()
            expect(rows).to_have_count(rows_after)
        expect(button).to_be_disabled()
        expect(inspector).to_contain_text("completed")
        inspector.screenshot(path=str(shot))
        print(f"screenshot (success): {shot}")
    except BaseException:
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot (failure): {shot}")
        finally:
            raise
