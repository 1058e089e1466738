"""Run eval notebooks with papermill and read their results back.

An eval notebook (``evals/eval_agent.ipynb``) has a cell tagged ``parameters``
and ends by displaying one MIME bundle of type :data:`EVAL_MIME_TYPE` (the
report's dict plus ``gates``, ``gate_failures`` and ``parameters``).
:func:`execute_eval_notebook` runs one parameter set and keeps the executed
notebook; :func:`eval_command` is ``agentlab eval``: one run per parameter set
(each with its own kernel, several at once when asked), then a comparison table.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from agentlab.errors import AgentlabError, RunError, UserError
from agentlab.evals.notebook_params import ParameterError, parameter_sets
from agentlab.evals.notebook_support import EVAL_MIME_TYPE, comparison_line
from agentlab.evals.notebook_table import comparison_table
from agentlab.workspace import resolve_workspace

__all__ = [
    "EVAL_MIME_TYPE",
    "EvalNotebookError",
    "NotebookEval",
    "ParameterError",
    "check_parameters",
    "declared_parameters",
    "default_output_path",
    "eval_command",
    "execute_eval_notebook",
    "parameter_sets",
    "read_eval_output",
    "skip_iri_format_checker",
]

KERNEL = "python3"
DEFAULT_TIMEOUT = 3600.0


class _QuietParameterParsing(logging.Filter):
    """Papermill cannot parse dict defaults and then calls them unknown; the names
    are checked here with ``ast`` instead (:func:`declared_parameters`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


for _name in ("papermill.translators", "papermill.parameterize", "papermill"):
    logging.getLogger(_name).addFilter(_QuietParameterParsing())


def skip_iri_format_checker() -> None:
    """Make papermill import in 0.4 s instead of 3 s, in agentlab's own command processes.

    papermill imports nbformat, which imports jsonschema, which imports the optional
    ``rfc3987_syntax`` (pulled in by Jupyter's ``jsonschema[format-nongpl]``) to
    check the ``iri`` string format; that package builds a parser for 2.6 s at
    import (python-jsonschema/jsonschema#1428). Notebook schemas use no ``iri``
    format, so the ``agentlab eval``/``export`` processes and the eval worker mark
    it absent. Does nothing once jsonschema is imported; never called on import.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


class EvalNotebookError(RunError):
    """An eval notebook failed to run or did not display its result."""


@dataclass(frozen=True)
class NotebookEval:
    """One executed eval notebook: its parameters, metrics and gate verdict."""

    parameters: dict[str, Any]
    metrics: dict[str, Any]
    gate_failures: list[str]
    passed: bool
    executed_path: Path
    result: dict[str, Any] = field(default_factory=dict, repr=False)


def default_output_path(
    notebook: str | os.PathLike[str], parameters: dict[str, Any], directory: Path
) -> Path:
    """``<directory>/<stem>-<timestamp>-<hash of the parameters>.ipynb``."""
    digest = hashlib.sha256(
        json.dumps(parameters, sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"{now % 1:.3f}"[1:]
    return directory / f"{Path(notebook).stem}-{stamp}-{digest}.ipynb"


def declared_parameters(notebook: str | os.PathLike[str]) -> list[str] | None:
    """The names assigned in the notebook's ``parameters`` cell (None: it has none)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as exc:
                raise UserError(
                    f"{notebook}: the parameters cell is not valid Python: {exc}"
                ) from None
            return [
                target.id
                for node in tree.body
                if isinstance(node, ast.Assign | ast.AnnAssign)
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)
            ]
    return None


def check_parameters(notebook: str | os.PathLike[str], params: dict[str, Any]) -> list[str] | None:
    """Raise a UserError when `params` names a parameter the notebook does not
    declare; return the declared names (None: no ``parameters`` cell, no check)."""
    declared = declared_parameters(notebook)
    unknown = sorted(set(params) - set(declared)) if declared is not None else []
    if unknown:
        raise UserError(
            f"{Path(notebook).name} has no parameter {', '.join(map(repr, unknown))}; its "
            f"parameters are {', '.join(declared or []) or 'none'}"
        )
    return declared


def execute_eval_notebook(
    notebook: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    *,
    output_path: str | os.PathLike[str] | None = None,
    workspace: str | os.PathLike[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    cwd: str | os.PathLike[str] | None = None,
) -> NotebookEval:
    """Execute `notebook` with `parameters` (papermill, kernel ``python3``) and read its result.

    The ``workspace`` parameter defaults to `workspace` (resolved as usual), so
    the runs land in that trace store. The executed notebook is kept at
    `output_path` (default ``<workspace>/evals/runs/<stem>-<time>-<hash>.ipynb``).
    The kernel runs in `cwd` (default: the current directory). `timeout` bounds
    each cell, in seconds. Raises :class:`EvalNotebookError` naming the failing
    cell, or when the notebook displays no :data:`EVAL_MIME_TYPE` output.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = Path(notebook)
    if not source.is_file():
        raise UserError(f"eval notebook {str(notebook)!r} not found")
    params = dict(parameters or {})
    declared = check_parameters(source, params)
    ws = resolve_workspace(params.get("workspace") or workspace)
    if declared is None or "workspace" in declared:
        params["workspace"] = str(ws)
    out = (
        Path(output_path)
        if output_path
        else default_output_path(source, params, ws / "evals" / "runs")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(source),
            str(out),
            parameters=params,
            kernel_name=KERNEL,
            execution_timeout=timeout,
            cwd=_chdir_target(cwd),
            progress_bar=sys.stderr.isatty(),  # cells done, on a terminal
            request_save_on_cell_execute=False,  # large outputs: one save at the end
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no TCP-transport warning
        )
    except PapermillExecutionError as exc:
        first_line = (exc.source or "").strip().splitlines()[:1]
        raise EvalNotebookError(
            f"eval notebook {source}: cell {_source_index(out, exc.cell_index)} (counting "
            f"from 0; it starts {first_line[0][:60] if first_line else ''!r}) raised "
            f"{exc.ename}: {exc.evalue}. The executed notebook with the traceback is at {out}"
        ) from None
    except Exception as exc:  # kernel died, cell timeout, missing kernel...
        raise EvalNotebookError(
            f"eval notebook {source} could not be executed: {type(exc).__name__}: {exc}"
        ) from exc
    result = read_eval_output(out)
    failures = [str(f) for f in result.get("gate_failures", [])]
    return NotebookEval(
        parameters=params,
        metrics=dict(result.get("metrics", {})),
        gate_failures=failures,
        passed=not failures,
        executed_path=out,
        result=result,
    )


def _chdir_target(cwd: str | os.PathLike[str] | None) -> str | None:
    """`cwd` for papermill, or None when it is the current directory: papermill's
    chdir is process-wide, so concurrent runs in threads must not use it."""
    if cwd is None or Path(cwd).resolve() == Path.cwd().resolve():
        return None
    return str(cwd)


def _source_index(executed: Path, index: int) -> int:
    """The index in the source notebook of cell `index` of the executed one (papermill
    may have inserted an ``injected-parameters`` cell before it; the executed copy on
    disk also has papermill's error-message cells, which `index` does not count)."""
    import nbformat
    from papermill.execute import ERROR_MARKER_TAG

    try:
        cells = nbformat.read(str(executed), as_version=4).cells
    except Exception:  # the executed copy is only needed for this adjustment
        return index
    executed_cells = [c for c in cells if ERROR_MARKER_TAG not in c.metadata.get("tags", [])]
    injected = [
        i
        for i, c in enumerate(executed_cells[:index])
        if "injected-parameters" in c.metadata.get("tags", [])
    ]
    return index - len(injected)


def read_eval_output(executed: str | os.PathLike[str]) -> dict[str, Any]:
    """The last :data:`EVAL_MIME_TYPE` output of an executed notebook."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    found = [
        output["data"][EVAL_MIME_TYPE]
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if EVAL_MIME_TYPE in output.get("data", {})
    ]
    if not found:
        raise EvalNotebookError(
            f"the executed notebook {executed} displays no {EVAL_MIME_TYPE!r} output; an "
            "eval notebook must end with display({" + repr(EVAL_MIME_TYPE) + ": {...}}, raw=True) "
            "(agentlab.evals.notebook_support.display_eval does it)"
        )
    result = found[-1]
    return json.loads(result) if isinstance(result, str) else dict(result)


def _execute_quietly(job: dict[str, Any]) -> NotebookEval | str:
    """One run in this process: its NotebookEval, or its error message."""
    try:
        return execute_eval_notebook(
            job["notebook"],
            job["parameters"],
            output_path=job["output_path"],
            workspace=job["workspace"],
            timeout=job["timeout"],
        )
    except AgentlabError as exc:
        return str(exc)


def _execute_in_subprocess(job: dict[str, Any]) -> NotebookEval | str:
    """One run in a fresh Python process (its own papermill client and kernel)."""
    with tempfile.TemporaryDirectory(prefix="agentlab-eval-") as tmp:
        job_file, result_file = Path(tmp, "job.json"), Path(tmp, "result.json")
        job_file.write_text(json.dumps(job), encoding="utf-8")
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "agentlab.evals.notebook_worker", str(job_file)]
        proc = subprocess.run([*command, str(result_file)], env=env, check=False)
        if not result_file.is_file():
            return (
                f"eval notebook {job['notebook']}: the worker process exited with {proc.returncode}"
            )
        outcome = json.loads(result_file.read_text(encoding="utf-8"))
    if not outcome["ok"]:
        return str(outcome["error"])
    return NotebookEval(
        parameters=outcome["parameters"],
        metrics=outcome["metrics"],
        gate_failures=outcome["gate_failures"],
        passed=not outcome["gate_failures"],
        executed_path=Path(outcome["executed_path"]),
    )


def eval_command(
    notebook: str | os.PathLike[str],
    params: Sequence[str] = (),
    grid: Sequence[str] = (),
    parallel: int = 1,
    out_dir: str | os.PathLike[str] | None = None,
    workspace: str | os.PathLike[str] | None = None,
    *,
    isolation: Literal["thread", "process"] = "thread",
    timeout: float | None = DEFAULT_TIMEOUT,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``agentlab eval``: run `notebook` once per parameter set, print the executed
    notebooks and a comparison table.

    Every run has its own kernel process; up to `parallel` run at once. With
    ``isolation="thread"`` (default) this process drives them from threads; with
    ``"process"`` each run is also driven from its own Python process (slower:
    each imports papermill and agentlab again). All runs share `workspace`, whose trace
    store takes concurrent writers (one segment file per process).

    Returns 0 when every gate of every run passed, 1 when a gate failed or a run
    raised, 2 for usage errors (malformed -p/--grid, missing notebook).
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        sets = parameter_sets(params, grid)
        if parallel < 1:
            raise UserError(f"--parallel must be at least 1 (got {parallel})")
        if isolation not in ("thread", "process"):
            raise UserError(f"isolation must be 'thread' or 'process', not {isolation!r}")
        if not Path(notebook).is_file():
            raise UserError(f"eval notebook {str(notebook)!r} not found")
        for s in sets:
            check_parameters(notebook, s)
        ws = resolve_workspace(workspace)
    except UserError as exc:
        print(f"agentlab eval: {exc}", file=stderr)
        return 2
    directory = Path(out_dir) if out_dir else ws / "evals" / "runs"
    jobs = [
        {
            "notebook": str(Path(notebook).absolute()),
            "parameters": s,
            "output_path": str(default_output_path(notebook, s, directory).absolute()),
            "workspace": str(ws),
            "timeout": timeout,
        }
        for s in sets
    ]
    if parallel == 1 or len(jobs) == 1:
        outcomes = [_execute_quietly(job) for job in jobs]
    else:  # the threads mostly wait: each run's cells execute in its own kernel
        run = _execute_quietly if isolation == "thread" else _execute_in_subprocess
        with ThreadPoolExecutor(min(parallel, len(jobs))) as pool:
            outcomes = list(pool.map(run, jobs))
    verdicts: list[str] = []
    metrics: list[dict[str, Any] | None] = []
    for outcome in outcomes:
        if isinstance(outcome, str):
            print(f"error: {outcome}", file=stderr)
            verdicts.append("ERROR")
            metrics.append(None)
            continue
        print(f"executed notebook: {outcome.executed_path}", file=stdout)
        if outcome.result.get("eval_id"):
            print(f"  eval id: {outcome.result['eval_id']}", file=stdout)
        if outcome.result.get("comparison"):
            print(f"  {comparison_line(outcome.result['comparison'])}", file=stdout)
        for failure in outcome.gate_failures:
            print(f"  gate failed: {failure}", file=stdout)
        verdicts.append("PASS" if outcome.passed else "FAIL")
        metrics.append(outcome.metrics)
    print(comparison_table(sets, metrics, verdicts), file=stdout)
    return 0 if all(v == "PASS" for v in verdicts) else 1
