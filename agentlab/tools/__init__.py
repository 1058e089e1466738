"""Tools: typed functions the model can call."""

from agentlab.tools.lint import LintFinding, LintReport, lint_tools
from agentlab.tools.tool import (
    Fallback,
    IdempotencyKey,
    Tool,
    format_validation_error,
    serialize_result,
    simpler,
    tool,
)

__all__ = [
    "Fallback",
    "IdempotencyKey",
    "LintFinding",
    "LintReport",
    "Tool",
    "format_validation_error",
    "lint_tools",
    "serialize_result",
    "simpler",
    "tool",
]
