"""How agents, runs, steps and results show themselves in a notebook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from agentlab._html import (
    box,
    cost_text,
    esc,
    fields,
    ms_text,
    pre,
    pretty_json,
    status_html,
    table,
)

if TYPE_CHECKING:
    from agentlab.agents.agent import Agent
    from agentlab.agents.records import RunResult, Step, ToolCallRecord
    from agentlab.agents.run import Run

__all__ = ["agent_html", "result_html", "run_html", "step_html"]


def agent_html(agent: Agent) -> str:
    """An agent: model, instructions, limits and a table of its tools."""
    tools = table(
        ["tool", "description", "parameters"],
        (
            [
                f"<code>{esc(t.name)}</code>",
                pre(t.description),
                esc(", ".join(t.definition.parameters.get("properties", {})) or "(none)"),
            ]
            for t in agent.tools
        ),
    )
    body = fields(
        {
            "model": f"<code>{esc(agent.model.name)}</code>",
            "instructions": pre(agent.instructions),
            "limits": esc(f"max_steps={agent.max_steps}, max_retries={agent.max_retries}"),
            "tools": tools if agent.tools else "(none)",
        }
    )
    return box(f"{esc(type(agent).__name__)} <code>{esc(agent.name)}</code>", body)


def _tool_calls_html(calls: Sequence[ToolCallRecord]) -> str:
    return table(
        ["tool", "arguments", "result", "status", "latency"],
        (
            [
                f"<code>{esc(c.name)}</code>",
                pre(pretty_json(c.arguments)),
                pre(pretty_json(c.result)),
                status_html(c.status),
                esc(ms_text(c.latency_ms)),
            ]
            for c in calls
        ),
    )


def _step_row(step: Step) -> list[str]:
    response = step.response
    said = pre(response.content) if response is not None and response.content else ""
    if step.error:
        said += f'<div class="bad">{esc(step.error)}</div>'
    return [
        esc(step.index),
        f'<span class="tag">{esc(step.kind)}</span>',
        said,
        _tool_calls_html(step.tool_calls) if step.tool_calls else "",
        esc(f"{step.usage.input_tokens} in / {step.usage.output_tokens} out"),
        esc(cost_text(step.cost)),
        esc(ms_text(step.latency_ms)),
    ]


_STEP_HEADERS = ["step", "kind", "model said", "tool calls", "tokens", "cost", "latency"]


def step_html(step: Step) -> str:
    """One step: the model's reply, its tool calls, tokens, cost and latency."""
    return box(f"Step {esc(step.index)}", table(_STEP_HEADERS, [_step_row(step)]))


def _ending(output: str | None, explanation: str | None) -> str:
    if output is not None:
        return f"<b>Answer</b>{pre(output)}"
    if explanation:
        return f'<b class="bad">Why it stopped</b>{pre(explanation)}'
    return ""


def run_html(run: Run) -> str:
    """A run so far: status, totals, each step, and the answer or explanation."""
    usage = run.usage
    summary = fields(
        {
            "status": status_html(run.status),
            "input": pre(run.input),
            "agent / model": esc(f"{run.agent.name} / {run.agent.model.name}"),
            "steps": esc(len(run.steps)),
            "tokens": esc(f"{usage.input_tokens} in / {usage.output_tokens} out"),
            "cost": esc(cost_text(run.cost)),
        }
    )
    steps = table(_STEP_HEADERS, (_step_row(s) for s in run.steps)) if run.steps else ""
    ending = _ending(run.output, run.explanation)
    if not run.done:
        ending += '<div class="muted">Running: call run.step_sync() for the next step.</div>'
    return box(f"Run <code>{esc(run.id[:8])}</code>", summary + steps + ending)


def result_html(result: RunResult) -> str:
    """A finished run's result: status, answer or explanation, and totals."""
    usage = result.usage
    summary = fields(
        {
            "status": status_html(result.status),
            "steps": esc(result.steps),
            "tools called": esc(", ".join(result.tools_called) or "(none)"),
            "tokens": esc(f"{usage.input_tokens} in / {usage.output_tokens} out"),
            "cost": esc(cost_text(result.cost)),
            "latency": esc(ms_text(result.latency_ms)),
        }
    )
    ending = _ending(result.output, result.explanation)
    return box(f"RunResult <code>{esc(result.run_id[:8])}</code>", summary + ending)
