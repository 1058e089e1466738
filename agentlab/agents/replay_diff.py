"""A replayed run against its original, step by step (what :func:`~agentlab.agents.replaying.replay`
returns): which steps stayed the same, which changed, which were added or dropped,
and how the outcome, the spend and the tool calls moved."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentlab import _html
from agentlab.agents.records import RunResult, Step

__all__ = ["RunDiff", "StepDiff", "StepView", "diff_runs"]

Change = Literal["same", "changed", "added", "removed"]


@dataclass(frozen=True, slots=True)
class StepView:
    """What one step did, in comparable form: the reply (its text and the calls it
    asked for) and each tool call's name, arguments, status and result."""

    step: int
    reply: str
    tools: tuple[tuple[str, str, str, str], ...]
    tokens: int
    cost: float | None
    replayed: bool  # the reply came from the original run, not from the model

    @property
    def content(self) -> tuple[str, tuple[tuple[str, str, str, str], ...]]:
        return self.reply, self.tools


@dataclass(frozen=True, slots=True)
class StepDiff:
    """One step of the original and of the replay (either may be missing)."""

    step: int
    change: Change
    original: StepView | None
    replay: StepView | None
    replayed_calls: int = 0  # tool calls of this step served from the trace
    refused_calls: int = 0  # side-effecting calls a replay does not make


@dataclass(frozen=True)
class RunDiff:
    """A replay of run `original_id` (the new run is `replay`), step by step."""

    original_id: str
    original: Mapping[str, Any]
    replay: RunResult
    steps: list[StepDiff]

    @property
    def changed(self) -> bool:
        """Whether any step or the outcome differs from the original."""
        return any(s.change != "same" for s in self.steps) or (
            self.original.get("status"),
            self.original.get("output"),
        ) != (self.replay.status, self.replay.output)

    @property
    def first_change(self) -> int | None:
        """The first step that differs (None: every step is the same)."""
        return next((s.step for s in self.steps if s.change != "same"), None)

    def to_dict(self) -> dict[str, Any]:
        """The diff as JSON-able data."""
        return {
            "original": self.original_id,
            "replay": self.replay.run_id,
            "outcome": self._outcome(),
            "first_change": self.first_change,
            "steps": [
                {
                    "step": s.step,
                    "change": s.change,
                    "original": None if s.original is None else _view_dict(s.original),
                    "replay": None if s.replay is None else _view_dict(s.replay),
                    "replayed_calls": s.replayed_calls,
                    "refused_calls": s.refused_calls,
                }
                for s in self.steps
            ],
        }

    def _outcome(self) -> dict[str, list[Any]]:
        o, r = self.original, self.replay
        return {
            "status": [o.get("status"), r.status],
            "output": [o.get("output"), r.output],
            "steps": [o.get("steps"), r.steps],
            "cost": [o.get("cost"), r.cost],
            "tokens": [
                (o.get("input_tokens") or 0) + (o.get("output_tokens") or 0),
                r.usage.input_tokens + r.usage.output_tokens,
            ],
        }

    def __str__(self) -> str:
        lines = [f"Replay {self.replay.run_id[:8]} of run {self.original_id[:8]}:"]
        for name, (before, after) in self._outcome().items():
            mark = "  " if before == after else "* "
            lines.append(f"{mark}{name}: {_short(before)} -> {_short(after)}")
        for s in self.steps:
            lines.append(f"step {s.step}: {s.change}{_sources(s)}")
            if s.change == "same":
                continue
            for label, view in (("  original", s.original), ("  replay  ", s.replay)):
                if view is not None:
                    lines.append(f"{label}: {_short(_summary(view), 160)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        outcome = [
            [
                _html.esc(name),
                _html.pre(_short(before, 400)),
                _html.pre(_short(after, 400)),
                '<span class="muted">same</span>'
                if before == after
                else '<span class="warn">changed</span>',
            ]
            for name, (before, after) in self._outcome().items()
        ]
        rows = [
            [
                _html.esc(s.step),
                _CHANGE_HTML[s.change] + f'<div class="muted">{_html.esc(_sources(s))}</div>',
                _html.pre(_summary(s.original)) if s.original else "",
                _html.pre(_summary(s.replay)) if s.replay else "",
            ]
            for s in self.steps
        ]
        title = (
            f"<h4>Replay <code>{_html.esc(self.replay.run_id[:8])}</code> of run "
            f"<code>{_html.esc(self.original_id[:8])}</code></h4>"
        )
        return (
            _html.STYLE
            + '<div class="agentlab">'
            + title
            + _html.table(["", "original", "replay", ""], outcome)
            + _html.table(["step", "change", "original", "replay"], rows)
            + "</div>"
        )


_CHANGE_HTML = {
    "same": '<span class="muted">same</span>',
    "changed": '<span class="warn">changed</span>',
    "added": '<span class="ok">added</span>',
    "removed": '<span class="bad">removed</span>',
}


def diff_runs(
    original: Sequence[Step],
    replay_steps: Sequence[Step],
    *,
    original_row: Mapping[str, Any],
    replay: RunResult,
    replayed_calls: Collection[tuple[int, str]] = (),
    refused_calls: Collection[tuple[int, str]] = (),
) -> RunDiff:
    """Compare the steps of a run with those of its replay, index by index."""
    before = {s.index: _view(s) for s in original}
    after = {s.index: _view(s) for s in replay_steps}
    steps = []
    for index in sorted(before.keys() | after.keys()):
        a, b = before.get(index), after.get(index)
        change: Change = (
            "added"
            if a is None
            else "removed"
            if b is None
            else "same"
            if a.content == b.content
            else "changed"
        )
        steps.append(
            StepDiff(
                index,
                change,
                a,
                b,
                replayed_calls=sum(1 for step, _ in replayed_calls if step == index),
                refused_calls=sum(1 for step, _ in refused_calls if step == index),
            )
        )
    return RunDiff(str(original_row["run_id"]), dict(original_row), replay, steps)


def _view(step: Step) -> StepView:
    reply = step.response
    if reply is None:
        text = f"(no reply: {step.error})"
    else:
        calls = [f"→ {c.name}({c.arguments})" for c in reply.tool_calls]
        text = "\n".join([*([reply.content] if reply.content else []), *calls])
    return StepView(
        step=step.index,
        reply=text,
        tools=tuple((c.name, c.arguments, c.status, c.result) for c in step.tool_calls),
        tokens=step.usage.input_tokens + step.usage.output_tokens,
        cost=step.cost,
        replayed=bool(step.route and step.route.startswith("replayed")),
    )


def _view_dict(view: StepView) -> dict[str, Any]:
    return {
        "reply": view.reply,
        "tools": [
            {"tool": n, "arguments": a, "status": s, "result": r} for n, a, s, r in view.tools
        ],
        "tokens": view.tokens,
        "cost": view.cost,
        "replayed": view.replayed,
    }


def _summary(view: StepView | None) -> str:
    if view is None:
        return ""
    lines = [view.reply]
    lines += [f"{name} [{status}]: {result}" for name, _, status, result in view.tools]
    return "\n".join(lines)


def _sources(s: StepDiff) -> str:
    """Where the replay's step came from: the trace or the model and tools."""
    parts = []
    if s.replay is not None:
        parts.append("reply replayed" if s.replay.replayed else "model asked")
    if s.replayed_calls:
        parts.append(f"{s.replayed_calls} tool result(s) replayed")
    if s.refused_calls:
        parts.append(f"{s.refused_calls} side-effecting call(s) not made")
    return f" ({', '.join(parts)})" if parts else ""


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split()) if value is not None else "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"
