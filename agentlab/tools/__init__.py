"""Tools: typed functions the model can call."""

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
    "Tool",
    "format_validation_error",
    "serialize_result",
    "simpler",
    "tool",
]
