"""`ApprovalWidget`: a person's decision on a paused run, in a notebook.

A run pauses before a tool marked ``@tool(requires_approval=True)`` runs (approve
or deny, with a note), or, with ``Agent(escalate=True)``, when the model or a tool
failed for good (answer for the user, retry, or let it fail). The widget shows what
the run waits for, resumes it through the public API (``Run.resume_sync`` for a run
object; ``Agent.resume_sync`` for a run id, from the checkpoint in the trace store,
so a run paused by another process can be decided here), then shows where the run
got to: its answer, its next pause (with the next decision), or why it failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from agentlab import _html
from agentlab.errors import UserError
from agentlab.tracing import TraceStore

if TYPE_CHECKING:
    from agentlab.agents.agent import Agent
    from agentlab.agents.records import RunResult
    from agentlab.agents.run import Run

__all__ = ["ApprovalWidget"]


class ApprovalWidget(widgets.VBox):
    """Decide on a paused run: ``ApprovalWidget(run)`` for a run object of this
    process, or ``ApprovalWidget(run_id, agent=agent)`` for a run in the trace store
    (`agent`: the agent that started it, rebuilt; `store`: default, the agent's).

    Waiting for approval: Approve / Deny, with an optional note (a denial's note is
    told to the model). Escalated: Answer (the text is the run's answer for the
    user) / Retry / Let it fail. A click resumes the run; the buttons are disabled
    until it paused again, completed or failed. Errors are shown in ``message``.

    Attributes: ``status`` and ``pending`` (the run's state as last seen),
    ``result`` (the last :class:`RunResult`, None before a decision), ``request_view``,
    ``note``, ``answer``, ``approve_button``, ``deny_button``, ``answer_button``,
    ``retry_button``, ``fail_button``, ``message``, ``outcome``.
    """

    def __init__(
        self,
        run: Run | str,
        agent: Agent | None = None,
        *,
        store: TraceStore | None = None,
    ) -> None:
        if isinstance(run, str):
            if agent is None:
                raise UserError(
                    f"ApprovalWidget({run!r}) needs the agent that started the run to resume "
                    "it: ApprovalWidget(run_id, agent=build_agent())."
                )
            self.run: Run | None = None
            self.run_id = run
            self.store: TraceStore | None = store or TraceStore(
                getattr(agent.tracer, "workspace", None)
            )
        else:
            self.run = run
            self.run_id = run.id
            self.store = store
        self.agent = agent
        self.status: str | None = None
        self.pending: dict[str, Any] | None = None
        self.result: RunResult | None = None
        self._busy = False

        self.header = widgets.HTML()
        self.request_view = widgets.HTML()
        self.note = widgets.Text(
            placeholder="Note (optional): why; a denial's note is told to the model",
            layout=widgets.Layout(width="420px"),
        )
        self.approve_button = self._button("Approve", "check", "success", self._on_approve)
        self.deny_button = self._button("Deny", "times", "danger", self._on_deny)
        self.answer = widgets.Textarea(
            placeholder="The answer for the user (ends the run as completed)",
            layout=widgets.Layout(width="560px", height="64px"),
        )
        self.answer_button = self._button("Answer", "reply", "primary", self._on_answer)
        # The default style follows the theme; the "warning" one is white on light orange.
        self.retry_button = self._button("Retry", "redo", "", self._on_retry)
        self.fail_button = self._button("Let it fail", "ban", "danger", self._on_fail)
        self.approval_controls = widgets.HBox([self.approve_button, self.deny_button, self.note])
        self.escalation_controls = widgets.VBox(
            [
                self.answer,
                widgets.HBox([self.answer_button, self.retry_button, self.fail_button]),
            ]
        )
        self.message = widgets.HTML()
        self.outcome = widgets.HTML()
        super().__init__(
            [
                self.header,
                self.request_view,
                self.approval_controls,
                self.escalation_controls,
                self.message,
                self.outcome,
            ]
        )
        self.add_class("agentlab-approval")
        self.reload()
        if self.status is not None and self.pending is None:
            self.message.value = _box(
                f'<div class="muted">Run {_html.esc(self.run_id)} is {_html.esc(self.status)}, '
                "not paused: there is nothing to decide.</div>"
            )

    # -- decisions (what the buttons call) ------------------------------------------------

    def approve(self, note: str | None = None) -> None:
        """Approve the pending tool call (or, for an escalation, retry)."""
        self._resume(approve=True, note=note)

    def deny(self, note: str | None = None) -> None:
        """Decline the pending tool call (the model is told, with `note`), or for an
        escalation let the run fail."""
        self._resume(approve=False, note=note)

    def retry(self) -> None:
        """An escalated run: try the failing model or tool again."""
        self._resume(approve=True)

    def let_fail(self) -> None:
        """An escalated run: end it as failed, with its failure record."""
        self._resume(approve=False)

    def submit_answer(self, answer: str) -> None:
        """Answer an escalated run for the user (the run completes with `answer`), or
        say what a call whose outcome was unknown did (the model is told)."""
        if not answer.strip():
            self._error(f"Write the answer first, then click {self.answer_button.description}.")
            return
        self._resume(answer=answer)

    def reload(self) -> None:
        """Read the run's state again (the run object, or the trace store) and redraw."""
        if self.run is not None:
            run = self.run
            failure = None if run.failure is None else run.failure.to_dict()
            self._show(run.status, run.pending, run.output, failure, run.explanation)
            return
        assert self.store is not None
        try:
            row = self.store.run(self.run_id)
        except Exception as exc:  # a store that cannot be read: say so in the widget
            self._show(None, None, None, None)
            self._error(f"Could not read run {self.run_id} from {self.store.workspace}: {exc}")
            return
        if row is None:
            self._show(None, None, None, None)
            self._error(f"No run {self.run_id!r} in {self.store.workspace}; check the id.")
            return
        self._show(
            row["status"],
            row.get("pending"),
            row.get("output"),
            row.get("failure"),
            row.get("explanation"),
        )

    # -- internals ------------------------------------------------------------------------

    def _button(self, description: str, icon: str, style: str, handler: Any) -> widgets.Button:
        button = widgets.Button(description=description, icon=icon, button_style=style)
        button.on_click(handler)
        return button

    @property
    def _inputs(self) -> tuple[widgets.Button | widgets.Text | widgets.Textarea, ...]:
        """Everything a person can click or type into."""
        return (
            self.approve_button,
            self.deny_button,
            self.note,
            self.answer_button,
            self.retry_button,
            self.fail_button,
            self.answer,
        )

    def _on_approve(self, button: widgets.Button) -> None:
        if not button.disabled:
            self.approve(self.note.value.strip() or None)

    def _on_deny(self, button: widgets.Button) -> None:
        if not button.disabled:
            self.deny(self.note.value.strip() or None)

    def _on_answer(self, button: widgets.Button) -> None:
        if not button.disabled:
            self.submit_answer(self.answer.value)

    def _on_retry(self, button: widgets.Button) -> None:
        if not button.disabled:
            self.retry()

    def _on_fail(self, button: widgets.Button) -> None:
        if not button.disabled:
            self.let_fail()

    def _resume(
        self, *, approve: bool | None = None, note: str | None = None, answer: str | None = None
    ) -> None:
        """Resume the run with one decision; show where it got to, or the error."""
        if self._busy:
            return
        if self.status != "paused" or self.pending is None:
            self._error(
                f"Run {self.run_id} is {self.status or 'unknown'}, not paused: "
                "there is nothing to decide."
            )
            return
        elsewhere = self._decided_elsewhere()
        if elsewhere:
            self._error(elsewhere)
            return
        self._busy = True
        for control in self._inputs:
            control.disabled = True
        self.message.value = _box('<span class="muted">Resuming the run…</span>')
        decided = self.pending
        try:
            if self.run is not None:
                result = self.run.resume_sync(approve=approve, note=note, answer=answer)
            else:
                assert self.agent is not None
                result = self.agent.resume_sync(
                    self.run_id, approve=approve, note=note, answer=answer, store=self.store
                )
        except Exception as exc:  # a click has no caller: the error stays in the widget
            self._busy = False
            self.reload()
            self._error(f"{type(exc).__name__}: {exc}")
            return
        self._busy = False
        self.result = result
        self.note.value = ""
        self.answer.value = ""
        self.message.value = _box(_decision_text(decided, approve, note, answer))
        self._show(result.status, result.pending, result.output, result.failure, result.explanation)

    def _decided_elsewhere(self) -> str | None:
        """For a run object: whether the store says another process already resumed
        it (resuming this copy again would repeat the tool call)."""
        run = self.run
        if run is None or self.pending is None:
            return None
        tracer = run.agent.tracer
        workspace = getattr(tracer, "workspace", None)
        if workspace is None:
            return None  # not traced: the run object is the only record
        flush = getattr(tracer, "flush", None)
        if flush is not None:
            flush()  # the store must see this run's own pause
        try:
            row = (self.store or TraceStore(workspace)).run(run.id)
        except Exception:  # the store is only a guard here; the run object decides
            return None
        if row is None:
            return None
        pending = row.get("pending") or {}
        if row["status"] == "paused" and pending.get("key") == self.pending.get("key"):
            return None
        return (
            f"Run {run.id} was already resumed elsewhere (the trace store says it is "
            f"{row['status']}): this copy of it was not resumed again. Use "
            f"ApprovalWidget({run.id!r}, agent=agent) to decide from the store."
        )

    def _show(
        self,
        status: str | None,
        pending: Mapping[str, Any] | None,
        output: str | None,
        failure: Mapping[str, Any] | None,
        explanation: str | None = None,
    ) -> None:
        """Draw the run's state: its question and the decision's controls while it is
        paused; its answer or failure once it is not."""
        self.status = status
        self.pending = dict(pending) if status == "paused" and pending else None
        short = f"<code>{_html.esc(self.run_id[:8])}</code>"
        kind = self.pending.get("kind", "approval") if self.pending is not None else None
        escalated = kind in _ASKED
        if self.pending is not None:
            self._label(str(kind))
            title = _TITLES.get(str(kind), "waits for approval")
            self.header.value = _box(f"<h4>Run {short} {title}</h4>")
            self.request_view.value = _box(_html.pending_html(_for_a_person(self.pending)))
            self.outcome.value = ""
        else:
            state = _html.status_html(status) if status else "unknown"
            self.header.value = _box(f"<h4>Run {short}: {state}</h4>")
            self.request_view.value = ""
            self.outcome.value = _box(_outcome_html(status, output, failure, explanation))
        self.approval_controls.layout.display = (
            "" if self.pending is not None and not escalated else "none"
        )
        self.escalation_controls.layout.display = "" if escalated else "none"
        for control in self._inputs:
            control.disabled = self.pending is None

    def _label(self, kind: str) -> None:
        """Name the answer, retry and fail controls for what this pause asks."""
        words = _ASKED.get(kind)
        if words is not None:
            self.answer.placeholder, answer, retry, fail = words
            self.answer_button.description = answer
            self.retry_button.description = retry
            self.fail_button.description = fail

    def _error(self, text: str) -> None:
        self.message.value = _box(
            _html.callout(f'<span class="bad">{_html.esc(text)}</span>', "bad")
        )


# What a pause that a person answers asks: the answer box's hint, then the labels of
# the Answer (answer=), Retry (approve=True) and Let it fail (approve=False) buttons.
_ASKED = {
    "escalation": (
        "The answer for the user (ends the run as completed)",
        "Answer",
        "Retry",
        "Let it fail",
    ),
    "outcome_unknown": (
        "What happened, if the call did happen (the model is told)",
        "It happened",
        "Make it again",
        "Do not make it",
    ),
}
_TITLES = {"escalation": "needs a person", "outcome_unknown": "needs a person: outcome unknown"}


def _for_a_person(pending: Mapping[str, Any]) -> Mapping[str, Any]:
    """`pending` with its question in the widget's words: the stored question names
    the ``resume(...)`` arguments, which a person at the buttons does not need."""
    if pending.get("kind") != "outcome_unknown":
        return pending
    question = (
        f"The process making the call to {pending.get('tool')} stopped inside it (killed "
        "or crashed), so whether the call happened is unknown, and the tool cannot tell a "
        "repeat from a first call. Check the system behind it (its log, outbox or ledger), "
        'then choose "It happened" (say what happened: the model is told), "Make it '
        'again", or "Do not make it".'
    )
    return {**pending, "question": question}


def _box(body: str) -> str:
    return f'{_html.STYLE}<div class="agentlab">{body}</div>'


def _decision_text(
    pending: Mapping[str, Any], approve: bool | None, note: str | None, answer: str | None
) -> str:
    """What was decided, in one line."""
    if pending.get("kind") == "outcome_unknown":
        tool = _html.esc(pending.get("tool"))
        said = (
            f"reported what the call to <code>{tool}</code> did"
            if answer is not None
            else f"made the call to <code>{tool}</code> again"
            if approve
            else f"chose not to make the call to <code>{tool}</code>"
        )
    elif pending.get("kind") == "escalation":
        said = (
            "answered for the user"
            if answer is not None
            else "retried"
            if approve
            else "let the run fail"
        )
    else:
        tool = _html.esc(pending.get("tool"))
        said = f"{'approved' if approve else 'denied'} the call to <code>{tool}</code>"
    if note:
        said += f' <span class="muted">(note: {_html.esc(note)})</span>'
    return f'<div class="muted">Step {_html.esc(pending.get("step"))}: you {said}.</div>'


def _outcome_html(
    status: str | None,
    output: str | None,
    failure: Mapping[str, Any] | None,
    explanation: str | None,
) -> str:
    """A run that no longer waits: its answer, or why it ended badly."""
    if status == "completed":
        return _html.callout(f'<b class="ok">Completed</b>{_html.pre(output)}', "ok")
    if status == "running":
        return '<div class="muted">The run is running.</div>'
    if status is None:
        return ""
    body = f'<b class="bad">Ended: {_html.esc(status)}</b>'
    if failure:
        body += _html.failure_html(failure)
    elif explanation:
        body += _html.pre(explanation)
    return _html.callout(body, "bad")
