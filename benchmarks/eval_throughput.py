"""Eval throughput through the path of ``agentlab eval`` (papermill included).

Scripted cases: the eval notebook runs with ``model="scripted:echo"`` (answers each
case at once with its input; see :mod:`agentlab.evals.scripted`) over generated
JSONL datasets of trivial cases. Measures

* ``cases_per_s``: 1,000 cases in one notebook execution, end to end (papermill
  import, kernel start, imports, evaluation, report, result read back);
* ``parallel2_speedup``: 10,000 cases split into two datasets run as a grid,
  ``--parallel 1`` time divided by ``--parallel 2`` time (runs driven from threads,
  the default; ``parallel2_speedup_process_isolation`` drives each from its own
  Python process instead).

Also prints where the time goes (kernel/notebook overhead vs. ``evaluate()``, from
the ``eval_runs`` timestamps) and ends with a JSON line.

    python benchmarks/eval_throughput.py [--cases 1000] [--split-cases 10000]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from agentlab.evals.notebook import eval_command, skip_iri_format_checker
from agentlab.tracing import TraceStore

NOTEBOOK = Path(__file__).resolve().parents[1] / "evals" / "eval_agent.ipynb"
GATES = '{"task_completion_rate": ">=1"}'


def write_cases(path: Path, start: int, count: int) -> Path:
    """`count` trivial cases the echo model passes: the answer contains the input."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(start, start + count):
            case = {
                "id": f"c{i}",
                "input": f"ping {i}",
                "expected_outcome": {"kind": "contains", "value": f"ping {i}"},
                "tags": ["bench"],
            }
            f.write(json.dumps(case) + "\n")
    return path


def run_eval(
    datasets: list[Path], parallel: int, workspace: Path, isolation: str = "thread"
) -> tuple[float, list[float]]:
    """Wall time of one ``agentlab eval`` call and the evaluate() seconds of each run."""
    out, err = io.StringIO(), io.StringIO()
    params = ["model=scripted:echo", f"gates={GATES}"]
    grid = [f"dataset={json.dumps([str(d) for d in datasets])}"]
    start = time.perf_counter()
    code = eval_command(
        NOTEBOOK,
        params,
        grid,
        parallel=parallel,
        workspace=workspace,
        isolation=isolation,
        stdout=out,
        stderr=err,
    )
    elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"agentlab eval failed ({code}):\n{out.getvalue()}\n{err.getvalue()}")
    print("\n".join(out.getvalue().splitlines()[-len(datasets) - 1 :]), file=sys.stderr)
    rows = TraceStore(workspace).sql("SELECT epoch(ended_at) - epoch(started_at) FROM eval_runs")
    return elapsed, [float(r[0]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--split-cases", type=int, default=10000)
    args = parser.parse_args()
    skip_iri_format_checker()  # as the `agentlab eval` command does
    with tempfile.TemporaryDirectory(prefix="agentlab-eval-bench-") as tmp:
        root = Path(tmp)
        one = write_cases(root / "one.jsonl", 0, args.cases)
        half = args.split_cases // 2
        halves = [write_cases(root / "a.jsonl", 0, half), write_cases(root / "b.jsonl", half, half)]

        t_one, evals = run_eval([one], 1, root / "ws1")
        cases_per_s = args.cases / t_one
        print(
            f"{args.cases} cases, one execution: {t_one:.2f} s ({cases_per_s:.0f} cases/s); "
            f"evaluate() {evals[0]:.2f} s, kernel+notebook+read-back {t_one - evals[0]:.2f} s",
            file=sys.stderr,
        )
        t_serial, evals_1 = run_eval(halves, 1, root / "ws2")
        t_parallel, evals_2 = run_eval(halves, 2, root / "ws3")
        t_processes, _ = run_eval(halves, 2, root / "ws4", isolation="process")
        print(
            f"{2 * half} cases as 2 runs: --parallel 1 {t_serial:.2f} s "
            f"(evaluate {sum(evals_1):.2f} s), --parallel 2 {t_parallel:.2f} s "
            f"(evaluate {max(evals_2):.2f} s per run, longest); --parallel 2 with "
            f"isolation='process' {t_processes:.2f} s",
            file=sys.stderr,
        )
    result = {
        "cases_per_s": round(cases_per_s, 1),
        "parallel2_speedup": round(t_serial / t_parallel, 2),
        "one_execution_s": round(t_one, 2),
        "split_serial_s": round(t_serial, 2),
        "split_parallel2_s": round(t_parallel, 2),
        "parallel2_speedup_process_isolation": round(t_serial / t_processes, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
