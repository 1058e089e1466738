"""Evaluation: JSONL datasets of cases, scorers, metrics, gates, and a runner that
records results in the trace store next to the runs they came from.

>>> report = evaluate_sync(agent, "evals/support_agent.jsonl")
>>> print(report)
>>> report.check_gates({"task_completion_rate": ">=0.6"})
>>> TraceStore().sql("SELECT * FROM eval_results JOIN runs USING (run_id)")
"""

from agentlab.evals.dataset import (
    Case,
    Dataset,
    DatasetError,
    ExpectedOutcome,
    ExpectedToolCall,
    ToolCallSpec,
    load_dataset,
)
from agentlab.evals.metrics import EvalMetrics, TagCounts, compute_metrics
from agentlab.evals.report import GATE_METRICS, EvalReport, GateFailure
from agentlab.evals.results import CaseResult
from agentlab.evals.runner import evaluate, evaluate_sync
from agentlab.evals.scorers import Score, Scorer, build_scorer, registry, scorer
from agentlab.evals.toolcalls import MadeCall, ToolCallMatch, made_calls, match_tool_calls

__all__ = [  # noqa: RUF022 - grouped: datasets, running, scoring, metrics and reports
    "Case",
    "Dataset",
    "DatasetError",
    "ExpectedOutcome",
    "ExpectedToolCall",
    "ToolCallSpec",
    "load_dataset",
    "evaluate",
    "evaluate_sync",
    "Score",
    "Scorer",
    "build_scorer",
    "registry",
    "scorer",
    "MadeCall",
    "ToolCallMatch",
    "made_calls",
    "match_tool_calls",
    "CaseResult",
    "EvalMetrics",
    "TagCounts",
    "compute_metrics",
    "EvalReport",
    "GATE_METRICS",
    "GateFailure",
]
