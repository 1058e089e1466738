"""Notebook widgets over the trace store and live runs (the ``notebook`` extra).

Import this only in notebooks: it needs ipywidgets, matplotlib and pandas.
"""

from __future__ import annotations

from agentlab.errors import MissingExtraError

for _package in ("ipywidgets", "matplotlib", "pandas"):
    try:
        __import__(_package)
    except ImportError:
        raise MissingExtraError(_package, "notebook") from None

from agentlab.ui.approval import ApprovalWidget  # noqa: E402
from agentlab.ui.cost_dashboard import CostDashboard  # noqa: E402
from agentlab.ui.eval_compare import EvalCompare  # noqa: E402
from agentlab.ui.eval_report import EvalReportView  # noqa: E402
from agentlab.ui.inspector import RunInspector  # noqa: E402
from agentlab.ui.memory_inspector import MemoryInspector  # noqa: E402
from agentlab.ui.plan_view import PlanView  # noqa: E402
from agentlab.ui.progress import EvalProgress  # noqa: E402
from agentlab.ui.trace_explorer import TraceExplorer  # noqa: E402
from agentlab.ui.usage_view import UsageReport  # noqa: E402
from agentlab.ui.workbench import AgentWorkbench  # noqa: E402

__all__ = [
    "AgentWorkbench",
    "ApprovalWidget",
    "CostDashboard",
    "EvalCompare",
    "EvalProgress",
    "EvalReportView",
    "MemoryInspector",
    "PlanView",
    "RunInspector",
    "TraceExplorer",
    "UsageReport",
]
