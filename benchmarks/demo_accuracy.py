"""Accuracy of the support demo on a model (default: the local model).

Runs every demo question through the support agent (as ``agentlab demo`` does) in a
throwaway workspace and prints a final JSON line:

* accuracy: runs that made the expected tool calls AND whose answer contains the
  expected fact;
* tool_call_accuracy: runs that made the expected tool calls;
* completed: runs that ended with an answer;
* mean_seconds_per_question / p95_seconds_per_question: wall time per run.

    python benchmarks/demo_accuracy.py [--model local:smollm2] [-v]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time

from agentlab.demo import run_demo
from agentlab.models import allow_model_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="local:smollm2")
    parser.add_argument("-v", "--verbose", action="store_true", help="print one line per question")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workspace, allow_model_requests(True):
        report = run_demo(
            model=args.model, workspace=workspace, json_output=True, out=io.StringIO()
        )
    summary = report["summary"]
    if args.verbose:
        for run in report["runs"]:
            calls = " ".join(
                f"{c['tool']}({json.dumps(c['arguments'])})" for c in run["tools_called"]
            )
            print(
                f"{'ok   ' if run['correct'] else 'WRONG'} {run['status']:<9} "
                f"{run['latency_ms'] / 1000:5.1f}s {run['question']!r} -> {calls or '-'} "
                f"-> {(run['answer'] or run['explanation'] or '')[:120]!r}",
                file=sys.stderr,
            )
    print(
        json.dumps(
            {
                "model": summary["model"],
                "questions": summary["runs"],
                "accuracy": summary["accuracy"],
                "tool_call_accuracy": summary["tool_call_accuracy"],
                "completed": round(summary["completed"] / summary["runs"], 3),
                "mean_seconds_per_question": round(summary["latency_ms_mean"] / 1000, 2),
                "p95_seconds_per_question": round(summary["latency_ms_p95"] / 1000, 2),
                "total_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
