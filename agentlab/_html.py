"""HTML views of core objects for notebooks (``_repr_html_``).

Every value is escaped; the CSS is inline and scoped under ``.agentlab``, with no
external assets, so the output renders the same in JupyterLab, VS Code and
nbconvert. These are the primitives (and the views of trace-store rows); each
class renders itself with them beside its own definition (``tools/html.py``,
``agents/html.py``), so this module imports nothing from the layers above.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

__all__ = [
    "box",
    "cost_text",
    "esc",
    "fields",
    "messages_html",
    "ms_text",
    "pre",
    "pretty_json",
    "status_html",
    "steps_table_html",
    "table",
]

STYLE = (
    "<style>"
    ".agentlab{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;"
    "line-height:1.4}"
    ".agentlab h4{margin:4px 0;font-size:14px}"
    ".agentlab table{border-collapse:collapse;margin:4px 0}"
    ".agentlab th,.agentlab td{border:1px solid #ccc;padding:2px 6px;text-align:left;"
    "vertical-align:top}"
    ".agentlab th{background:#f3f3f3}"
    ".agentlab pre{margin:2px 0;white-space:pre-wrap;word-break:break-word;max-height:16em;"
    "overflow:auto;font-size:12px}"
    ".agentlab .ok{color:#1a7f37}.agentlab .bad{color:#cf222e}.agentlab .muted{color:#777}"
    ".agentlab .tag{display:inline-block;padding:0 5px;border-radius:3px;background:#eef;"
    "font-size:12px}"
    "</style>"
)

_GOOD = {"ok", "completed"}
_RUNNING = {"running"}


def esc(value: Any) -> str:
    """Escape any value for HTML ('' for None)."""
    return "" if value is None else escape(str(value))


def pre(text: Any) -> str:
    """Preformatted, escaped text."""
    return f"<pre>{esc(text)}</pre>"


def pretty_json(text: str | None) -> str:
    """JSON text indented when it parses, as-is otherwise."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def status_html(status: Any) -> str:
    """A status word coloured by outcome."""
    css = "ok" if status in _GOOD else "muted" if status in _RUNNING else "bad"
    return f'<span class="{css}">{esc(status)}</span>'


def cost_text(cost: float | None) -> str:
    """Dollars, or 'n/a' when the price of a model is unknown."""
    return "n/a" if cost is None else f"${cost:.6f}"


def ms_text(ms: float | None) -> str:
    """Milliseconds, rounded."""
    return "" if ms is None else f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """A table; headers are escaped here, cells must already be HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fields(items: Mapping[str, str]) -> str:
    """A two-column key/value table; values must already be HTML."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items.items())
    return f"<table><tbody>{rows}</tbody></table>"


def box(title: str, body: str) -> str:
    """The outer element every view uses."""
    return f'{STYLE}<div class="agentlab"><h4>{title}</h4>{body}</div>'


# -- trace-store rows (used by the run inspector) ---------------------------------------


def messages_html(text: str | None) -> str:
    """Messages stored as JSON (a list, or one reply) as 'role: content' lines."""
    if not text:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return pre(text)
    messages = value if isinstance(value, list) else [value]
    parts = []
    for m in messages:
        if not isinstance(m, dict):
            parts.append(pre(json.dumps(m)))
            continue
        role = m.get("role", "?")
        lines = [m["content"]] if m.get("content") else []
        lines += [f"→ {c.get('name')}({c.get('arguments')})" for c in m.get("tool_calls") or ()]
        if role == "tool":
            role = f"tool {m.get('name', '')}"
        parts.append(f'<div><span class="tag">{esc(role)}</span>{pre(chr(10).join(lines))}</div>')
    return "".join(parts)


def _num(value: Any) -> Any:
    """None for missing values (None or NaN) from a DataFrame row."""
    return None if value is None or value != value else value


def steps_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of ``TraceStore.steps()`` as a table."""
    if not rows:
        return '<div class="agentlab muted">No steps recorded yet.</div>'
    out = []
    for r in rows:
        model_call = r["kind"] == "model_call"
        tokens_in, tokens_out = _num(r.get("input_tokens")), _num(r.get("output_tokens"))
        error = _num(r.get("error"))
        out.append(
            [
                esc(r["step"]),
                f'<span class="tag">{"model call" if model_call else "tool call"}</span>',
                f"<code>{esc(r['name'])}</code>",
                status_html(r["status"]),
                messages_html(r["input"]) if model_call else pre(pretty_json(r["input"])),
                (messages_html(r["output"]) if model_call else pre(pretty_json(r["output"])))
                + (
                    f'<div class="bad">{esc(error)}</div>' if error and error != r["output"] else ""
                ),
                esc("" if tokens_in is None else f"{tokens_in:.0f} / {tokens_out or 0:.0f}"),
                esc("" if not model_call else cost_text(_num(r.get("cost")))),
                esc(ms_text(_num(r.get("latency_ms")))),
            ]
        )
    headers = ["step", "kind", "name", "status", "input", "output", "tokens in/out", "cost"]
    return STYLE + (
        '<div class="agentlab">'
        + table([*headers, "latency"], out, cls="agentlab-steps")
        + "</div>"
    )
