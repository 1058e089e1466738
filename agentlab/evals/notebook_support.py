"""Helpers the eval notebook (``evals/eval_agent.ipynb``) calls from its cells.

They keep the notebook short and make its parameters forgiving: `model` may name a
provider model, a scripted test double (:data:`SCRIPTED_MODELS`) or a factory
(``"py:package.module:factory"``); `dataset` may be relative to the working
directory or to the repository; `gates` may be a dict or a JSON string.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentlab.errors import UserError
from agentlab.evals.compare import EvalComparison
from agentlab.evals.dataset import Dataset, load_dataset
from agentlab.evals.report import EvalReport, GateFailure
from agentlab.evals.scripted import SCRIPTED_MODELS
from agentlab.models import Model, infer_model

__all__ = [
    "EVAL_MIME_TYPE",
    "comparison_line",
    "display_eval",
    "eval_bundle",
    "load_cases",
    "parse_gates",
    "resolve_model",
]

EVAL_MIME_TYPE = "application/x.agentlab.eval+json"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_model(spec: Model | str) -> Model:
    """A model from a notebook parameter.

    * ``"scripted:echo"`` / ``"scripted:one_call"`` - the scripted doubles of
      :mod:`agentlab.evals.scripted` (free, instant; used by the benchmark).
    * ``"py:module:factory"`` - ``module.factory()`` (or ``module.factory`` if it
      is already a Model); `module` must be importable in the kernel.
    * anything else goes to :func:`agentlab.models.infer_model`.
    """
    if isinstance(spec, Model):
        return spec
    provider, _, name = spec.partition(":")
    if provider == "scripted" and name in SCRIPTED_MODELS:
        return SCRIPTED_MODELS[name]()
    if provider == "py":
        module_name, _, attr = name.partition(":")
        if not module_name or not attr:
            raise UserError(f"model {spec!r}: write a factory as 'py:package.module:factory'")
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"model {spec!r}: cannot import {module_name}.{attr}: {exc}") from exc
        model = target if isinstance(target, Model) else target()
        if not isinstance(model, Model):
            raise UserError(
                f"model {spec!r}: {attr}() returned {type(model).__name__}, not a Model"
            )
        return model
    return infer_model(spec)


def find_dataset(path: str | os.PathLike[str]) -> Path:
    """`path` if absolute or present relative to the working directory, else relative
    to the agentlab repository (so ``evals/support_agent.jsonl`` works anywhere)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate.absolute()
    in_repo = _REPO_ROOT / candidate
    if in_repo.exists():
        return in_repo
    raise UserError(
        f"dataset {str(path)!r} not found in {os.getcwd()} nor in {_REPO_ROOT}; "
        "pass an absolute path"
    )


def load_cases(path: str | os.PathLike[str], *, limit: int | None = None) -> Dataset:
    """The dataset at `path` (see :func:`find_dataset`), cut to its first `limit` cases."""
    dataset = load_dataset(find_dataset(path))
    if limit is None:
        return dataset
    if int(limit) < 1:
        raise UserError(f"limit must be at least 1 (got {limit})")
    return Dataset(dataset.cases[: int(limit)], name=dataset.name)


def parse_gates(gates: Mapping[str, str] | str | None) -> dict[str, str]:
    """Gates as a dict, from a dict, a JSON object string, or None (no gates)."""
    if gates is None or gates == "":
        return {}
    if isinstance(gates, str):
        try:
            gates = json.loads(gates)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"gates {gates!r} is not a JSON object; write e.g. "
                '\'{"task_completion_rate": ">=0.5"}\''
            ) from exc
    if not isinstance(gates, Mapping):
        raise UserError(f"gates must be a mapping of metric to condition, not {gates!r}")
    return {str(k): str(v) for k, v in gates.items()}


def eval_bundle(
    report: EvalReport,
    gates: Mapping[str, str],
    failures: list[GateFailure],
    parameters: Mapping[str, Any],
    comparison: EvalComparison | None = None,
) -> dict[str, Any]:
    """The MIME bundle the eval notebook displays last; the caller reads it back.

    It carries the metrics and gate verdicts, not the per-case rows: those are in
    the trace store (``results_query`` selects them), and copying thousands of
    them through the kernel and into the executed notebook costs more than the
    evaluation of cheap cases. With a `comparison` against a baseline run, its
    summary (flips, p-value, intervals; no per-case rows) is under ``comparison``.
    """
    payload = {
        **report.to_dict(results=False),
        "results_query": f"SELECT * FROM eval_results WHERE eval_id = '{report.eval_id}'",
        "gates": dict(gates),
        "gate_failures": [str(f) for f in failures],
        "parameters": json.loads(json.dumps(dict(parameters), default=str)),
        "comparison": None if comparison is None else comparison.to_dict(cases=False),
    }
    return {EVAL_MIME_TYPE: payload, "text/plain": _summary(payload)}


def comparison_line(comparison: Mapping[str, Any]) -> str:
    """One line about a comparison's dict (:meth:`EvalComparison.to_dict`)."""
    flips = comparison["flips"]
    return (
        f"against baseline {comparison['a']['eval_id'][:8]}: {flips['regressed']} regressed, "
        f"{flips['improved']} improved, McNemar p = {flips['p_value']:.4g} "
        f"({comparison['verdict']})"
    )


def _summary(payload: dict[str, Any]) -> str:
    failures = payload["gate_failures"]
    verdict = "gates PASS" if not failures else "gates FAIL: " + "; ".join(failures)
    against = f", {comparison_line(payload['comparison'])}" if payload["comparison"] else ""
    return (
        f"eval {payload['eval_id'][:8]} ({payload['metrics']['cases']} cases{against}): {verdict}"
    )


def display_eval(
    report: EvalReport,
    gates: Mapping[str, str],
    failures: list[GateFailure],
    parameters: Mapping[str, Any],
    comparison: EvalComparison | None = None,
) -> None:
    """Display the eval's MIME bundle (the notebook's machine-readable result)."""
    from IPython.display import display

    display(eval_bundle(report, gates, failures, parameters, comparison), raw=True)
