"""One eval notebook execution in its own process, for ``agentlab eval --parallel``.

``python -m agentlab.evals.notebook_worker JOB.json RESULT.json``: JOB holds the
arguments of :func:`~agentlab.evals.notebook.execute_eval_notebook`; RESULT gets
``{"ok": true, "metrics": ..., "gate_failures": ..., ...}`` or
``{"ok": false, "error": "..."}``. A file, not stdout: kernels share the stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agentlab.errors import AgentlabError


def main(job_path: str, result_path: str) -> None:
    """Run the job in `job_path` and write its outcome to `result_path`."""
    from agentlab.evals.notebook import execute_eval_notebook, skip_iri_format_checker

    skip_iri_format_checker()
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    try:
        run = execute_eval_notebook(
            job["notebook"],
            job["parameters"],
            output_path=job["output_path"],
            workspace=job["workspace"],
            timeout=job["timeout"],
        )
        outcome = {
            "ok": True,
            "parameters": run.parameters,
            "metrics": run.metrics,
            "gate_failures": run.gate_failures,
            "executed_path": str(run.executed_path),
        }
    except AgentlabError as exc:
        outcome = {"ok": False, "error": str(exc)}
    Path(result_path).write_text(json.dumps(outcome, default=str), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
