"""Evaluation: JSONL datasets of cases, scorers, metrics, gates, and a runner that
records results in the trace store next to the runs they came from.

>>> report = evaluate_sync(agent, "evals/support_agent.jsonl")
>>> print(report)
>>> report.check_gates({"task_completion_rate": ">=0.6"}, baseline="1a2b3c4d")
>>> print(compare_evals("1a2b3c4d", report))  # case by case, deltas, paired statistics
>>> TraceStore().sql("SELECT * FROM eval_results JOIN runs USING (run_id)")
"""

from agentlab.evals.compare import EvalComparison, compare_evals
from agentlab.evals.dataset import (
    Case,
    Dataset,
    DatasetDefaults,
    DatasetError,
    ExpectedOutcome,
    ExpectedToolCall,
    ToolCallSpec,
    load_dataset,
)
from agentlab.evals.executors import (
    AgentSpec,
    Executor,
    LocalExecutor,
    RayExecutor,
    case_random,
)
from agentlab.evals.function_calling import CHECKER_DEFAULTS, load_function_calling
from agentlab.evals.metrics import EvalMetrics, TagCounts, compute_metrics
from agentlab.evals.replay import EvalReplay, replay_eval, replay_eval_sync
from agentlab.evals.report import GATE_METRICS, REGRESSION_GATE, EvalReport, GateFailure
from agentlab.evals.results import CaseResult
from agentlab.evals.runner import evaluate, evaluate_sync, reproducible_report
from agentlab.evals.scorers import Score, Scorer, build_scorer, registry, scorer
from agentlab.evals.side_by_side import SideBySide, side_by_side
from agentlab.evals.stored import load_eval
from agentlab.evals.toolcalls import MadeCall, ToolCallMatch, made_calls, match_tool_calls

__all__ = [  # noqa: RUF022 - grouped: datasets, running, scoring, metrics, reports, comparisons
    "Case",
    "Dataset",
    "DatasetDefaults",
    "DatasetError",
    "ExpectedOutcome",
    "ExpectedToolCall",
    "ToolCallSpec",
    "load_dataset",
    "load_function_calling",
    "CHECKER_DEFAULTS",
    "evaluate",
    "evaluate_sync",
    "AgentSpec",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "case_random",
    "reproducible_report",
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
    "SideBySide",
    "side_by_side",
    "EvalMetrics",
    "TagCounts",
    "compute_metrics",
    "EvalReport",
    "GATE_METRICS",
    "GateFailure",
    "REGRESSION_GATE",
    "EvalComparison",
    "compare_evals",
    "load_eval",
    "EvalReplay",
    "replay_eval",
    "replay_eval_sync",
]
