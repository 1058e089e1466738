"""SIGKILL a 5-step run with two side-effecting tools at every kill point (after
every trace event, and before and after the effect inside every tool call), then
again at every point of the recovery, and recover: every side effect happens
exactly once (see tests/_kill_matrix.py, which runs the matrix in a process of its
own, and tests/_kill_agent.py, the agent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)
def test_every_side_effect_happens_once_whatever_point_the_process_is_killed_at(tmp_path):
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_kill_matrix.py")), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    print(f"\nkill matrix: {figures}")
    assert figures["first_kill_points"] == 25
    assert figures["kill_points_tried"] >= 200, "hundreds of kill points"
    assert figures["asked_a_person"] > 0, "kills inside send_email must reach a person"
