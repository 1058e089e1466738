"""How a tool shows itself in a notebook."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from agentlab._html import box, esc, fields, pre

if TYPE_CHECKING:
    from agentlab.tools.tool import Tool

__all__ = ["tool_html"]


def tool_html(tool: Tool) -> str:
    """A tool: name, description and the exact JSON schema the model sees."""
    d = tool.definition
    schema = json.dumps(d.parameters, indent=2, ensure_ascii=False)
    body = fields(
        {
            "description": pre(d.description),
            "parameters (JSON schema sent to the model)": pre(schema, whole=True),
            "timeout": esc(f"{tool.timeout:g} s" if tool.timeout else "none"),
        }
    )
    return box(f"Tool <code>{esc(d.name)}</code>", body)
