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
    "alerts_html",
    "attempts_html",
    "box",
    "breakers_html",
    "callout",
    "clip",
    "cost_text",
    "esc",
    "failure_html",
    "fields",
    "json_value",
    "messages_html",
    "ms_text",
    "pending_html",
    "pre",
    "pretty_json",
    "requests_detail",
    "routing_shown",
    "scoped",
    "status_html",
    "steps_table_html",
    "table",
]

# Every rule is scoped under `_SCOPE`: ``:not(#agentlab-scope)`` matches every element
# and adds an id's weight, so our rules beat JupyterLab's class-based ones for rendered
# HTML (``:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td {text-align: right}``,
# its zebra rows, centred tables) in whatever order the stylesheets load. Colours
# come from Lab's theme variables (light fallbacks elsewhere), so the dark theme reads.
_SCOPE = ".agentlab:not(#agentlab-scope)"
_RULES = {
    "": "font-family:var(--jp-ui-font-family,system-ui,sans-serif);"
    "font-size:var(--jp-ui-font-size1,13px);line-height:1.4;"
    "color:var(--jp-ui-font-color1,#222);text-align:left",
    "h4": "margin:8px 0 4px;font-size:14px;font-weight:600;color:var(--jp-ui-font-color0,#000)",
    "table": "border-collapse:collapse;border:none;margin:4px 0;table-layout:auto;"
    "color:inherit;font-size:inherit",
    "th, td": "border:1px solid var(--jp-border-color2,#ddd);padding:3px 7px;"
    "text-align:left;vertical-align:top;line-height:1.4;white-space:normal;max-width:none",
    "th": "background:var(--jp-layout-color2,#eee);font-weight:600;white-space:nowrap",
    "tbody tr, tbody tr:hover": "background:transparent",
    "pre": "margin:2px 0;padding:0;border:none;background:transparent;color:inherit;"
    # Lines wrap at spaces; a word longer than its cell breaks only as a last resort
    # (word-break:break-word would size columns to one character and wrap JSON mid-word).
    "white-space:pre-wrap;word-break:normal;overflow-wrap:break-word;max-height:16em;"
    "overflow:auto;"
    "font-family:var(--jp-code-font-family,monospace);font-size:12px;"
    "line-height:1.35",
    "pre.whole": "max-height:none",
    "code": "font-family:var(--jp-code-font-family,monospace);font-size:12px;"
    "background:var(--jp-layout-color2,#eee);color:inherit;padding:0 4px;border-radius:3px",
    ".ok": "color:var(--jp-success-color1,#388e3c)",
    ".bad": "color:var(--jp-error-color1,#d32f2f)",
    ".warn": "color:var(--jp-warn-color0,#e65100)",
    ".muted": "color:var(--jp-ui-font-color2,#666)",
    ".tag": "display:inline-block;padding:0 5px;border-radius:3px;font-size:12px;"
    "white-space:nowrap;background:var(--jp-layout-color2,#eee);"
    "border:1px solid var(--jp-border-color1,#bdbdbd)",
    ".callout": "margin:6px 0;padding:4px 10px;border:1px solid var(--jp-border-color2,#ddd);"
    "border-left:4px solid var(--jp-brand-color1,#1976d2);"
    "background:var(--jp-layout-color1,#fff);border-radius:2px",
    ".callout.warn": "border-left-color:var(--jp-warn-color1,#f57c00);color:inherit",
    ".callout.bad": "border-left-color:var(--jp-error-color1,#d32f2f);color:inherit",
    ".callout.ok": "border-left-color:var(--jp-success-color1,#388e3c);color:inherit",
    "table.agentlab-attempts": "margin:2px 0;font-size:12px",
    "table.agentlab-attempts td, table.agentlab-attempts th": "padding:1px 5px",
    ".route": "font-size:12px;margin-top:2px",
    ".nowrap": "white-space:nowrap",
    "tr.agentlab-detail > td": "border-top-style:dashed;padding-top:2px;padding-bottom:4px",
    # Pass/fail rows and verdict pills: tints mixed from the theme's colours, so they
    # stay faint on white and on Lab's dark grey alike (no color-mix: plain rows).
    "tr.fail > td": "background:color-mix(in srgb,var(--jp-error-color1,#d32f2f) 8%,transparent)",
    "tr.fail > td:first-child": "box-shadow:inset 3px 0 0 var(--jp-error-color1,#d32f2f)",
    "tr.pass > td:first-child": "box-shadow:inset 3px 0 0 var(--jp-success-color1,#388e3c)",
    ".pill": "display:inline-block;padding:0 7px;border-radius:9px;font-weight:600;"
    "font-size:12px;white-space:nowrap",
    ".pill.ok": "background:color-mix(in srgb,var(--jp-success-color1,#388e3c) 18%,transparent)",
    ".pill.bad": "background:color-mix(in srgb,var(--jp-error-color1,#d32f2f) 18%,transparent)",
    ".prose": "min-width:14em;max-width:40em;white-space:normal;overflow-wrap:break-word",
    ".scroll": "overflow-x:auto;max-width:100%",
    ".cols": "display:flex;flex-wrap:wrap;gap:0 16px;align-items:flex-start",
}


def _css(rules: Mapping[str, str]) -> str:
    """`rules` ({"th, td": "padding:0"}) as CSS, every selector under `_SCOPE`."""
    return "".join(
        ",".join(f"{_SCOPE} {s}".rstrip() for s in selectors.split(", ")) + f"{{{body}}}"
        for selectors, body in rules.items()
    )


STYLE = f"<style>{_css(_RULES)}</style>"

_GOOD = {"ok", "completed", "closed"}
_NEUTRAL = {"running", "skipped"}
_WAITING = {"paused", "denied", "half_open"}  # a person's (or a breaker's) decision


def esc(value: Any) -> str:
    """Escape any value for HTML ('' for None)."""
    return "" if value is None else escape(str(value))


def pre(text: Any, *, whole: bool = False) -> str:
    """Preformatted, escaped text; long text scrolls inside its box unless `whole`."""
    return f'<pre class="whole">{esc(text)}</pre>' if whole else f"<pre>{esc(text)}</pre>"


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
    css = (
        "ok"
        if status in _GOOD
        else "muted"
        if status in _NEUTRAL
        else "warn"
        if status in _WAITING
        else "bad"
    )
    return f'<span class="{css}">{esc(status)}</span>'


def clip(text: Any, limit: int = 200) -> str:
    """Escaped text cut to `limit` characters; the whole text is its tooltip."""
    whole = "" if text is None else str(text)
    if len(whole) <= limit:
        return esc(whole)
    return f'<span title="{esc(whole)}">{esc(whole[: limit - 1])}…</span>'


def json_value(value: Any) -> Any:
    """A JSON column as stored (text) or already decoded; None for missing values."""
    if value is None or value != value:  # None or NaN from a DataFrame row
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def cost_text(cost: float | None) -> str:
    """Dollars, or 'n/a' when the price of a model is unknown."""
    return "n/a" if cost is None else f"${cost:.6f}"


def ms_text(ms: float | None) -> str:
    """Milliseconds, rounded."""
    return "" if ms is None else f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    cls: str = "",
    details: Mapping[int, str] | None = None,
    row_classes: Sequence[str] = (),
) -> str:
    """A table; headers are escaped here, cells must already be HTML. `details` maps
    a row's index to HTML shown in a full-width row under it (class ``agentlab-detail``);
    `row_classes` gives rows a class each (e.g. ``pass``/``fail``), in order."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        row_cls = row_classes[i] if i < len(row_classes) else ""
        tr = f'<tr class="{esc(row_cls)}">' if row_cls else "<tr>"
        body.append(tr + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
        if details and details.get(i):
            span = max(1, len(headers) - 1)
            body.append(
                f'<tr class="agentlab-detail"><td></td><td colspan="{span}">{details[i]}</td></tr>'
            )
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def fields(items: Mapping[str, str]) -> str:
    """A two-column key/value table; values must already be HTML."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items.items())
    return f"<table><tbody>{rows}</tbody></table>"


def box(title: str, body: str) -> str:
    """The outer element every view uses."""
    return scoped(f"<h4>{title}</h4>{body}")


def scoped(body: str) -> str:
    """`body` (HTML) with the style, in the element the rules are scoped under."""
    return f'{STYLE}<div class="agentlab">{body}</div>'


def callout(body: str, tone: str = "") -> str:
    """A block set off by a coloured left border (`tone`: '', 'ok', 'warn', 'bad')."""
    return f'<div class="callout {esc(tone)}">{body}</div>'


# -- how a model request was served; why a run stopped or waits ---------------------------


def routing_shown(
    attempts: Sequence[Mapping[str, Any]] | None, route: str | None, fallbacks: Sequence[str] = ()
) -> bool:
    """Whether a step's requests are worth showing: several attempts, a failed one,
    a fallback or a router's choice."""
    attempts = attempts or ()
    return (
        len(attempts) > 1
        or any(a.get("status") != "ok" for a in attempts)
        or route not in (None, "primary")
        or bool(fallbacks)
    )


def _seconds(value: Any) -> str:
    return "" if value is None else f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def attempts_html(
    attempts: Sequence[Mapping[str, Any]] | None,
    served_by: str | None = None,
    route: str | None = None,
    fallbacks: Sequence[str] = (),
) -> str:
    """A step's model requests (number, model, status, error, latency, the wait
    before the next one) and which model served it and why; '' when there was one
    request that worked, by the primary model."""
    if not routing_shown(attempts, route, fallbacks):
        return ""
    attempts = attempts or ()
    rows = [
        [
            esc(a.get("number")),
            f"<code>{esc(a.get('model'))}</code>",
            status_html(a.get("status")),
            (f"<b>{esc(a['error_type'])}</b>: " if a.get("error_type") else "")
            + clip(a.get("error"), 140),
            f'<span class="nowrap">{esc(ms_text(a.get("latency_ms")))}</span>',
            f'<span class="nowrap">{esc(_seconds(a.get("wait_s")))}</span>',
        ]
        for a in attempts
    ]
    headers = ["#", "model", "status", "error", "latency", "wait after"]
    out = table(headers, rows, cls="agentlab-attempts") if rows else ""
    answered = not attempts or any(a.get("status") == "ok" for a in attempts)
    if answered and (served_by or route):
        who = f"served by <code>{esc(served_by)}</code>" if served_by else "served"
        why = f' <span class="muted">({clip(route, 200)})</span>' if route else ""
        out += f'<div class="route">{who}{why}</div>'
    elif not answered:
        out += '<div class="route bad">no model answered</div>'
    if fallbacks and not attempts:
        left = "".join(f"<li>{clip(f, 200)}</li>" for f in fallbacks)
        out += f'<div class="route muted">models left:<ul>{left}</ul></div>'
    return out


def requests_detail(step: Any, attempts_shown: str) -> str:
    """The full-width row under a step's model call: its requests, labelled."""
    return f'<div class="muted">requests of step {esc(step)}</div>{attempts_shown}'


def failure_html(failure: Mapping[str, Any], *, requests: bool = True) -> str:
    """A failure record (``runs.failure``): what went wrong, what was tried, what to
    do next, and (with `requests`, for views without the steps) the requests of the
    steps that failed."""
    tried = failure.get("tried") or {}
    items = {
        "What went wrong": pre(failure.get("what")),
        "What was tried": pre(tried.get("summary", "nothing")),
        "What to do next": pre(failure.get("next")),
    }
    kind = f'<span class="tag">{esc(failure.get("kind"))}</span>'
    if failure.get("error"):
        kind += f" <code>{esc(failure['error'])}</code>"
    items["kind"] = kind
    failed = [
        f"<div>step {esc(s.get('step'))}:</div>"
        + attempts_html(
            s.get("attempts"), s.get("served_by"), s.get("route"), s.get("fallbacks") or ()
        )
        for s in tried.get("steps") or ()
        if s.get("error")
        and routing_shown(s.get("attempts"), s.get("route"), s.get("fallbacks") or ())
    ]
    if requests and failed:
        items["failed requests"] = "".join(failed)
    return fields(items)


def pending_html(pending: Mapping[str, Any]) -> str:
    """What a paused run waits for: the question, the tool call to approve (its
    arguments as indented JSON), or for an escalation the failure behind it."""
    items = {"question": f"<b>{esc(pending.get('question'))}</b>"}
    if pending.get("tool"):
        items["tool"] = f"<code>{esc(pending['tool'])}</code>"
        arguments = pending.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        items["arguments"] = pre(pretty_json(arguments))
    items["step"] = esc(pending.get("step"))
    body = fields(items)
    if pending.get("kind") == "escalation" and pending.get("failure"):
        body += failure_html(pending["failure"])
    return body


def _since(at: Any, start: Any) -> str:
    """A time as seconds after `start` ("+1.25 s"), else as a time of day."""
    if _num(at) is None:
        return ""
    if _num(start) is not None:
        try:
            return f"+{(at - start).total_seconds():.2f} s"
        except (TypeError, AttributeError):
            pass
    return at.strftime("%H:%M:%S") if hasattr(at, "strftime") else str(at)


def breakers_html(rows: Sequence[Mapping[str, Any]], start: Any = None) -> str:
    """Rows of ``breaker_transitions`` (a run's): when, which breaker, from/to, why."""
    if not rows:
        return ""
    body = [
        [
            esc(r.get("step")),
            f'<span class="nowrap">{esc(_since(r.get("started_at"), start))}</span>',
            f"<code>{esc(r.get('breaker'))}</code>",
            f'<span class="nowrap">{status_html(r.get("from_state"))} → '
            f"{status_html(r.get('to_state'))}</span>",
            esc(r.get("failures")),
            clip(r.get("reason"), 240),
        ]
        for r in rows
    ]
    return table(
        ["step", "at", "breaker", "state", "failures", "why"], body, cls="agentlab-breakers"
    )


def alerts_html(rows: Sequence[Mapping[str, Any]], start: Any = None) -> str:
    """Rows of ``alerts`` (a run's): when, which alert, its message, whether it stopped the run."""
    if not rows:
        return ""
    body = [
        [
            esc(r.get("step")),
            f'<span class="nowrap">{esc(_since(r.get("started_at"), start))}</span>',
            f'<span class="tag warn">{esc(r.get("alert"))}</span>',
            clip(r.get("message"), 300),
            '<span class="bad">run stopped</span>'
            if r.get("stopped")
            else '<span class="muted">noted</span>',
        ]
        for r in rows
    ]
    return table(["step", "at", "alert", "message", "effect"], body, cls="agentlab-alerts")


# -- trace-store rows (used by the run inspector) ---------------------------------------


def messages_html(text: str | None) -> str:
    """Messages stored as JSON (a list, or one reply) as 'role: content' lines."""
    if not text or not isinstance(text, str):  # None, or NaN from a DataFrame
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


def sent_html(row: Mapping[str, Any]) -> str:
    """What a model call's row says it sent, folded: the whole conversation (its
    ``context``, when known) and the tools offered ('' when the row has neither)."""
    context, tools = row.get("context"), row.get("tools")
    if not context and not tools:
        return ""
    count = len(json.loads(context)) if context else row.get("context_messages")
    names = ", ".join(tools or ()) or "none"
    summary = f"sent: {count} message{'s' if count != 1 else ''}; tools: {names}"
    return (
        f'<details class="agentlab-sent"><summary>{esc(summary)}</summary>'
        f"{messages_html(context) if context else ''}</details>"
    )


def _num(value: Any) -> Any:
    """None for missing values (None or NaN) from a DataFrame row."""
    return None if value is None or value != value else value


def steps_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of ``TraceStore.steps()`` as a table. A model call's row may also hold
    its ``attempts``, ``served_by`` and ``route`` (from ``model_calls``): the calls
    that were retried, failed or fell back get a row under them with their requests."""
    if not rows:
        return '<div class="agentlab muted">No steps recorded yet.</div>'
    out = []
    details = {}
    for i, r in enumerate(rows):
        model_call = r["kind"] == "model_call"
        tokens_in, tokens_out = _num(r.get("input_tokens")), _num(r.get("output_tokens"))
        error = _num(r.get("error"))
        out.append(
            [
                esc(r["step"]),
                f'<span class="tag">{"model call" if model_call else "tool call"}</span>',
                f"<code>{esc(r['name'])}</code>",
                status_html(r["status"]),
                messages_html(r["input"]) + sent_html(r)
                if model_call
                else pre(pretty_json(r["input"])),
                (messages_html(r["output"]) if model_call else pre(pretty_json(r["output"])))
                + (
                    f'<div class="bad">{esc(error)}</div>' if error and error != r["output"] else ""
                ),
                esc("" if tokens_in is None else f"{tokens_in:.0f} / {tokens_out or 0:.0f}"),
                esc("" if not model_call else cost_text(_num(r.get("cost")))),
                f'<span class="nowrap">{esc(ms_text(_num(r.get("latency_ms"))))}</span>',
            ]
        )
        if model_call:
            shown = attempts_html(
                json_value(r.get("attempts")), _num(r.get("served_by")), _num(r.get("route"))
            )
            if shown:
                details[i] = requests_detail(r["step"], shown)
    headers = ["step", "kind", "name", "status", "input", "output", "tokens in/out", "cost"]
    return STYLE + (
        '<div class="agentlab">'
        + table([*headers, "latency"], out, cls="agentlab-steps", details=details)
        + "</div>"
    )
