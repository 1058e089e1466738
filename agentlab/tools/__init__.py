"""Tools: typed functions the model can call."""

from agentlab.tools.tool import Tool, format_validation_error, serialize_result, tool

__all__ = ["Tool", "format_validation_error", "serialize_result", "tool"]
