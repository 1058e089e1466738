"""The exporter: cell selection and refusals, validation gate, byte-identical
re-export and the served agent app. The end to end (a fresh venv installing the
export offline from its wheelhouse) is in test_export_wheelhouse.py; the output
folder, name, secret and import-side-effect rules in test_export_safety.py."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest
from _http import serve_in_thread
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from typer.testing import CliRunner

from agentlab.agents import ReActAgent
from agentlab.cli import app
from agentlab.export import ExportError, GateResult, export_notebook, read_export_cells
from agentlab.export.validation import run_eval_notebook
from agentlab.models import FunctionModel
from agentlab.serve.agent_app import create_agent_app

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "capitals_agent.ipynb"
EVAL = DATA / "eval_capitals.ipynb"
CASES = DATA / "capitals.jsonl"
EVAL_PARAMS = {"agent_notebook": str(SAMPLE), "dataset": str(CASES)}

FACTORY = "def build_agent():\n    return None\n"


def passing(eval_notebook: Path, parameters: Any, output_path: Path) -> GateResult:
    """A validator that passes without running anything (for tests about files)."""
    return GateResult(passed=True, parameters={"dataset": str(CASES)})


def notebook(tmp_path: Path, *sources: str, tag: bool = True) -> Path:
    """A notebook whose code cells are `sources`, tagged ``export`` when `tag`."""
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# test")]
    for i, source in enumerate(sources):
        cell = new_code_cell(source)
        cell.id = f"c{i}"
        if tag:
            cell.metadata["tags"] = ["export"]
        nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- cells ------------------------------------------------------------------------


def test_selects_tagged_and_directive_cells() -> None:
    cells = read_export_cells(SAMPLE)
    assert [c.index for c in cells.cells] == [2, 3]  # tag, then '#| export' first line
    assert cells.parameters is not None and cells.parameters.index == 1
    assert "#| export" not in cells.cells[1].source
    assert cells.cells[1].source.lstrip().startswith("def scripted_reply")


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("!pip install requests", "a shell escape (!pip install requests)"),
        ("%time build()", "an IPython line magic (%time build())"),
        ("%%bash\necho hi", "an IPython cell magic (%%bash)"),  # first line: see below
        ("files = !ls", "a shell escape (!ls)"),
        ("len?", "IPython help syntax"),
        ("get_ipython().system('ls')", "a shell escape (!ls)"),
    ],
)
def test_refuses_ipython_syntax_naming_the_cell(tmp_path: Path, source: str, what: str) -> None:
    cell_magic = source.startswith("%%")  # only a first line can be a cell magic
    path = notebook(tmp_path, FACTORY, source if cell_magic else "x = 1\n" + source)
    with pytest.raises(ExportError) as info:
        read_export_cells(path)
    message = str(info.value)
    first = "%%bash" if cell_magic else "x = 1"
    assert f"cell 2 (id c1): {first!r}" in message
    assert what in message
    assert "plain Python" in message


def test_refuses_syntax_errors_and_top_level_await(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"cell 1 \(id c0\).*not valid Python \(line 1"):
        read_export_cells(notebook(tmp_path, "def f(:\n  pass"))
    with pytest.raises(ExportError, match=r"cell 1 .*top-level 'await'"):
        read_export_cells(notebook(tmp_path, "await something()"))


def test_untagged_magics_are_ignored_and_no_export_cells_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no cells to export: tag the cells"):
        read_export_cells(notebook(tmp_path, "%time 1", tag=False))


# -- export refusals --------------------------------------------------------------


def test_missing_factory_is_refused(tmp_path: Path) -> None:
    path = notebook(tmp_path, "x = 1\n", "def helper():\n    agent = 1\n")
    with pytest.raises(ExportError, match=r"define `def build_agent\(\) -> Agent:`"):
        export_notebook(path, name="x", out=tmp_path / "out", validate=False)
    assert not (tmp_path / "out" / "x").exists()


def test_module_level_agent_is_a_factory(tmp_path: Path) -> None:
    path = notebook(tmp_path, "agent = object()\n")
    out = export_notebook(path, name="objagent", out=tmp_path / "out", validate=False)
    init = (out / "objagent" / "__init__.py").read_text()
    assert "return module.agent\n" in init
    assert json.loads((out / "objagent" / "export.json").read_text())["validation"] == {
        "skipped": True
    }


def test_bad_package_name(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"must be a Python package name.*'my_agent'"):
        export_notebook(SAMPLE, name="my-agent", out=tmp_path, validate=False)


def test_validation_needs_an_eval_notebook(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError, match="pass eval_notebook=PATH"):
        export_notebook(SAMPLE, name="capitals", out=tmp_path / "out")


# -- files --------------------------------------------------------------------------


def test_reexport_is_byte_identical_and_atomic(tmp_path: Path) -> None:
    out = tmp_path / "exports"
    kwargs: dict[str, Any] = dict(name="capitals", out=out, eval_notebook=EVAL, validator=passing)
    first = export_notebook(SAMPLE, **kwargs)
    before = hashes(first)
    assert set(before) == {
        ".agentlab-export.json",
        "README.md",
        "pyproject.toml",
        "capitals/__init__.py",
        "capitals/agent.py",
        "capitals/app.py",
        "capitals/config.json",
        "capitals/export.json",
        "tests/cases.jsonl",
        "tests/test_agent.py",
    }
    (first / "stale.txt").write_text("from an older export")
    second = export_notebook(SAMPLE, **kwargs)
    assert second == first
    assert hashes(second) == before  # stale file gone, every byte the same
    assert sorted(p.name for p in out.iterdir()) == ["capitals"]  # no temp dirs left
    agent_py = (first / "capitals" / "agent.py").read_text()
    assert (
        "# Parameters from " in agent_py and "capitals_agent.ipynb, cell 1 (id params)" in agent_py
    )
    assert "capitals_agent.ipynb, cell 3 (id factory)\ndef scripted_reply" in agent_py
    config = json.loads((first / "capitals" / "config.json").read_text())
    assert config == {
        "factory": "build_agent",
        "name": "capitals",
        "parameters": {"model": "scripted"},
    }


def test_parameters_override_the_notebook(tmp_path: Path) -> None:
    out = export_notebook(
        SAMPLE, name="capitals", out=tmp_path, validate=False, parameters={"model": "local:smollm2"}
    )
    agent_py = (out / "capitals" / "agent.py").read_text()
    assert "# Export parameters (override the notebook's)\nmodel = 'local:smollm2'\n" in agent_py
    assert json.loads((out / "capitals" / "config.json").read_text())["parameters"] == {
        "model": "local:smollm2"
    }


# -- validation gate (real papermill) --------------------------------------------


def test_failing_gate_refuses_and_override_is_recorded(tmp_path: Path, workspace: Path) -> None:
    calls: list[GateResult] = []

    def once(eval_notebook: Path, parameters: Any, output_path: Path) -> GateResult:
        if not calls:  # one real execution, reused for the override
            calls.append(run_eval_notebook(eval_notebook, parameters, output_path))
        return calls[0]

    out = tmp_path / "exports"
    params = {**EVAL_PARAMS, "gates": {"avg_steps": "<=1"}}  # each case takes 2 steps
    kwargs: dict[str, Any] = dict(
        name="capitals", out=out, eval_notebook=EVAL, eval_parameters=params, validator=once
    )
    with pytest.raises(ExportError) as info:
        export_notebook(SAMPLE, **kwargs)
    message = str(info.value)
    assert "Not exported" in message and "avg_steps" in message
    assert "--allow-failing-gates" in message
    assert not (out / "capitals").exists()
    assert calls[0].executed_path is not None and calls[0].executed_path.is_file()

    target = export_notebook(SAMPLE, allow_failing_gates=True, **kwargs)
    record = json.loads((target / "capitals" / "export.json").read_text())["validation"]
    assert record["override"] is True and record["passed"] is False
    assert len(record["gate_failures"]) == 1 and "avg_steps" in record["gate_failures"][0]
    assert record["metrics"]["avg_steps"] == 2.0
    assert record["metrics"]["task_completion_rate"] == 1.0
    assert not any("latency" in k for k in record["metrics"])
    assert record["parameters"]["gates"] == {"avg_steps": "<=1"}
    tests = (target / "tests" / "test_agent.py").read_text()
    assert 'GATES: dict[str, str] = {"avg_steps": "<=1"}' in tests


# -- lint gate --------------------------------------------------------------------

POOR_TOOLS = '''
from agentlab.agents import ReActAgent
from agentlab.models import FunctionModel
from agentlab.tools import tool


@tool
def get_data(x: str) -> str:
    """Does stuff.

    Args:
        x: The thing.
    """
    return x


def build_agent():
    model = FunctionModel(lambda messages, tools: "ok")
    return ReActAgent(model, [get_data], name="poor", trace=False)
'''


def test_lint_errors_refuse_the_export_unless_overridden(tmp_path: Path) -> None:
    path, out = notebook(tmp_path, POOR_TOOLS), tmp_path / "out"
    with pytest.raises(ExportError) as info:
        export_notebook(path, name="poor", out=out, validate=False)
    message = str(info.value)
    assert message.startswith("Not exported: the tools of agent 'poor' from ")
    assert "\n- error: get_data: The name 'get_data' is made of generic words only" in message
    assert "\n- error: get_data: The description 'Does stuff.' says nothing" in message
    assert "Fix: Rename it after the action" in message
    assert "allow_lint_errors=True (CLI: --allow-lint-errors)" in message
    assert "warning" not in message  # only the errors block an export
    assert not (out / "poor").exists()

    target = export_notebook(path, name="poor", out=out, validate=False, allow_lint_errors=True)
    record = json.loads((target / "poor" / "export.json").read_text())["lint"]
    assert record["override"] is True and record["passed"] is False
    assert [e["rule"] for e in record["errors"]] == ["generic_name", "vague_description"]
    assert record["counts"] == {"error": 2, "warning": 1, "info": 0}


def test_a_clean_export_records_its_lint(tmp_path: Path) -> None:
    target = export_notebook(SAMPLE, name="capitals", out=tmp_path, validate=False)
    record = json.loads((target / "capitals" / "export.json").read_text())["lint"]
    assert record == {
        "passed": True,
        "override": False,
        "counts": {"error": 0, "warning": 0, "info": 1},
        "errors": [],
    }


def test_an_agent_that_cannot_be_built_cannot_be_linted(tmp_path: Path) -> None:
    path = notebook(tmp_path, "def build_agent():\n    raise KeyError('OPENAI_API_KEY')\n")
    with pytest.raises(ExportError) as info:
        export_notebook(path, name="keyless", out=tmp_path / "out", validate=False)
    message = str(info.value)
    assert message.startswith("Not exported: Building the agent (build_agent()) from the ")
    assert "failed (KeyError: 'OPENAI_API_KEY'), so its tools cannot be linted" in message
    assert "--allow-lint-errors" in message
    target = export_notebook(
        path, name="keyless", out=tmp_path / "out", validate=False, allow_lint_errors=True
    )
    record = json.loads((target / "keyless" / "export.json").read_text())["lint"]
    assert record["override"] is True and "KeyError: 'OPENAI_API_KEY'" in record["error"]


def test_cli_export_refuses_lint_errors_before_the_eval(tmp_path: Path) -> None:
    path = notebook(tmp_path, POOR_TOOLS)
    command = ["export", str(path), "--name", "poor", "--out", str(tmp_path / "out")]
    command += ["--eval-notebook", str(tmp_path / "no_eval.ipynb")]
    refused = CliRunner().invoke(app, command)
    assert isinstance(refused.exception, ExportError)
    assert "lint errors" in str(refused.exception)
    overridden = CliRunner().invoke(app, [*command, "--allow-lint-errors"])
    assert isinstance(overridden.exception, ExportError)  # the next gate: no eval notebook
    assert "No eval notebook at" in str(overridden.exception)


# -- the HTTP app -----------------------------------------------------------------


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def _capitals_agent(tmp_path: Path):
    """The sample notebook's agent, built from its exported cells."""
    namespace: dict[str, Any] = {"model": "scripted"}
    for cell in read_export_cells(SAMPLE).cells:
        exec(compile(cell.source, str(SAMPLE), "exec"), namespace)
    return namespace["build_agent"]()


def test_agent_app_runs_validates_and_reports_failures(tmp_path: Path) -> None:
    app = create_agent_app(lambda: _capitals_agent(tmp_path))
    with serve_in_thread(app) as base:
        root = base.removesuffix("/v1")
        assert _get(f"{root}/healthz") == (
            200,
            {"status": "ok", "agent": "capitals", "model": "scripted:capitals"},
        )
        status, body = _post(f"{base}/runs", b'{"input": "What is the capital of Kenya?"}')
        assert status == 200
        assert body["status"] == "completed" and body["output"] == "The capital is Nairobi."
        assert body["steps"] == 2 and body["tools_called"] == ["capital"]
        assert body["usage"]["requests"] == 2 and body["usage"]["total_tokens"] > 0
        assert body["cost"] == 0.0 and body["latency_ms"] >= 0 and len(body["run_id"]) == 32

        status, body = _post(f"{base}/runs", b"{not json")
        assert status == 422 and "Invalid request" in body["error"]["message"]
        status, body = _post(f"{base}/runs", b'{"question": "hi"}')
        assert status == 422
        assert "input: Field required" in body["error"]["message"]
        assert '{"input": "your question"' in body["error"]["message"]

        _, docs = _get(f"{root}/openapi.json")
        assert "/v1/runs" in docs["paths"] and "/healthz" in docs["paths"]
        with urllib.request.urlopen(f"{root}/docs", timeout=10) as response:
            assert response.status == 200


def test_a_failing_run_is_a_200_with_an_explanation(tmp_path: Path) -> None:
    def broken(messages: Any, tools: Any) -> str:
        raise RuntimeError("the model backend is down")

    agent = ReActAgent(FunctionModel(broken), [], name="broken", trace=False, max_retries=0)
    with serve_in_thread(create_agent_app(agent)) as base:
        status, body = _post(f"{base}/runs", b'{"input": "hello", "metadata": {"k": "v"}}')
    assert status == 200
    assert body["status"] != "completed" and body["output"] is None
    assert body["explanation"]
