"""`AgentWorkbench`: build an agent in the notebook. See the tool schemas and the
system prompt exactly as the model receives them and the tool set's lint findings;
run a question step by step; edit the prompt, the question or a tool result (or ask
the model again at one of its replies) and carry on from there as a new run."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from agentlab import _html
from agentlab.errors import UserError
from agentlab.messages import AssistantMessage, Message
from agentlab.tokens import message_text
from agentlab.tools.lint import lint_tools
from agentlab.ui.inspector import RunInspector

if TYPE_CHECKING:
    from agentlab.agents import Agent, Run
    from agentlab.tools import LintReport
    from agentlab.tracing import TraceStore

__all__ = ["AgentWorkbench"]

_EXAMPLE = "(your question)"


class AgentWorkbench(widgets.VBox):
    """An agent's workbench: tabs **Run**, **Tools**, **Prompt** and **Lint**.

    Run: type a question and Start; step through it in a run inspector; pick a
    message of the conversation, edit it (system prompt, question or tool result)
    and "Re-run from here" starts a new run from the edited conversation (at a model
    reply, the model is asked again). Tools: what the model is sent for the tools
    (:meth:`~agentlab.models.Model.request_preview`). Prompt: the run's opening
    messages. Lint: :func:`~agentlab.tools.lint_tools` of the agent.

    Python API (what the buttons call): :meth:`start`, :meth:`rerun_from`; the
    attributes ``run`` (the current run), ``inspector``, ``lint``, ``tabs``.
    """

    def __init__(self, agent: Agent, question: str = "", *, store: TraceStore | None = None):
        self.agent = agent
        self.store = store
        self.run: Run | None = None
        self.inspector: RunInspector | None = None
        self.lint: LintReport = lint_tools(agent)
        self.header = widgets.HTML(_box(_header_html(agent, self.lint)))
        self.question = widgets.Text(
            value=question,
            placeholder="Ask the agent something",
            layout=widgets.Layout(width="520px"),
        )
        self.start_button = self._button("Start", "play", "primary", lambda: self.start())
        self.picker = widgets.Dropdown(
            description="Message", options=[], layout=widgets.Layout(width="640px")
        )
        self.picker.observe(self._on_pick, names="value")
        self.editor = widgets.Textarea(layout=widgets.Layout(width="640px", height="90px"))
        self.rerun_button = self._button(
            "Re-run from here", "code-branch", "", lambda: self._rerun_picked()
        )
        self.message = widgets.HTML()
        self.edit_box = widgets.VBox(
            [self.picker, self.editor, self.rerun_button],
            layout=widgets.Layout(display="none"),
        )
        self.run_box = widgets.VBox([], layout=widgets.Layout(overflow="auto"))  # wide tables
        run_tab = widgets.VBox(
            [
                widgets.HBox([self.question, self.start_button]),
                self.message,
                self.edit_box,
                self.run_box,
            ]
        )
        self.tools_view = widgets.HTML(_box(_tools_html(agent, question or _EXAMPLE)))
        self.prompt_view = widgets.HTML(_box(_prompt_html(agent, question or _EXAMPLE)))
        self.lint_view = widgets.HTML(self.lint._repr_html_())
        self.tabs = widgets.Tab(
            children=[run_tab, self.tools_view, self.prompt_view, self.lint_view]
        )
        for i, title in enumerate(["Run", "Tools", "Prompt", _lint_title(self.lint)]):
            self.tabs.set_title(i, title)
        super().__init__([self.header, self.tabs])
        self.add_class("agentlab-workbench")

    # -- actions ------------------------------------------------------------------------

    def start(self, question: str | None = None) -> Run:
        """Start a run of the agent on `question` (default: the question box) and show
        it, ready to step."""
        text = (question if question is not None else self.question.value).strip()
        if not text:
            raise UserError("Type a question first.")
        self.question.value = text
        self.tools_view.value = _box(_tools_html(self.agent, text))
        self.prompt_view.value = _box(_prompt_html(self.agent, text))
        return self._show(self.agent.start(text))

    def rerun_from(self, at: int, content: str | None = None) -> Run:
        """A new run from the current one's conversation at message `at`, with its text
        replaced by `content` (see :meth:`~agentlab.agents.Run.branch`), shown ready
        to step."""
        if self.run is None:
            raise UserError("Start a run first.")
        return self._show(self.run.branch(at, content))

    # -- internals ----------------------------------------------------------------------

    def _show(self, run: Run) -> Run:
        self.run = run
        self.inspector = RunInspector(self.store, live_run=run)
        self.inspector.steps_view.observe(lambda _: self._list_messages(), names="value")
        self.run_box.children = (self.inspector,)
        self.edit_box.layout.display = ""
        self._list_messages()
        return run

    def _list_messages(self) -> None:
        """The current run's conversation in the picker (after every step)."""
        run = self.run
        if run is None:
            return
        chosen = self.picker.value
        self.picker.options = [
            (f"{i} · {_role(m)}: {_clip(_content(m) or _calls(m))}", i)
            for i, m in enumerate(run.messages)
        ]
        if chosen is not None and chosen < len(run.messages):
            self.picker.value = chosen
        self._on_pick({"new": self.picker.value})

    def _on_pick(self, change: Mapping[str, Any]) -> None:
        at = change["new"]
        if self.run is None or at is None:
            return
        message = self.run.messages[at]
        reply = isinstance(message, AssistantMessage)
        self.editor.value = _content(message) or _calls(message)
        self.editor.disabled = reply
        self.rerun_button.description = (
            "Ask the model again from here" if reply else "Re-run from here"
        )

    def _rerun_picked(self) -> None:
        at = self.picker.value
        if self.run is None or at is None:
            raise UserError("Start a run first.")
        message = self.run.messages[at]
        edited = None if isinstance(message, AssistantMessage) else self.editor.value
        if edited == _content(message):
            edited = None  # unchanged: carry on from the same conversation
        self.rerun_from(at, edited)

    def _button(
        self, description: str, icon: str, style: str, action: Callable[[], object]
    ) -> widgets.Button:
        button = widgets.Button(description=description, icon=icon, button_style=style)

        def clicked(_: widgets.Button) -> None:
            self.message.value = ""
            try:
                action()
            except Exception as exc:  # a click has no caller: show it
                text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
                self.message.value = _box(
                    _html.callout(f'<span class="bad">{_html.esc(text)}</span>', "bad")
                )

        button.on_click(clicked)
        return button


def _box(body: str) -> str:
    return f'{_html.STYLE}<div class="agentlab">{body}</div>'


def _header_html(agent: Agent, lint: LintReport) -> str:
    limits = agent.budget.limits
    items = {
        "agent": f"<b>{_html.esc(agent.name)}</b> ({_html.esc(type(agent).__name__)})",
        "model": f"<code>{_html.esc(agent.model.name)}</code>",
        "tools": ", ".join(f"<code>{_html.esc(n)}</code>" for n in agent.tool_names) or "none",
        "lint": _lint_summary(lint),
    }
    if limits:
        items["limits"] = _html.esc(", ".join(f"{k} {v}" for k, v in limits.items()))
    return _html.fields(items)


def _lint_summary(lint: LintReport) -> str:
    if lint.errors:
        return (
            f'<span class="bad">{len(lint.errors)} error(s)</span>, {len(lint.warnings)} warning(s)'
        )
    if lint.warnings:
        return f'<span class="warn">{len(lint.warnings)} warning(s)</span>'
    return '<span class="ok">clean</span>'


def _lint_title(lint: LintReport) -> str:
    if lint.errors or lint.warnings:
        return f"Lint ({len(lint.errors)} errors, {len(lint.warnings)} warnings)"
    return "Lint (clean)"


def _tools_html(agent: Agent, question: str) -> str:
    """Each tool as the model is sent it, then the whole first request."""
    messages = agent.opening_messages(question)
    preview = agent.model.request_preview(messages, agent.tool_definitions)
    per_tool = "".join(
        f"<h4><code>{_html.esc(t.name)}</code></h4>"
        + _html.pre(json.dumps(t.to_openai(), indent=2, ensure_ascii=False), whole=True)
        for t in agent.tool_definitions
    )
    whole = json.dumps(preview, indent=2, ensure_ascii=False)
    return (
        f'<div class="muted">{len(agent.tool_definitions)} tool(s); '
        f"the model {_html.esc(agent.model.name)} is sent {_html.esc(preview['format'])}.</div>"
        + per_tool
        + "<details><summary>the whole first request, as the model receives it</summary>"
        + _html.pre(whole, whole=True)
        + "</details>"
    )


def _prompt_html(agent: Agent, question: str) -> str:
    rows = [
        [f'<span class="tag">{_html.esc(_role(m))}</span>', _html.pre(message_text(m), whole=True)]
        for m in agent.opening_messages(question)
    ]
    return "<h4>What a run starts from</h4>" + _html.table(["role", "text"], rows)


def _role(message: Message) -> str:
    return f"tool {message.name}" if message.role == "tool" else message.role


def _content(message: Message) -> str:
    """The text a message carries (what an edit replaces)."""
    return message.content if isinstance(message.content, str) else message_text(message)


def _calls(message: Message) -> str:
    if isinstance(message, AssistantMessage):
        return "; ".join(f"→ {c.name}({c.arguments})" for c in message.tool_calls)
    return ""


def _clip(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
