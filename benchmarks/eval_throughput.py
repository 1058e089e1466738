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
the ``eval_runs`` timestamps).

Then ``evaluate()`` itself over ``--ray-cases`` cases (the demo support agent with the
echo model, built from an :class:`~agentlab.evals.AgentSpec`):

* ``local_cases_per_s``: in this process (the local executor);
* ``ray_cases_per_s_1w`` / ``ray_cases_per_s_2w``: on a two-node Ray cluster on
  loopback (:class:`~agentlab.evals.executors.ray_cluster.LocalRayCluster`, one CPU
  each), with ``RayExecutor(workers=1)`` and ``workers=2``, this process connected
  beforehand and a warm-up eval run first (the cluster's start, the connection and the
  worker processes' start are not timed); the driver writes every run's events, as it
  does on a real cluster;
* ``ray_eval_overhead_s``: what a 64-case eval that connects by itself takes (a new
  Ray job: connecting, starting worker processes, disconnecting).

Ends with a JSON line.

    python benchmarks/eval_throughput.py [--cases 1000] [--split-cases 10000]
        [--ray-cases 4000] [--skip-notebook]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from agentlab.demo import build_support_agent, create_demo_database
from agentlab.evals import AgentSpec, RayExecutor, evaluate_sync
from agentlab.evals.executors.ray_cluster import LocalRayCluster
from agentlab.evals.executors.ray_executor import import_ray
from agentlab.evals.notebook import eval_command, skip_iri_format_checker
from agentlab.evals.scripted import echo
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


def notebook_figures(root: Path, cases: int, split_cases: int) -> dict[str, float]:
    """The figures of ``agentlab eval`` (papermill, kernels)."""
    skip_iri_format_checker()  # as the `agentlab eval` command does
    one = write_cases(root / "one.jsonl", 0, cases)
    half = split_cases // 2
    halves = [write_cases(root / "a.jsonl", 0, half), write_cases(root / "b.jsonl", half, half)]

    t_one, evals = run_eval([one], 1, root / "ws1")
    cases_per_s = cases / t_one
    print(
        f"{cases} cases, one execution: {t_one:.2f} s ({cases_per_s:.0f} cases/s); "
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
    return {
        "cases_per_s": round(cases_per_s, 1),
        "parallel2_speedup": round(t_serial / t_parallel, 2),
        "one_execution_s": round(t_one, 2),
        "split_serial_s": round(t_serial, 2),
        "split_parallel2_s": round(t_parallel, 2),
        "parallel2_speedup_process_isolation": round(t_serial / t_processes, 2),
    }


def ray_figures(root: Path, cases: int) -> dict[str, float]:
    """``evaluate()`` cases per second: locally, and on Ray with 1 and 2 workers."""
    ray = import_ray()
    dataset = write_cases(root / "ray.jsonl", 0, cases)
    warm_up = write_cases(root / "warm.jsonl", 0, 64)
    db = create_demo_database(root / "shop.duckdb")
    spec = AgentSpec(build_support_agent, echo(), db_path=db, trace=root / "ws-ray")

    def seconds(executor: RayExecutor | str, cases_path: Path) -> float:
        start = time.perf_counter()
        report = evaluate_sync(spec, cases_path, executor=executor)
        assert report.metrics.passed == report.metrics.cases, report.metrics
        return time.perf_counter() - start

    figures = {"local_cases_per_s": cases / min(seconds("local", dataset) for _ in range(2))}
    start = time.perf_counter()
    with LocalRayCluster(nodes=2, cpus_per_node=1) as cluster:
        started = time.perf_counter() - start
        # An eval that connects by itself pays for a new Ray job: connecting, starting
        # the worker processes (each imports agentlab), disconnecting.
        figures["ray_eval_overhead_s"] = seconds(RayExecutor(cluster.address), warm_up)
        ray.init(address=cluster.address, log_to_driver=False)  # the executor uses it
        try:  # starts this job's worker processes on both nodes
            seconds(RayExecutor(cluster.address, workers=2), warm_up)
            for workers in (1, 2):
                executor = RayExecutor(address=cluster.address, workers=workers)
                best = min(seconds(executor, dataset) for _ in range(2))
                figures[f"ray_cases_per_s_{workers}w"] = cases / best
        finally:
            ray.shutdown()
    print(
        f"Ray cluster of 2 nodes started in {started:.1f} s; a 64-case eval connecting by "
        f"itself took {figures['ray_eval_overhead_s']:.1f} s. {cases} cases through "
        f"evaluate(): local {figures['local_cases_per_s']:.0f}/s, Ray (connected) 1 worker "
        f"{figures['ray_cases_per_s_1w']:.0f}/s, 2 workers {figures['ray_cases_per_s_2w']:.0f}/s",
        file=sys.stderr,
    )
    return {k: round(v, 1 if "per_s" in k else 2) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--split-cases", type=int, default=10000)
    parser.add_argument("--ray-cases", type=int, default=4000, help="0: no Ray figures")
    parser.add_argument("--skip-notebook", action="store_true", help="only the evaluate() figures")
    args = parser.parse_args()
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="agentlab-eval-bench-") as tmp:
        root = Path(tmp)
        if not args.skip_notebook:
            result.update(notebook_figures(root, args.cases, args.split_cases))
        if args.ray_cases:
            result.update(ray_figures(root, args.ray_cases))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
