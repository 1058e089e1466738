import json
import subprocess
import sys

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
