"""How agents, runs, steps and results show themselves in a notebook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentlab._html import (
    attempts_html,
    box,
    callout,
    cost_text,
    esc,
    failure_html,
    fields,
    ms_text,
    pending_html,
    pre,
    pretty_json,
    requests_detail,
    status_html,
    table,
)

if TYPE_CHECKING:
    from agentlab.agents.agent import Agent
    from agentlab.agents.records import RunResult, Step, ToolCallRecord
    from agentlab.agents.run import Run

__all__ = ["agent_html", "paused_html", "result_html", "run_html", "step_html"]


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
    asked = list(response.tool_calls) if response is not None else []
    not_run = asked[len(step.tool_calls) :]  # e.g. waiting for a person's approval
    calls = _tool_calls_html(step.tool_calls) if step.tool_calls else ""
    calls += "".join(
        f'<div><code>{esc(c.name)}</code> <span class="warn">not run yet</span></div>'
        for c in not_run
    )
    return [
        esc(step.index),
        f'<span class="tag">{esc(step.kind)}</span>',
        said,
        calls,
        esc(f"{step.usage.input_tokens} in / {step.usage.output_tokens} out"),
        esc(cost_text(step.cost)),
        esc(ms_text(step.latency_ms)),
    ]


_STEP_HEADERS = ["step", "kind", "model said", "tool calls", "tokens", "cost", "latency"]


def _steps_table(steps: Sequence[Step]) -> str:
    """Steps as rows; a step that was retried or fell back gets a row of its requests."""
    details = {}
    for i, s in enumerate(steps):
        shown = attempts_html(s.attempts, s.served_by, s.route, s.fallbacks)
        if shown:
            details[i] = requests_detail(s.index, shown)
    return table(_STEP_HEADERS, [_step_row(s) for s in steps], details=details)


def step_html(step: Step) -> str:
    """One step: the model's reply, its tool calls, tokens, cost and latency."""
    return box(f"Step {esc(step.index)}", _steps_table([step]))


_HOW = {
    "approval": "<code>run.resume_sync(approve=True)</code>, or "
    '<code>run.resume_sync(approve=False, note="why")</code> to decline',
    "escalation": '<code>run.resume_sync(answer="...")</code> to answer for the user, '
    "<code>approve=True</code> to retry, <code>approve=False</code> to let it fail",
}


def paused_html(pending: dict[str, Any], run_id: str | None = None) -> str:
    """What a paused run waits for, and how to give it a decision (for a run object,
    or with `run_id` through the agent, from any process)."""
    escalated = pending.get("kind") == "escalation"
    title = "Needs a person" if escalated else "Waiting for approval"
    how = _HOW["escalation" if escalated else "approval"]
    if run_id is None:
        widget = "ApprovalWidget(run)"
    else:
        widget = f"ApprovalWidget({run_id!r}, agent=agent)"
        how = how.replace("run.resume_sync(", f"agent.resume_sync({esc(repr(run_id))}, ")
    return callout(
        f'<b class="warn">{title}</b>'
        + pending_html(pending)
        + f'<div class="muted">Decide with <code>{esc(widget)}</code> '
        "(<code>from agentlab.ui import ApprovalWidget</code>), or with "
        f"{how}.</div>",
        "warn",
    )


def _ending(
    output: str | None, explanation: str | None, failure: dict[str, Any] | None = None
) -> str:
    if output is not None:
        return f"<b>Answer</b>{pre(output)}"
    if failure:
        body = failure_html(failure, requests=False)  # the steps show them
        return callout(f'<b class="bad">Why it stopped</b>{body}', "bad")
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
    steps = run.agent.structure_html(run) + (_steps_table(run.steps) if run.steps else "")
    failure = None if run.failure is None else run.failure.to_dict()
    ending = _ending(run.output, run.explanation, failure)
    if run.status == "paused" and run.pending is not None:
        ending += paused_html(run.pending)
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
    ending = _ending(result.output, result.explanation, result.failure)
    if result.status == "paused" and result.pending is not None:
        ending += paused_html(result.pending, result.run_id)
    return box(f"RunResult <code>{esc(result.run_id[:8])}</code>", summary + ending)
