"""`MemoryInspector`: for one step of a run, what working memory held, what it left
out, what long-term memory returned (with scores) and the short-term keys touched.

Everything is read from the trace store (:func:`agentlab.tracing.memory_view.step_memory`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from agentlab import _html
from agentlab.messages import Message
from agentlab.tokens import message_text
from agentlab.tracing import TraceStore
from agentlab.tracing.memory_view import StepMemory, memory_steps, retrieval_steps, step_memory

__all__ = ["MemoryInspector"]

_CLIP = 300


class MemoryInspector(widgets.VBox):
    """Memory at each step of run `run_id` (pick the step in ``step_selector``).

    Attributes: ``memory`` (the shown :class:`StepMemory`), ``step_selector``,
    ``window_view``, ``left_out_view``, ``retrievals_view``, ``keys_view``.
    """

    def __init__(self, run_id: str, store: TraceStore | None = None, step: int | None = None):
        self.store = store or TraceStore()
        self.run_id = run_id
        steps = memory_steps(self.store, run_id)
        if step is None and steps:  # open where long-term memory was searched, if anywhere
            step = next(iter(retrieval_steps(self.store, run_id)), steps[-1])
        self.step_selector = (
            widgets.Dropdown(description="Step", options=steps, value=step)
            if steps
            else widgets.Dropdown(description="Step", options=[])
        )
        self.window_view = widgets.HTML()
        self.left_out_view = widgets.HTML()
        self.retrievals_view = widgets.HTML()
        self.keys_view = widgets.HTML()
        self.memory: StepMemory | None = None
        self.step_selector.observe(self._on_step, names="value")
        super().__init__(
            [
                self.step_selector,
                self.window_view,
                self.left_out_view,
                self.retrievals_view,
                self.keys_view,
            ]
        )
        self.add_class("agentlab-memory-inspector")
        self.show(self.step_selector.value)

    def show(self, step: int | None) -> None:
        """Show the memory of `step` (None: the run has no steps)."""
        if step is None:
            self.memory = None
            self.window_view.value = _wrap(
                f'<div class="muted">Run {_html.esc(self.run_id)} has no steps in the store.</div>'
            )
            self.left_out_view.value = self.retrievals_view.value = self.keys_view.value = ""
            return
        self.memory = step_memory(self.store, self.run_id, step)
        self.window_view.value = _wrap(_window_html(self.memory))
        self.left_out_view.value = _wrap(_left_out_html(self.memory))
        self.retrievals_view.value = _wrap(_retrievals_html(self.memory))
        self.keys_view.value = _wrap(_keys_html(self.memory))

    def _on_step(self, change: Mapping[str, Any]) -> None:
        self.show(change["new"])


def _wrap(body: str) -> str:
    return f'{_html.STYLE}<div class="agentlab">{body}</div>' if body else ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def _message_row(index: int | str, message: Message, note: str = "") -> list[str]:
    return [
        _html.esc(index),
        f'<span class="tag">{_html.esc(message.role)}</span>',
        _html.esc(_clip(message_text(message))),
        note,
    ]


def _window_html(memory: StepMemory) -> str:
    window = memory.window
    if window is None:
        title = (
            f"<h4>Working memory at step {memory.step}: the whole conversation "
            f"({len(memory.conversation)} messages; no working-memory policy)</h4>"
        )
        whole = [_message_row(i, m) for i, m in memory.sent()]
        return title + _html.table(["#", "role", "text", ""], whole)
    title = (
        f"<h4>Working memory at step {memory.step}: {window['tokens']} of {window['budget']} "
        f"tokens <span class='muted'>(counted with the {_html.esc(window['counter'])})</span></h4>"
    )
    rows: list[list[str]] = [
        ["", '<span class="tag">pinned</span>', _html.esc(_clip(note)), ""]
        for note in window["pinned"] or []
    ]
    rows += [
        [
            "",
            '<span class="tag">memory</span>',
            _html.esc(_clip(memory.memory_texts.get(i, i))),
            _html.esc(i),
        ]
        for i in window["memories"] or []
    ]
    if window["summary"]:
        rows.append(
            [
                "",
                '<span class="tag">summary</span>',
                _html.esc(_clip(window["summary"])),
                f"{window['summary_output_tokens']} tokens, made from "
                f"{window['summary_input_tokens']}",
            ]
        )
    rows += [_message_row(i, m) for i, m in memory.sent()]
    return title + _html.table(["#", "what", "text", "note"], rows)


def _left_out_html(memory: StepMemory) -> str:
    left = memory.left_out()
    if not left:
        return ""
    rows = [_message_row(i, m, f'<span class="bad">{how}</span>') for i, m, how in left]
    return f"<h4>Left out at step {memory.step}</h4>" + _html.table(
        ["#", "role", "text", "how"], rows
    )


def _retrievals_html(memory: StepMemory) -> str:
    if not memory.retrievals and not memory.writes:
        return ""
    parts = []
    for r in memory.retrievals:
        entered = set(r["entered"] or [])
        filters = ", ".join(f"{k}={v}" for k, v in r["filters"].items()) or "none"
        parts.append(
            f"<h4>Retrieved ({_html.esc(r['source'])}, {_html.esc(r['mode'])}, top "
            f"{r['k']}, {_html.ms_text(r['latency_ms'])}): "
            f"<code>{_html.esc(r['query'])}</code></h4>"
            f'<div class="muted">filters: {_html.esc(filters)}</div>'
        )
        rows = [
            [
                str(rank),
                _html.esc(h["id"]),
                _score_html(h),
                _html.esc(h.get("kind")),
                _html.esc(_clip(h.get("text", ""))),
                '<span class="ok">entered</span>'
                if h["id"] in entered
                else '<span class="muted">not used</span>',
            ]
            for rank, h in enumerate(r["hits"], start=1)
        ]
        parts.append(_html.table(["#", "id", "score", "kind", "text", "context"], rows))
    if memory.writes:
        rows = [
            [_html.esc(w["key"]), _html.esc(w["namespace"]), _html.esc(_clip(w["detail"] or ""))]
            for w in memory.writes
        ]
        parts.append("<h4>Written to long-term memory</h4>")
        parts.append(_html.table(["id", "kind", "text"], rows))
    return "".join(parts)


def _score_html(hit: Mapping[str, Any]) -> str:
    """A hit's score; a hybrid hit's also says what each mode scored it."""
    score = f"{hit['score']:.3f}"
    parts = hit.get("parts")
    if not parts:
        return score
    shown = " · ".join(
        f"{mode} {'—' if value is None else f'{value:.3f}'}" for mode, value in parts.items()
    )
    return f'{score}<div class="muted nowrap">{_html.esc(shown)}</div>'


def _keys_html(memory: StepMemory) -> str:
    if not memory.key_ops:
        return ""
    rows = [
        [
            _html.esc(o["op"]),
            _html.esc(o["namespace"]),
            f"<code>{_html.esc(o['key'])}</code>",
            "" if o["hit"] is None else ("hit" if o["hit"] else "miss"),
            "" if o["ttl"] is None else f"{o['ttl']:g} s",
        ]
        for o in memory.key_ops
    ]
    return "<h4>Short-term keys touched</h4>" + _html.table(
        ["op", "namespace", "key", "found", "ttl"], rows
    )
