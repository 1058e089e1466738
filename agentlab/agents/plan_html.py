"""How plans show themselves in a notebook: a plan, a run's plans with each step's
status, and the diff of two versions.

Built from the shared primitives of :mod:`agentlab._html` (theme variables, rules
scoped to beat JupyterLab's), plus a few rules of its own for the step rows: the
step the run is at is tinted with the theme's brand colour, steps not reached yet
are muted, removed and added steps of a diff are marked red and green.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agentlab._html import box, clip, esc, table

if TYPE_CHECKING:
    from agentlab.agents.plan import (
        Plan,
        PlanDiff,
        PlanDiffEntry,
        PlanProgress,
        PlanStep,
        PlanVersion,
        StepState,
    )

__all__ = ["diff_html", "plan_html", "progress_html", "version_html"]

_SCOPE = ".agentlab:not(#agentlab-scope) table.agentlab-plan"
_STYLE = (
    "<style>"
    f"{_SCOPE} tr.next > td{{background:color-mix(in srgb,var(--jp-brand-color1,#1976d2) "
    "12%,transparent)}"
    f"{_SCOPE} tr.next > td:first-child{{box-shadow:inset 3px 0 0 "
    "var(--jp-brand-color1,#1976d2)}"
    f"{_SCOPE} tr.pending > td{{color:var(--jp-ui-font-color2,#666)}}"
    f"{_SCOPE} td.num{{text-align:right;white-space:nowrap}}"
    f"{_SCOPE} del{{color:var(--jp-ui-font-color2,#666)}}"
    f"{_SCOPE} .result{{max-width:28em;overflow-wrap:anywhere;font-size:12px}}"
    ".agentlab:not(#agentlab-scope) details.agentlab-plan-more > summary"
    "{cursor:pointer;margin:6px 0 2px}"
    "</style>"
)
_STATUS_CLASS = {
    "done": "pill ok",
    "failed": "pill bad",
    "next": "tag",
    "waiting": "tag warn",
    "pending": "muted",
}
_STATUS_TEXT = {
    "done": "done",
    "failed": "failed",
    "next": "next",
    "waiting": "waiting for approval",
    "pending": "pending",
}
_VERSION_TEXT = {
    "waiting": '<span class="warn">waiting for approval</span>',
    "current": '<span class="muted">in progress</span>',
    "done": '<span class="ok">done</span>',
    "failed": '<span class="bad">failed</span>',
}


def _after(step: PlanStep) -> str:
    return esc(", ".join(map(str, step.depends_on))) if step.depends_on else ""


def _step_cells(step: PlanStep) -> list[str]:
    return [esc(step.goal), f"<code>{esc(step.tool)}</code>", esc(step.args), _after(step)]


_STEP_HEADERS = ["goal", "tool", "argument hints", "after step"]


def plan_html(plan: Plan, title: str = "Plan") -> str:
    """A plan as a table of its numbered steps."""
    rows = [
        [f'<span class="nowrap">{n}</span>', *_step_cells(s)] for n, s in enumerate(plan.steps, 1)
    ]
    return box(esc(title), _STYLE + table(["#", *_STEP_HEADERS], rows, cls="agentlab-plan"))


def _state_row(state: StepState) -> list[str]:
    status = f'<span class="{_STATUS_CLASS[state.status]}">{_STATUS_TEXT[state.status]}</span>'
    if state.tries:
        status += f' <span class="muted">({state.tries} refused)</span>'
    result = ""
    if state.result:
        tone = "bad " if state.status == "failed" else ""
        result = f'<div class="{tone}result">{clip(_spaced(state.result), 240)}</div>'
    return [esc(state.number), status, *_step_cells(state.step), result]


def _spaced(result: str) -> str:
    """A JSON result with a space after each comma and colon (so it wraps between
    values, not inside them); other text as it is."""
    try:
        return json.dumps(json.loads(result), ensure_ascii=False)
    except ValueError:
        return result


def _steps_table(states: Sequence[StepState]) -> str:
    return table(
        ["#", "status", *_STEP_HEADERS, "result"],
        [_state_row(s) for s in states],
        cls="agentlab-plan",
        row_classes=[s.status if s.status in ("next", "pending") else "" for s in states],
    )


def version_html(version: PlanVersion) -> str:
    """One plan version: each step with its status and result."""
    return _steps_table(version.steps)


def _version_title(version: PlanVersion, before: PlanVersion | None = None) -> str:
    status = _VERSION_TEXT[version.status]
    failure = version.failure
    if failure is not None:
        status = f'<span class="bad">failed at step {failure.number}</span>'
    where = f"made at run step {version.run_step}" if version.run_step else "from the branch"
    title = f"Plan v{version.number} · {status} · {esc(where)}"
    if before is not None and before.failure is not None:
        title += esc(f", after v{before.number} failed at step {before.failure.number}")
    return title


def progress_html(progress: PlanProgress, *, diff: bool = True) -> str:
    """A run's plans: the latest with each step's status and result, the earlier
    versions folded, what changed from the one before (unless not `diff`), and
    plans not accepted."""
    current = progress.current
    if current is None:
        body = '<div class="muted">No plan yet: the next step makes it.</div>'
        return box("Plan", body + _rejected_html(progress))
    before = progress.versions[-2] if len(progress.versions) > 1 else None
    body = f"<div>{_version_title(current, before)}</div>" + version_html(current)
    if before is not None and diff:
        body += (
            f'<details class="agentlab-plan-more" open><summary>What changed from '
            f"v{before.number} to v{current.number}</summary>{_diff_table(progress.diff())}"
            "</details>"
        )
    for version in reversed(progress.versions[:-1]):
        body += (
            f'<details class="agentlab-plan-more"><summary>{_version_title(version)}</summary>'
            f"{version_html(version)}</details>"
        )
    return box("Plan", _STYLE + body + _rejected_html(progress))


def _rejected_html(progress: PlanProgress) -> str:
    if not progress.rejected:
        return ""
    items = "".join(
        f"<li>run step {esc(r.run_step)}: "
        f'<span class="{"warn" if r.status == "denied" else "bad"}">'
        f"{'declined' if r.status == 'denied' else 'not valid'}</span> — "
        f"{clip(r.message, 400)}</li>"
        for r in progress.rejected
    )
    n = len(progress.rejected)
    return (
        f'<details class="agentlab-plan-more"><summary>{n} plan{"s" if n > 1 else ""} '
        f"not accepted</summary><ul>{items}</ul></details>"
    )


_KIND = {
    "same": '<span class="muted">same</span>',
    "changed": '<span class="warn">changed</span>',
    "added": '<span class="pill ok">added</span>',
    "removed": '<span class="pill bad">removed</span>',
}


def _changed_cells(entry: PlanDiffEntry) -> list[str]:
    """The step's cells; a changed field shows the old value struck through."""
    (_, new) = entry.new or entry.old  # type: ignore[misc]
    cells = _step_cells(new)
    if entry.kind == "changed" and entry.old is not None:
        old_cells = _step_cells(entry.old[1])
        fields = ("goal", "tool", "args", "depends_on")
        for i, name in enumerate(fields):
            if name in entry.fields:
                cells[i] = f"<del>{old_cells[i] or '(none)'}</del> {cells[i] or '(none)'}"
    return cells


def _number(entry: PlanDiffEntry) -> str:
    old = entry.old[0] if entry.old else None
    new = entry.new[0] if entry.new else None
    if old is None or new is None or old == new:
        return esc(new or old)
    return esc(f"{old} → {new}")


def _diff_table(diff: PlanDiff) -> str:
    classes = {"added": "pass", "removed": "fail"}
    return table(
        ["#", "change", *_STEP_HEADERS],
        [[_number(e), _KIND[e.kind], *_changed_cells(e)] for e in diff.entries],
        cls="agentlab-plan",
        row_classes=[classes.get(e.kind, "") for e in diff.entries],
    )


def diff_html(diff: PlanDiff, title: str = "Plan diff") -> str:
    """The diff of two plans, step by step, under `title`."""
    if not diff.changed:
        return box(esc(title), '<div class="muted">The two plans are the same.</div>')
    return box(esc(title), _STYLE + _diff_table(diff))
