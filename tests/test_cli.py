import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def agentlab(*args, workspace):
    return subprocess.run(
        [sys.executable, "-m", "agentlab.cli", *args, "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        timeout=100,
    )


def test_demo_json_on_a_scripted_model_then_sql(tmp_path):
    out = agentlab("demo", "--json", "--model", "scripted:schema", workspace=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["runs"]) >= 5 and "summary" in report
    out = agentlab("sql", "select count(*) as n from runs", workspace=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", str(len(report["runs"]))]


def test_errors_are_one_clear_line_not_a_traceback(tmp_path):
    out = agentlab("sql", "select * from nowhere", workspace=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("agentlab: ") and "nowhere" in out.stderr
    assert "Traceback" not in out.stderr
    out = agentlab("demo", "--model", "gpt-9", workspace=tmp_path)
    assert out.returncode == 2 and "Unknown model 'gpt-9'" in out.stderr


def test_eval_command_exits_1_when_a_gate_fails(tmp_path):
    notebook = Path(__file__).parents[1] / "evals" / "eval_agent.ipynb"
    out = agentlab(
        "eval",
        str(notebook),
        "-p",
        "model=scripted:schema",
        "-p",
        "limit=2",
        "--out",
        str(tmp_path / "runs"),
        workspace=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert "gate failed: task_completion_rate" in out.stdout
    executed = list((tmp_path / "runs").glob("*.ipynb"))
    assert len(executed) == 1 and f"executed notebook: {executed[0]}" in out.stdout


def test_eval_is_a_group_with_run_and_compare(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "agentlab.cli", "eval", "--help"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 0, out.stderr
    assert "run " in out.stdout and "compare " in out.stdout
    assert "agentlab eval NOTEBOOK ... is short" in " ".join(out.stdout.split()).replace("`", "")
    out = agentlab("eval", "compare", "nope", "other", workspace=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"agentlab: no eval run 'nope' in {tmp_path}; it has none yet")


def test_eval_run_passes_the_executor_to_the_notebook(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import agentlab.evals.notebook as notebook
    from agentlab.cli import app

    seen: list[list[str]] = []

    def eval_command(path, params, grid, **options):  # type: ignore[no-untyped-def]
        seen.append(list(params))
        return 0

    monkeypatch.setattr(notebook, "eval_command", eval_command)
    args = ["eval", "run", "nb.ipynb", "-p", "limit=2", "--executor", "ray"]
    result = CliRunner().invoke(app, [*args, "--address", "10.0.0.5:6379"])
    assert result.exit_code == 0, result.output
    assert seen == [["limit=2", "executor=ray", "ray_address=10.0.0.5:6379"]]
    assert CliRunner().invoke(app, ["eval", "nb.ipynb"]).exit_code == 0
    assert seen[-1] == [], "the local executor is the notebook's default: nothing is passed"
