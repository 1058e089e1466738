"""`agentlab eval`: the eval notebook executed with papermill (real kernels), its
result read back from a custom MIME output, gates, grids and parallel runs."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("papermill")
nbformat = pytest.importorskip("nbformat")

from agentlab.errors import UserError  # noqa: E402
from agentlab.evals.notebook import (  # noqa: E402
    EVAL_MIME_TYPE,
    EvalNotebookError,
    ParameterError,
    eval_command,
    execute_eval_notebook,
    parameter_sets,
)
from agentlab.evals.notebook_support import load_cases, parse_gates, resolve_model  # noqa: E402
from agentlab.evals.notebook_table import comparison_table  # noqa: E402
from agentlab.tracing import TraceStore  # noqa: E402

NOTEBOOK = Path(__file__).parents[1] / "evals" / "eval_agent.ipynb"
PASSING = '{"avg_steps": ">=0"}'


def _run(*args, **kwargs) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = eval_command(*args, stdout=out, stderr=err, timeout=120, **kwargs)
    return code, out.getvalue(), err.getvalue()


def _notebook(path: Path, *sources: str) -> Path:
    cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


# -- parameters (no kernel) ---------------------------------------------------------


def test_parameters_are_json_when_valid_else_strings():
    sets = parameter_sets(["max_steps=4", "model=scripted:echo", "limit=null", f"gates={PASSING}"])
    assert sets == [
        {"max_steps": 4, "model": "scripted:echo", "limit": None, "gates": {"avg_steps": ">=0"}}
    ]
    assert parameter_sets([], []) == [{}]


def test_grid_is_the_cartesian_product_with_the_fixed_parameters():
    sets = parameter_sets(["limit=2"], ["max_steps=2,4", "model=scripted:echo,scripted:schema"])
    assert len(sets) == 4 and all(s["limit"] == 2 for s in sets)
    assert {(s["max_steps"], s["model"]) for s in sets} == {
        (2, "scripted:echo"),
        (2, "scripted:schema"),
        (4, "scripted:echo"),
        (4, "scripted:schema"),
    }
    assert parameter_sets([], ["limit=[1, 2]"]) == [{"limit": 1}, {"limit": 2}]


@pytest.mark.parametrize(
    ("params", "grid", "says"),
    [
        (["max_steps"], [], "-p 'max_steps' is not understood"),
        (["=4"], [], "write -p max_steps=4"),
        (["a b=1"], [], "is not understood"),
        (["x=1", "x=2"], [], "given twice"),
        (["x=1"], ["x=1,2"], "more than once"),
        ([], ["x=1,,2"], "empty value"),
    ],
)
def test_bad_parameters_are_clear_errors(params, grid, says):
    with pytest.raises(ParameterError, match=re.escape(says)):
        parameter_sets(params, grid)


def test_bad_parameters_exit_2_without_running(tmp_path):
    code, out, err = _run(NOTEBOOK, ["max_steps"], [], workspace=tmp_path / "ws")
    assert code == 2 and "-p 'max_steps' is not understood" in err and not out
    code, _, err = _run(tmp_path / "missing.ipynb", [], [], workspace=tmp_path / "ws")
    assert code == 2 and "not found" in err
    code, _, err = _run(NOTEBOOK, ["max_step=4"], [], workspace=tmp_path / "ws")
    assert code == 2 and "eval_agent.ipynb has no parameter 'max_step'" in err
    assert "max_steps" in err  # lists the declared ones


def test_notebook_helpers():
    assert resolve_model("scripted:echo").name == "scripted:echo"
    assert resolve_model("py:agentlab.evals.scripted:one_call").name == "scripted:one_call"
    assert resolve_model("scripted:schema").name.startswith("scripted:")
    with pytest.raises(UserError, match="cannot import"):
        resolve_model("py:agentlab.nope:factory")
    assert parse_gates(PASSING) == {"avg_steps": ">=0"} and parse_gates(None) == {}
    with pytest.raises(UserError, match="not a JSON object"):
        parse_gates("avg_steps>=0")
    assert len(load_cases("evals/support_agent.jsonl", limit=2)) == 2


def test_comparison_table_shows_the_varying_parameters():
    metrics = {"cases": 2, "task_completion_rate": 0.5, "avg_steps": 1.0, "tool_precision": 1.0}
    table = comparison_table(
        [{"limit": 2, "max_steps": 2}, {"limit": 2, "max_steps": 4}],
        [metrics, None],
        ["PASS", "ERROR"],
    )
    header, first, second = table.splitlines()
    assert "max_steps" in header and "limit" not in header and "completion" in header
    assert first.split()[:4] == ["1", "2", "2", "0.50"] and first.endswith("PASS")
    assert "n/a" in first and second.endswith("ERROR")


# -- real executions ----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_execute_reads_the_metrics_back(tmp_path):
    ws = tmp_path / "ws"
    result = execute_eval_notebook(
        NOTEBOOK, {"model": "scripted:echo", "limit": 3, "gates": PASSING}, workspace=ws
    )
    assert result.passed and result.gate_failures == []
    assert result.metrics["cases"] == 3 and result.metrics["avg_steps"] == 1.0
    assert result.executed_path.parent == ws / "evals" / "runs" and result.executed_path.is_file()
    assert result.parameters["workspace"] == str(ws)
    assert result.result["parameters"]["gates"] == {"avg_steps": ">=0"}
    nb = nbformat.read(result.executed_path, as_version=4)
    bundles = [
        o for c in nb.cells for o in c.get("outputs", []) if EVAL_MIME_TYPE in o.get("data", {})
    ]
    assert len(bundles) == 1
    (eval_id,) = TraceStore(ws).sql("SELECT eval_id FROM eval_runs")[0]
    assert eval_id == result.result["eval_id"]
    assert "results" not in result.result  # per-case rows stay in the store:
    assert len(TraceStore(ws).sql(result.result["results_query"])) == 3


@pytest.mark.timeout(120)
def test_a_failing_gate_fails_the_command_but_not_the_notebook(tmp_path):
    code, out, err = _run(
        NOTEBOOK, ["model=scripted:schema", "limit=2"], [], workspace=tmp_path / "ws"
    )
    assert code == 1, err
    assert "gate failed: task_completion_rate is 0" in out
    assert "executed notebook: " in out and out.splitlines()[-1].endswith("FAIL")
    executed = Path(out.split("executed notebook: ")[1].split()[0])
    nb = nbformat.read(executed, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.timeout(180)
def test_a_grid_runs_in_parallel_into_one_trace_store(tmp_path):
    ws, out_dir = tmp_path / "ws", tmp_path / "runs"
    code, out, err = _run(
        NOTEBOOK,
        ["model=scripted:one_call", "limit=2", f"gates={PASSING}"],
        ["max_steps=1,4"],
        parallel=2,
        out_dir=out_dir,
        workspace=ws,
    )
    assert code == 0, err
    executed = sorted(out_dir.glob("eval_agent-*.ipynb"))
    assert len(executed) == 2 and all(str(p) in out for p in executed)
    rows = TraceStore(ws).sql("SELECT cases, metrics FROM eval_runs ORDER BY eval_id")
    assert len(rows) == 2 and all(cases == 2 for cases, _ in rows)
    steps = sorted(
        json.loads(m)["avg_steps"] if isinstance(m, str) else m["avg_steps"] for _, m in rows
    )
    assert steps == [1.0, 2.0]  # max_steps=1 stops before the answer; 4 allows tool + answer
    header, *lines = out.splitlines()[-3:]
    assert "max_steps" in header and "model" not in header
    assert [line.split()[1] for line in lines] == ["1", "4"]
    assert TraceStore(ws).sql("SELECT count(*) FROM eval_results")[0][0] == 4


@pytest.mark.timeout(60)
def test_a_notebook_that_raises_names_the_cell(tmp_path):
    nb = _notebook(tmp_path / "broken.ipynb", "y = 2", "raise ValueError('no dataset here')")
    with pytest.raises(EvalNotebookError) as info:  # papermill injects a cell before it
        execute_eval_notebook(nb, {"x": 2}, workspace=tmp_path / "ws", timeout=30)
    message = str(info.value)
    assert (
        "broken.ipynb" in message
        and 'cell 2 (counting from 0; it starts "raise ValueError' in message
    )
    assert "ValueError: no dataset here" in message and "traceback is at" in message


@pytest.mark.timeout(60)
def test_a_notebook_without_the_result_output_is_a_clear_error(tmp_path):
    nb = _notebook(tmp_path / "silent.ipynb", "print('hello')")
    with pytest.raises(EvalNotebookError, match=r"no 'application/x\.agentlab\.eval\+json' output"):
        execute_eval_notebook(nb, {}, workspace=tmp_path / "ws", timeout=30)


@pytest.mark.timeout(120)
def test_process_isolation_runs_each_execution_in_its_own_process(tmp_path):
    ws = tmp_path / "ws"
    code, _, err = _run(
        NOTEBOOK,
        ["model=scripted:echo", "limit=1", f"gates={PASSING}"],
        ["max_steps=1,2"],
        parallel=2,
        workspace=ws,
        isolation="process",
    )
    assert code == 0, err
    assert len(list((ws / "evals" / "runs").glob("*.ipynb"))) == 2
    assert TraceStore(ws).sql("SELECT count(*) FROM eval_runs")[0][0] == 2
    assert _run(NOTEBOOK, [], [], workspace=ws, isolation="fork")[0] == 2


def test_the_command_processes_import_papermill_without_the_iri_parser():
    code = (
        "import sys\n"
        "from agentlab.evals.notebook import skip_iri_format_checker\n"
        "skip_iri_format_checker()\n"
        "import nbformat, papermill\n"
        "nbformat.validate(nbformat.read(sys.argv[1], as_version=4))\n"
        "print(sys.modules.get('rfc3987_syntax'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(NOTEBOOK)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "None"  # marked absent, and notebooks still validate


@pytest.mark.timeout(180)
def test_a_baseline_compares_and_gates_the_notebook_run(tmp_path):
    ws = tmp_path / "ws"
    cases = [  # the echo model passes all six cases (it repeats the question)
        {
            "id": f"say-{w}",
            "input": f"Please say {w}",
            "expected_outcome": {"kind": "contains", "value": w},
        }
        for w in ("apple", "pear", "plum", "fig", "kiwi", "lime")
    ]
    dataset = tmp_path / "words.jsonl"
    dataset.write_text("".join(json.dumps(c) + "\n" for c in cases))
    base = execute_eval_notebook(
        NOTEBOOK,
        {"model": "scripted:echo", "dataset": str(dataset), "gates": PASSING},
        workspace=ws,
    )
    assert base.passed and base.result["comparison"] is None
    base_id = base.result["eval_id"]

    # one_call with max_steps=1 stops before answering: all six cases regress
    code, out, err = _run(
        NOTEBOOK,
        [
            "model=scripted:one_call",
            "max_steps=1",
            f"dataset={dataset}",
            f"gates={PASSING}",
            f"baseline={base_id[:12]}",
        ],
        [],
        workspace=ws,
    )
    assert code == 1, err
    (eval_id,) = [i for (i,) in TraceStore(ws).sql("SELECT eval_id FROM eval_runs") if i != base_id]
    assert f"  eval id: {eval_id}" in out
    against = f"against baseline {base_id[:8]}: 6 regressed, 0 improved, McNemar p = 0.03125"
    assert f"  {against} (regressed)" in out
    assert "gate failed: regression against the baseline words" in out
    assert "6 case(s) passed there and fail now (say-apple, say-pear" in out
    executed = Path(out.split("executed notebook: ")[1].split()[0])
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    (shown,) = [o for o in outputs if "Eval comparison" in o.get("data", {}).get("text/html", "")]
    assert '<span class="bad">say-apple</span>' in shown["data"]["text/html"]
    result = [o["data"][EVAL_MIME_TYPE] for o in outputs if EVAL_MIME_TYPE in o.get("data", {})]
    assert result[0]["parameters"]["baseline"] == base_id[:12]
    assert result[0]["comparison"]["regressed"] == [c["id"] for c in cases]


@pytest.mark.timeout(60)
def test_an_unknown_baseline_fails_before_the_run(tmp_path):
    with pytest.raises(EvalNotebookError, match=r"cell 2 .*UserError: no eval run 'nope' in "):
        execute_eval_notebook(
            NOTEBOOK, {"model": "scripted:echo", "baseline": "nope"}, workspace=tmp_path / "ws"
        )
    assert TraceStore(tmp_path / "ws").sql("SELECT count(*) FROM runs") == [(0,)]
