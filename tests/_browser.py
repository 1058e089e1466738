"""The browser-test harness: a real JupyterLab (its own config, workspace and token)
and Debian Chromium driven by playwright, with helpers to run a notebook cell,
switch to the dark theme and keep screenshots. Test modules import the fixtures:
``from _browser import lab, page`` (and the helpers they use).

Needs ``/usr/bin/chromium`` (Debian's ``chromium``, which ``make install`` installs
through ``tools/ensure-browser`` when run as root) and the ``playwright`` Python
package (never ``playwright install``). A module importing this is skipped only where
Chromium cannot be installed (not root, or no apt-get); where it can, a missing
browser fails the test with the fix.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
def chromium_installed() -> None:
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path, source: str) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source)],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        },
    )
    nb.cells[0]["id"] = path.stem
    nbformat.write(nb, path)


@dataclass
class Lab:
    """A running JupyterLab: ``notebook(name, source)`` writes a one-cell notebook
    into its root and returns the URL that opens it."""

    base: str
    token: str
    root: Path

    def notebook(self, name: str, source: str) -> str:
        _write_notebook(self.root / name, source)
        return f"{self.base}/lab/tree/{name}?token={self.token}"


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a token and isolated config (and workspace)."""
    root = tmp_path / "root"
    root.mkdir()
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
        yield Lab(base, token, root)
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


def run_first_cell(page: sync_api.Page) -> None:
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


def open_and_run(page: sync_api.Page, url: str) -> None:
    """Open the notebook, wait for its kernel, run its cell."""
    expect = sync_api.expect
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=60_000)
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    expect(idle.first).to_be_attached(timeout=60_000)
    run_first_cell(page)


def switch_to_dark(page: sync_api.Page) -> None:
    """Settings → Theme → JupyterLab Dark, through the menus."""

    def item(menu: str, label: str) -> sync_api.Locator:
        return page.locator(menu).filter(has_text=re.compile(f"^{re.escape(label)}$"))

    item(".lm-MenuBar-itemLabel", "Settings").click()
    item(".lm-Menu-itemLabel", "Theme").click()
    item(".lm-Menu-itemLabel", "JupyterLab Dark").click()
    sync_api.expect(page.locator("body[data-jp-theme-light='false']")).to_be_attached()
    page.wait_for_timeout(500)  # the theme's stylesheet settles


def luminance(css_colour: str) -> float:
    """Relative luminance (0 black .. 1 white) of an ``rgb(a)(...)`` colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css_colour)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def keep(path: Path) -> None:
    """Copy a screenshot into ``$AGENTLAB_SHOTS_DIR`` too, when it is set (to look at
    after the run: tmp_path is buried)."""
    shots = os.environ.get("AGENTLAB_SHOTS_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(shots) / path.name)


def shooter(directory: Path) -> Callable[[sync_api.Locator, str], None]:
    """A ``shoot(locator, name)`` that screenshots `locator` into `directory`/NAME.png
    (scrolled into view first) and keeps a copy (:func:`keep`)."""

    def shoot(locator: sync_api.Locator, name: str) -> None:
        path = directory / f"{name}.png"
        locator.scroll_into_view_if_needed()
        locator.screenshot(path=str(path))
        print(f"screenshot: {path}")
        keep(path)

    return shoot
