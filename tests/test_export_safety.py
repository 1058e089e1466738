"""The exporter loses no data and ships no secrets, and an exported package runs
nothing of the notebook at import: the output folder rules (marker, --force,
modes, --out naming a file), names that would shadow modules, secrets turned into
environment variables, and the check of what the exported module can call."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from agentlab.cli import main
from agentlab.export import ExportError, export_notebook

SAMPLE = Path(__file__).parent / "data" / "capitals_agent.ipynb"
SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e"

AGENT = """\
from agentlab.agents import ReActAgent
from agentlab.models import FunctionModel


def build_agent():
    return ReActAgent(FunctionModel(lambda messages, tools: "ok"), [], name="x", trace=False)
"""


def notebook(tmp_path: Path, *cells: str, parameters: str | None = None) -> Path:
    """A notebook with an optional parameters cell, then `cells` tagged ``export``."""
    nb = new_notebook()
    if parameters is not None:
        nb.cells.append(new_code_cell(parameters, id="params", metadata={"tags": ["parameters"]}))
    for i, source in enumerate(cells):
        nb.cells.append(new_code_cell(source, id=f"c{i}", metadata={"tags": ["export"]}))
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- the output folder ------------------------------------------------------------


def test_replaces_only_an_earlier_export_of_the_same_agent(tmp_path: Path) -> None:
    out = tmp_path / "exports"
    unrelated = out / "capitals"
    (unrelated / ".git").mkdir(parents=True)
    (unrelated / "notes.txt").write_text("mine")
    with pytest.raises(ExportError) as info:
        export_notebook(SAMPLE, name="capitals", out=out, validate=False)
    message = str(info.value)
    assert str(unrelated) in message and "--force" in message and "lose" in message
    assert (unrelated / "notes.txt").read_text() == "mine" and (unrelated / ".git").is_dir()

    first = export_notebook(SAMPLE, name="capitals", out=out, validate=False, force=True)
    assert not (first / "notes.txt").exists() and not (first / ".git").exists()
    assert json.loads((first / ".agentlab-export.json").read_text())["agent"] == "capitals"
    (first / "stale.txt").write_text("from the earlier export")
    again = export_notebook(SAMPLE, name="capitals", out=out, validate=False)
    assert not (again / "stale.txt").exists()  # an earlier export of capitals: replaced

    (first / ".agentlab-export.json").write_text('{"agent": "other"}')  # another agent's
    with pytest.raises(ExportError, match="not an export of 'capitals'"):
        export_notebook(SAMPLE, name="capitals", out=out, validate=False)


def test_output_has_the_umasks_modes(tmp_path: Path, umask_022: None) -> None:
    target = export_notebook(SAMPLE, name="capitals", out=tmp_path / "exports", validate=False)
    modes = {
        p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [target, *target.rglob("*")]
    }
    assert modes["exports/capitals"] == 0o755
    assert {m for p, m in modes.items() if Path(tmp_path, p).is_dir()} == {0o755}
    assert {m for p, m in modes.items() if Path(tmp_path, p).is_file()} == {0o644}
    assert sorted(p.name for p in target.parent.iterdir()) == ["capitals"]  # no temp left


def test_out_naming_a_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "exports"
    file.write_text("not a folder")
    with pytest.raises(ExportError, match=r"is a file, not a folder\. Pass a folder"):
        export_notebook(SAMPLE, name="capitals", out=file, validate=False)
    argv = ["agentlab", "export", str(SAMPLE), "--name", "capitals", "--out", str(file)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"agentlab: --out {file} cannot hold the export: {file} is a file")
    assert "Traceback" not in err
    assert file.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("os", "the standard library module 'os'"),
        ("json", "the standard library module 'json'"),
        ("agentlab", "the installed package 'agentlab'"),
        ("pytest", "the installed package 'pytest'"),
    ],
)
def test_names_that_shadow_modules_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(ExportError) as info:
        export_notebook(SAMPLE, name=name, out=tmp_path, validate=False)
    message = str(info.value)
    assert f"--name {name!r} would shadow {reason}" in message
    assert f"e.g. '{name}_agent'" in message
    assert not (tmp_path / name).exists()


# -- secrets ------------------------------------------------------------------------

USES_KEY = """\
from agentlab.agents import ReActAgent
from agentlab.models import FunctionModel


def build_agent():
    assert api_key.startswith("sk-"), "the key reached the agent"
    reply = lambda messages, tools: f"key of {len(api_key)} characters"
    return ReActAgent(FunctionModel(reply), [], name="keyed", trace=False)
"""


def _files_holding(root: Path, text: str) -> list[str]:
    return [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and text.encode() in p.read_bytes()
    ]


def test_a_secret_parameter_becomes_an_environment_variable(tmp_path: Path) -> None:
    params = f'model = "scripted"\napi_key = "{SECRET}"  # the team key\nretries = 2\n'
    path = notebook(tmp_path, USES_KEY, parameters=params)
    target = export_notebook(
        path, name="keyed", out=tmp_path / "out", validate=False,
        parameters={"db_password": "hunter2-but-longer"},
    )  # fmt: skip
    assert _files_holding(tmp_path / "out", SECRET) == []
    assert _files_holding(tmp_path / "out", "hunter2-but-longer") == []
    agent_py = (target / "keyed" / "agent.py").read_text()
    assert 'api_key = os.environ["KEYED_API_KEY"]  # the team key' in agent_py
    assert 'db_password = os.environ["KEYED_DB_PASSWORD"]' in agent_py
    assert "\nimport os\n" in agent_py and 'model = "scripted"' in agent_py
    config = json.loads((target / "keyed" / "config.json").read_text())
    assert config["parameters"] == {
        "api_key": "${KEYED_API_KEY}",
        "db_password": "${KEYED_DB_PASSWORD}",
        "model": "scripted",
        "retries": 2,
    }
    assert config["secrets"] == {"api_key": "KEYED_API_KEY", "db_password": "KEYED_DB_PASSWORD"}
    example = (target / ".env.example").read_text()
    assert "\nKEYED_API_KEY=\n" in example and "\nKEYED_DB_PASSWORD=\n" in example
    readme = (target / "README.md").read_text()
    assert "## Secrets" in readme and "`KEYED_API_KEY`: `api_key`" in readme

    # The package reads the key from the environment, and says so when it is unset.
    script = "from keyed import create_agent\nprint(create_agent().run_sync('hi').output)\n"
    env = {**os.environ, "PYTHONPATH": str(target), "AGENTLAB_WORKSPACE": str(tmp_path / "ws")}
    env.pop("KEYED_API_KEY", None)
    missing = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0
    assert "set KEYED_API_KEY, KEYED_DB_PASSWORD (see .env.example" in missing.stderr
    env |= {"KEYED_API_KEY": SECRET, "KEYED_DB_PASSWORD": "x"}
    ran = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"key of {len(SECRET)} characters"


def test_a_secret_literal_in_an_exported_cell_is_refused(tmp_path: Path) -> None:
    cell = AGENT + f'\nCLIENT_KEY = "{SECRET}"\n'
    with pytest.raises(ExportError) as info:
        export_notebook(notebook(tmp_path, cell), name="x", out=tmp_path / "out", validate=False)
    message = str(info.value)
    assert "cell 0 (id c0)" in message and "looks like a secret (line 8)" in message
    assert "parameters cell" in message and SECRET not in message
    assert not (tmp_path / "out").exists()


# -- what the exported module can call ---------------------------------------------


def test_importing_the_package_runs_no_cell(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    cell = f"import os\nos.system({f'touch {marker}'!r})\n\n{AGENT}"
    target = export_notebook(
        notebook(tmp_path, cell), name="sideeffect", out=tmp_path / "out", validate=False
    )
    assert marker.exists()  # the exporter builds the agent once, to lint its tools
    marker.unlink()
    env = {**os.environ, "PYTHONPATH": str(target), "AGENTLAB_WORKSPACE": str(tmp_path / "ws")}
    imported = subprocess.run(
        [sys.executable, "-c", "import sideeffect, sideeffect.app"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert not marker.exists()
    built = subprocess.run(
        [sys.executable, "-c", "from sideeffect.app import app; print(app.title)"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == "x agent" and marker.exists()  # the app builds the agent


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ip = get_ipython\n", "'get_ipython' (cell 1 (id c1): 'ip = get_ipython', line 1)"),
        ("def show(x):\n    display(x)\n", "'display' (cell 1 (id c1): 'def show(x):', line 2)"),
        ("class Config:\n    shell = In\n", "'In' (cell 1 (id c1): 'class Config:', line 2)"),
    ],
)
def test_names_nothing_defines_are_refused(tmp_path: Path, code: str, expected: str) -> None:
    path = notebook(tmp_path, AGENT, code)
    with pytest.raises(ExportError) as info:
        export_notebook(path, name="x", out=tmp_path / "out", validate=False)
    message = str(info.value)
    assert "use names that nothing in them defines, imports or Python provides" in message
    assert "exist only inside IPython/Jupyter" in message and expected in message


@pytest.mark.parametrize("call", ['exec("get_ipython()")', 'value = eval("1 + 1")'])
def test_code_run_from_strings_is_refused(tmp_path: Path, call: str) -> None:
    path = notebook(tmp_path, AGENT, f"x = 1\n{call}\n")
    with pytest.raises(ExportError) as info:
        export_notebook(path, name="x", out=tmp_path / "out", validate=False)
    message = str(info.value)
    assert "cell 1 (id c1): 'x = 1', line 2 calls" in message
    assert "code run from a string cannot be checked" in message


def test_names_from_scopes_imports_and_builtins_pass(tmp_path: Path) -> None:
    code = (
        "from os.path import *\n"
        "import json as js\n"
        "def helper(items):\n"
        "    global COUNT\n"
        "    COUNT = len([join('a', i) for i in items])\n"
        "    return js.dumps(COUNT), __name__\n"
        "try:\n"
        "    pass\n"
        "except ValueError as error:\n"
        "    print(error)\n"
        "def later():\n"
        "    return COUNT\n"
    )
    target = export_notebook(
        notebook(tmp_path, AGENT, code), name="x", out=tmp_path, validate=False
    )
    assert "from os.path import *" in (target / "x" / "agent.py").read_text()
