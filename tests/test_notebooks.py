"""Every tutorial notebook is executed with papermill so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
KERNEL = "python3"


@pytest.fixture(scope="module")
def kernel() -> str:
    """The python3 kernel, installed into this environment if missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return KERNEL


def declares_model(path: Path) -> bool:
    """Whether the notebook's parameters cell has a `model` (03 picks a model per section)."""
    return "model" in papermill.inspect_notebook(str(path))


def execute(path: Path, tmp_path: Path, kernel: str, model: str, timeout: int):
    """Run a notebook in a fresh workspace (with `model`, if it takes one); return the
    executed notebook."""
    out = tmp_path / path.name
    parameters = {"workspace": str(tmp_path / "ws")}
    if declares_model(path):
        parameters["model"] = model
    start = time.perf_counter()
    papermill.execute_notebook(
        str(path),
        str(out),
        parameters=parameters,
        kernel_name=kernel,
        execution_timeout=timeout,
        cwd=str(tmp_path),
        progress_bar=False,
    )
    print(f"{path.name}: {time.perf_counter() - start:.1f} s, executed copy: {out}")
    return nbformat.read(out, as_version=4)


def outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_a_scripted_model(path, tmp_path, kernel):
    nb = execute(path, tmp_path, kernel, "scripted:schema", timeout=60)
    data = [o.get("data", {}) for o in outputs(nb)]
    assert not [o for o in outputs(nb) if o.get("output_type") == "error"]
    if path.name == "01_build_an_agent.ipynb":
        html = "\n".join(d.get("text/html", "") for d in data)
        assert "Tool <code>get_order</code>" in html  # tools show their schema
        assert "ReActAgent" in html and "completed" in html
        widgets = [d for d in data if "application/vnd.jupyter.widget-view+json" in d]
        assert len(widgets) == 2  # the two inspectors
    if path.name == "02_memory.ipynb":
        html = "\n".join(d.get("text/html", "") for d in data)
        assert "Refunds are paid within 5 working days" in html  # found by meaning
        assert all(mode in html for mode in ("semantic", "fulltext", "hybrid"))
        assert "(expired)" in "\n".join("".join(o.get("text", "")) for o in outputs(nb))
        widgets = [d for d in data if "application/vnd.jupyter.widget-view+json" in d]
        assert len(widgets) == 1  # the memory inspector
    if path.name == "03_production_habits.ipynb":
        check_production_habits(nb, data)
    if path.name == "04_patterns.ipynb":
        check_patterns(data)


def check_patterns(data: list[dict]) -> None:
    """04: each pattern ran, drew its structure, was evaluated, exported and served."""
    html = "\n".join(d.get("text/html", "") for d in data)
    assert "Plan" in html  # the plan-and-execute run shows its plan
    assert html.count("<svg") >= 3  # the support flow, its run's path, the refund flow
    table = next(h for h in (d.get("text/html", "") for d in data) if "(best in bold)" in h)
    assert all(f"<td>{p}</td>" in table for p in ("react", "plan_execute", "state_machine"))
    served = [d["text/plain"] for d in data if "'state_machine': (" in d.get("text/plain", "")]
    assert served, "the three exported packages answered over HTTP"
    assert all(f"'{p}': (" in served[0] for p in ("react", "plan_execute", "state_machine"))


HABITS_MIME = "application/x.agentlab.habits+json"


def check_production_habits(nb, data: list[dict]) -> None:
    """03: each section's outcome, from the summary bundle and the printed lines."""
    [facts] = [d[HABITS_MIME] for d in data if HABITS_MIME in d]
    assert facts["retry"] == {"status": "completed", "attempts": 3}  # 429, 429, then ok
    breaker = facts["breaker"]
    assert breaker["transitions"] == ["closed->open", "open->half_open", "half_open->closed"]
    assert breaker["runs_refused"] == 2 and breaker["requests_while_open"] == 0
    assert breaker["last_run"] == "completed"
    assert facts["fallback"] == {"status": "completed", "served_by": "local:smollm2"}
    assert list(facts["budgets"].values()) == ["budget_exceeded", "budget_exceeded", "max_steps"]
    assert facts["tool_fallbacks"] == ["search_orders", "search_mirror"]
    assert facts["approval"] == {"status": "completed", "refunds_paid": 1}
    assert facts["recovery"] == {
        "after_the_kill": ["interrupted"],
        "after_resume": "completed",
        "payments": 1,  # the refund was made again after the kill, and paid once
        "starts": 2,
    }
    assert {"repeated_call", "no_progress"} <= set(facts["alerts"])
    assert facts["secrets"] == {"rows_holding_the_password": 0}

    text = "\n".join("".join(o.get("text", "")) for o in outputs(nb))
    assert "the server saw: {'rate_limit': 2, 'ok': 1}" in text
    assert "requests that reached the server while the breaker was open: 0" in text
    assert "status: paused; waits for: Approve the call to 'refund'" in text
    assert "refunds paid so far: []" in text and "refunds paid: [('O-1003', 19.9)]" in text
    assert "exit code: -9 (killed by SIGKILL)" in text
    assert "the agent was stopped because it is looping" in text
    assert "the tool got the real password: True" in text
    html = "\n".join(d.get("text/html", "") for d in data)
    assert "[REDACTED]" in html and "hunter2" not in html
    widgets = [d for d in data if "application/vnd.jupyter.widget-view+json" in d]
    assert len(widgets) == 2  # the approval widget and the run inspector
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert "server.stop()" in last.source
    assert "<FaultServer stopped" in last.outputs[0]["data"]["text/plain"]


@pytest.mark.local_model
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_the_local_model(path, tmp_path, kernel):
    if not declares_model(path):
        pytest.skip(f"{path.name} has no model parameter: the scripted run is the same run")
    nb = execute(path, tmp_path, kernel, "local:smollm2", timeout=600)
    assert not [o for o in outputs(nb) if o.get("output_type") == "error"]


EVAL_NOTEBOOKS = sorted((Path(__file__).parent.parent / "evals").glob("*.ipynb"))
EVAL_MIME = "application/x.agentlab.eval+json"


def test_the_notebooks_are_found():
    assert NOTEBOOKS and EVAL_NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS + EVAL_NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", EVAL_NOTEBOOKS, ids=lambda p: p.name)
def test_eval_notebook_runs_with_a_scripted_model(path, tmp_path, kernel):
    nb = execute(path, tmp_path, kernel, "scripted:schema", timeout=60)
    assert not [o for o in outputs(nb) if o.get("output_type") == "error"]
    results = [o["data"][EVAL_MIME] for o in outputs(nb) if EVAL_MIME in o.get("data", {})]
    assert len(results) == 1, "an eval notebook displays exactly one result bundle"
    result = results[0]
    assert result["metrics"]["cases"] >= 15 and result["model"] == "scripted:schema"
    assert {"gates", "gate_failures", "parameters", "results_query"} <= result.keys()
