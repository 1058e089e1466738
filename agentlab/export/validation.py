"""The export gates: the tool lint, and the eval notebook run with papermill.

The lint gate (:func:`lint_gate`) lints the tools of the agent the exported cells
build and refuses lint errors unless overridden.

The verdict comes from :func:`agentlab.evals.notebook.execute_eval_notebook` when
it is installed, else from a built-in runner that reads the custom MIME output
``application/x.agentlab.eval+json`` (``{"passed", "gate_failures", "metrics"}``)
of the executed notebook. Either way it is one call, :func:`run_eval_notebook`;
tests may pass any function with the same signature as ``validator``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.export.cells import ExportError
from agentlab.tools.lint import lint_tools

__all__ = ["EVAL_MIME", "GateResult", "Validator", "lint_gate", "run_eval_notebook"]

EVAL_MIME = "application/x.agentlab.eval+json"


@dataclass(frozen=True)
class GateResult:
    """The eval notebook's verdict: metrics, failed gates, and where it was saved."""

    passed: bool
    gate_failures: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    executed_path: Path | None = None


Validator = Callable[[Path, Mapping[str, Any], Path], GateResult]
"""``validator(eval_notebook, parameters, output_path) -> GateResult``."""


def _from_eval(result: Any) -> GateResult:
    """Adapt a ``NotebookEval`` (duck-typed) to a :class:`GateResult`."""
    executed = getattr(result, "executed_path", None)
    shown = (getattr(result, "result", None) or {}).get("parameters")  # effective values
    return GateResult(
        passed=bool(result.passed),
        gate_failures=[str(f) for f in result.gate_failures],
        metrics=dict(getattr(result, "metrics", {}) or {}),
        parameters=dict(shown or getattr(result, "parameters", {}) or {}),
        executed_path=Path(executed) if executed else None,
    )


def _read_verdict(nb: Any, path: Path) -> GateResult | None:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if EVAL_MIME in data:
                verdict = data[EVAL_MIME]
                failures = [str(f) for f in verdict.get("gate_failures", [])]
                return GateResult(
                    passed=bool(verdict.get("passed", not failures)) and not failures,
                    gate_failures=failures,
                    metrics=dict(verdict.get("metrics", {})),
                    parameters=dict(verdict.get("parameters", {})),
                    executed_path=path,
                )
    return None


def papermill_eval(
    eval_notebook: Path, parameters: Mapping[str, Any], output_path: Path
) -> GateResult:
    """Execute `eval_notebook` with papermill and read its ``EVAL_MIME`` output."""
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError
    except ImportError as e:
        raise ExportError(
            "Validating an export runs the eval notebook with papermill: "
            "pip install 'agentlab-toolkit[notebook]'"
        ) from e
    output_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        nb = papermill.execute_notebook(
            str(eval_notebook),
            str(output_path),
            parameters=dict(parameters),
            progress_bar=sys.stderr.isatty(),  # cells done, on a terminal
            log_output=False,
        )
    except PapermillExecutionError as e:
        raise ExportError(
            f"The eval notebook {eval_notebook} failed in cell {e.cell_index} "
            f"({e.ename}: {e.evalue}); see {output_path}. Fix it, then export again."
        ) from None
    verdict = _read_verdict(nb, output_path)
    if verdict is None:
        raise ExportError(
            f"The eval notebook {eval_notebook} did not display its verdict: it must "
            f"display {{{EVAL_MIME!r}: {{'passed': ..., 'gate_failures': [...], "
            f"'metrics': {{...}}}}}} (see {output_path})."
        )
    return verdict


def run_eval_notebook(
    eval_notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None,
    output_path: str | os.PathLike[str],
) -> GateResult:
    """Run the eval notebook once and return its verdict (the default validator).

    The kernel runs in the current directory, like ``agentlab eval``.
    """
    path, out = Path(eval_notebook), Path(output_path)
    if not path.is_file():
        raise ExportError(f"No eval notebook at {path}; pass eval_notebook=PATH.")
    try:
        from agentlab.evals.notebook import execute_eval_notebook
    except ImportError:
        return papermill_eval(path, parameters or {}, out)
    return _from_eval(execute_eval_notebook(path, dict(parameters or {}), output_path=out))


def lint_gate(agent: Any, notebook: str, *, allow_lint_errors: bool = False) -> dict[str, Any]:
    """Lint the tools of `agent` (built from `notebook`'s export cells) for ``export.json``.

    Raises :class:`ExportError` listing the errors and the override, unless
    `allow_lint_errors` (then recorded as ``"override": true``). An object without
    tools (a stand-in) is recorded as skipped.
    """
    if not hasattr(agent, "tools"):
        return {"skipped": f"the exported agent is a {type(agent).__name__}, without tools"}
    report = lint_tools(agent)
    if report.errors and not allow_lint_errors:
        listed = "\n".join(f"- {finding}" for finding in report.errors)
        raise ExportError(
            f"Not exported: the tools of {report.subject} from {notebook} have lint errors:\n"
            f"{listed}\nFix them (`agentlab lint {notebook}` shows every finding), or pass "
            "allow_lint_errors=True (CLI: --allow-lint-errors) to export anyway (recorded in "
            "export.json)."
        )
    return {
        "passed": report.ok,
        "override": not report.ok,
        "counts": report.counts(),
        "errors": [finding.to_dict() for finding in report.errors],
    }
