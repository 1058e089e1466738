"""agentlab: build AI agents in JupyterLab, trace every step, evaluate and ship them.

The public API, grouped. Names are imported on first use so that
``import agentlab`` stays fast; see ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # agents and runs
    "Agent": "agentlab.agents",
    "ReActAgent": "agentlab.agents",
    "Run": "agentlab.agents",
    "RunResult": "agentlab.agents",
    "Step": "agentlab.agents",
    "PlanExecuteAgent": "agentlab.agents",
    "Plan": "agentlab.agents",
    "PlanStep": "agentlab.agents",
    "StateMachineAgent": "agentlab.agents",
    "StateMachine": "agentlab.agents",
    "State": "agentlab.agents",
    "Transition": "agentlab.agents",
    "StateBudget": "agentlab.agents",
    "current_run": "agentlab._context",
    # replaying a stored run with a change
    "replay": "agentlab.agents",
    "replay_sync": "agentlab.agents",
    "RunDiff": "agentlab.agents",
    # tools
    "Tool": "agentlab.tools",
    "tool": "agentlab.tools",
    "Fallback": "agentlab.tools",
    "simpler": "agentlab.tools",
    "IdempotencyKey": "agentlab.tools",
    "lint_tools": "agentlab.tools",
    "LintReport": "agentlab.tools",
    "LintFinding": "agentlab.tools",
    # models and the layers around them
    "Model": "agentlab.models",
    "ModelResponse": "agentlab.models",
    "ModelSettings": "agentlab.models",
    "FunctionModel": "agentlab.models",
    "SchemaModel": "agentlab.models",
    "infer_model": "agentlab.models",
    "allow_model_requests": "agentlab.models",
    "FallbackModel": "agentlab.models",
    "RouterModel": "agentlab.models",
    "RetryPolicy": "agentlab.models",
    # limits
    "Budget": "agentlab.budgets",
    # messages and usage
    "AssistantMessage": "agentlab.messages",
    "SystemMessage": "agentlab.messages",
    "ToolCall": "agentlab.messages",
    "ToolDefinition": "agentlab.messages",
    "ToolMessage": "agentlab.messages",
    "UserMessage": "agentlab.messages",
    "Price": "agentlab.usage",
    "PriceTable": "agentlab.usage",
    "Usage": "agentlab.usage",
    # memory
    "Memory": "agentlab.memory",
    "WorkingMemory": "agentlab.memory",
    # tracing
    "TraceStore": "agentlab.tracing",
    # errors, by who acts
    "AgentlabError": "agentlab.errors",
    "UserError": "agentlab.errors",
    "RunError": "agentlab.errors",
    "ModelError": "agentlab.errors",
    "BudgetExceededError": "agentlab.errors",
    "ToolRetry": "agentlab.errors",
}

__all__ = list(_EXPORTS)  # grouped as above


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from agentlab._context import current_run
    from agentlab.agents import (
        Agent,
        Plan,
        PlanExecuteAgent,
        PlanStep,
        ReActAgent,
        Run,
        RunDiff,
        RunResult,
        State,
        StateBudget,
        StateMachine,
        StateMachineAgent,
        Step,
        Transition,
        replay,
        replay_sync,
    )
    from agentlab.budgets import Budget
    from agentlab.errors import (
        AgentlabError,
        BudgetExceededError,
        ModelError,
        RunError,
        ToolRetry,
        UserError,
    )
    from agentlab.messages import (
        AssistantMessage,
        SystemMessage,
        ToolCall,
        ToolDefinition,
        ToolMessage,
        UserMessage,
    )
    from agentlab.models import (
        FallbackModel,
        FunctionModel,
        Model,
        ModelResponse,
        ModelSettings,
        RetryPolicy,
        RouterModel,
        SchemaModel,
        allow_model_requests,
        infer_model,
    )
    from agentlab.tools import (
        Fallback,
        IdempotencyKey,
        LintFinding,
        LintReport,
        Tool,
        lint_tools,
        simpler,
        tool,
    )
    from agentlab.tracing import TraceStore
    from agentlab.usage import Price, PriceTable, Usage
