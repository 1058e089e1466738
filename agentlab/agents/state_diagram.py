"""A state machine drawn as inline SVG, with a run's path through it highlighted.

Layered left to right from the initial state (each state one column right of the
furthest state leading to it); transitions going back are drawn below the states,
a state's transition to itself above it. Colours come from JupyterLab's theme
variables (light fallbacks elsewhere), so the drawing reads in the light and the
dark theme and in exported HTML; no script, no external asset.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentlab import _html

if TYPE_CHECKING:
    from agentlab.agents.state_machine import StateMachine

__all__ = ["StateDiagram", "state_path_text"]

_H = 38  # a state's height
_COL_GAP = 76
_ROW_GAP = 26
_PAD = 14
_NAME_PX = 7.4  # width of a name's character at 12.5px
_SMALL_PX = 6.0  # width of a tools line's character at 10.5px

_SCOPE = ".agentlab:not(#agentlab-scope) svg.agentlab-states"
_RULES = {
    "": "display:block;max-width:100%;height:auto;overflow:visible;"
    "font-family:var(--jp-ui-font-family,system-ui,sans-serif)",
    "rect.state": "fill:var(--jp-layout-color1,#fff);stroke:var(--jp-border-color1,#9e9e9e);"
    "stroke-width:1.2",
    "rect.inner": "fill:none;stroke:var(--jp-border-color1,#9e9e9e);stroke-width:1",
    "text": "fill:var(--jp-ui-font-color1,#222);font-size:12.5px",
    "text.tools": "fill:var(--jp-ui-font-color2,#666);font-size:10.5px",
    ".visited rect.state": "stroke:var(--jp-brand-color1,#1976d2);stroke-width:2",
    # The current state is filled with the run's status colour (the theme's darker
    # shades: white text reads on them in both themes; black on orange).
    ".current rect.state": "fill:var(--jp-brand-color0,#1976d2);"
    "stroke:var(--jp-brand-color0,#1976d2);stroke-width:2",
    ".current.ok rect.state": "fill:var(--jp-success-color0,#388e3c);"
    "stroke:var(--jp-success-color0,#388e3c)",
    ".current.warn rect.state": "fill:var(--jp-warn-color0,#f57c00);"
    "stroke:var(--jp-warn-color0,#f57c00)",
    ".current.bad rect.state": "fill:var(--jp-error-color0,#d32f2f);"
    "stroke:var(--jp-error-color0,#d32f2f)",
    ".current text, .current text.tools": "fill:#fff;font-weight:600",
    ".current.warn text, .current.warn text.tools": "fill:rgba(0,0,0,.87)",
    ".current rect.inner": "stroke:#fff",
    ".current.warn rect.inner": "stroke:rgba(0,0,0,.87)",
    "path.edge": "fill:none;stroke:var(--jp-ui-font-color2,#757575);stroke-width:1.3",
    "path.edge.taken": "stroke:var(--jp-brand-color1,#1976d2);stroke-width:2.4",
    "path.arrow": "fill:var(--jp-ui-font-color2,#757575)",
    "path.arrow.taken": "fill:var(--jp-brand-color1,#1976d2)",
    "circle.start": "fill:var(--jp-ui-font-color1,#222)",
    "text.guard": "font-size:10.5px;fill:var(--jp-ui-font-color2,#555);paint-order:stroke;"
    "stroke:var(--jp-layout-color0,#fff);stroke-width:4px;stroke-linejoin:round",
}
_STYLE = (
    "<style>"
    + "".join(
        ",".join(f"{_SCOPE} {s}".rstrip() for s in selectors.split(", ")) + f"{{{body}}}"
        for selectors, body in _RULES.items()
    )
    + "</style>"
)
_TONE = {"completed": "ok", "paused": "warn", "running": ""}  # any other ending: bad


@dataclass(frozen=True)
class StateDiagram:
    """`machine` drawn with `path` (the states a run went through in order; the last
    is where it is) highlighted; `status` (the run's) colours the current state."""

    machine: StateMachine
    path: tuple[str, ...] = ()
    status: str | None = None

    def svg(self) -> str:
        """The drawing alone (an ``<svg>`` element; it needs :meth:`_repr_html_`'s style)."""
        return _Layout(self.machine).svg(self.path, self.status)

    def _repr_html_(self) -> str:
        machine = self.machine
        title = f"State machine <code>{_html.esc(machine.name)}</code>"
        about = (
            f'<div class="muted">{_html.esc(machine.description)}</div>'
            if machine.description
            else ""
        )
        caption = ""
        if self.path:
            status = f" ({_html.status_html(self.status)})" if self.status else ""
            caption = (
                f"<div><b>Path</b> {_html.esc(state_path_text(self.path))}"
                f" &nbsp;<b>now</b> <code>{_html.esc(self.path[-1])}</code>{status}</div>"
            )
        return _html.box(title, about + _STYLE + self.svg() + caption)


def state_path_text(path: Sequence[str]) -> str:
    """``a → b → c``."""
    return " → ".join(path)


class _Layout:
    """Where each state and transition of a machine is drawn."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        self.states = {s.name: s for s in machine.states}
        self.rank, self.back = _ranks(machine)
        self.width = max(
            max(len(n) * _NAME_PX, len(_tools_line(s.tool_names)) * _SMALL_PX) + 28
            for n, s in self.states.items()
        )
        guards = [t.guard_name or "" for s in machine.states for t in s.transitions]
        self.gap = max(_COL_GAP, max(len(g) for g in guards) * _SMALL_PX + 44)
        self.xy = self._place()
        self.ports = self._ports()

    def _place(self) -> dict[str, tuple[float, float]]:
        columns: dict[int, list[str]] = {}
        for name in self.states:  # machine order breaks ties
            columns.setdefault(self.rank[name], []).append(name)
        row: dict[str, float] = {}
        for r in sorted(columns):
            column = columns[r]
            if r > 0:  # each state next to the states leading to it
                column.sort(key=lambda n: self._barycentre(n, row))
            for i, name in enumerate(column):
                row[name] = i - (len(column) - 1) / 2
        x0 = _PAD + 22  # room for the start marker
        return {
            name: (x0 + self.rank[name] * (self.width + self.gap), row[name] * (_H + _ROW_GAP))
            for name in self.states
        }

    def _ports(self) -> dict[tuple[str, str], tuple[float, float]]:
        """Where each forward transition leaves its state (right side) and enters its
        target (left side), as heights: spread out, in the order of the other ends."""
        outs: dict[str, list[str]] = {}
        ins: dict[str, list[str]] = {}
        for s in self.machine.states:
            for t in s.targets:
                if (s.name, t) not in self.back:
                    outs.setdefault(s.name, []).append(t)
                    ins.setdefault(t, []).append(s.name)
        ports: dict[tuple[str, str], tuple[float, float]] = {}
        for source, targets in outs.items():
            for i, t in enumerate(sorted(targets, key=lambda n: self.xy[n][1])):
                ports[(source, t)] = (_spread(i, len(targets)), 0.0)
        for target, sources in ins.items():
            for i, source in enumerate(sorted(sources, key=lambda n: self.xy[n][1])):
                ports[(source, target)] = (ports[(source, target)][0], _spread(i, len(sources)))
        return ports

    def _barycentre(self, name: str, row: Mapping[str, float]) -> float:
        before = [
            row[s.name]
            for s in self.machine.states
            if name in s.targets and s.name in row and (s.name, name) not in self.back
        ]
        return sum(before) / len(before) if before else 0.0

    def svg(self, path: Sequence[str], status: str | None) -> str:
        taken = set(itertools.pairwise(path))
        visited = set(path)
        current = path[-1] if path else None
        tone = _TONE.get(status or "running", "bad")
        marker = "m" + hashlib.sha1(repr((self.machine.to_spec(), path)).encode()).hexdigest()[:8]
        parts: list[str] = []
        labels: list[str] = []
        for state in self.machine.states:
            for t in state.transitions:
                on = (state.name, t.to) in taken
                d, label_at = self._edge(state.name, t.to)
                cls = "edge taken" if on else "edge"
                end = f"{marker}-{'on' if on else 'off'}"
                parts.append(f'<path class="{cls}" d="{d}" marker-end="url(#{end})"/>')
                if t.guard_name:
                    x, y = label_at
                    labels.append(
                        f'<text class="guard" x="{x:.1f}" y="{y:.1f}" text-anchor="middle">'
                        f"[{_html.esc(t.guard_name)}]</text>"
                    )
        x, y = self.xy[self.machine.initial]
        parts.append(f'<circle class="start" cx="{x - 18:.1f}" cy="{y + _H / 2:.1f}" r="5"/>')
        parts.append(
            f'<path class="edge{" taken" if path else ""}" d="M{x - 13:.1f},{y + _H / 2:.1f} '
            f'H{x - 1:.1f}" marker-end="url(#{marker}-{"on" if path else "off"})"/>'
        )
        for name in self.states:
            classes = ["state-node"]
            if name in visited:
                classes.append("visited")
            if name == current:
                classes += ["current", tone] if tone else ["current"]
            parts.append(self._node(name, " ".join(classes)))
        top = min(y for _, y in self.xy.values()) - _PAD - 14 * self._loops_above()
        bottom = max(y for _, y in self.xy.values()) + _H + _PAD + self._room_below()
        right = max(x for x, _ in self.xy.values()) + self.width + _PAD
        width, height = right, bottom - top
        defs = "".join(
            f'<marker id="{marker}-{kind}" viewBox="0 0 10 10" refX="9" refY="5" '
            'markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" '
            'orient="auto-start-reverse">'
            f'<path class="arrow{" taken" if kind == "on" else ""}" d="M0,0 L10,5 L0,10 z"/>'
            "</marker>"
            for kind in ("off", "on")
        )
        return (
            f'<svg class="agentlab-states" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 {top:.1f} {width:.0f} '
            f'{height:.0f}" role="img" aria-label="state machine {_html.esc(self.machine.name)}">'
            f"<defs>{defs}</defs>{''.join(parts)}{''.join(labels)}</svg>"
        )

    def _node(self, name: str, classes: str) -> str:
        state = self.states[name]
        x, y = self.xy[name]
        w = self.width
        tools = _tools_line(state.tool_names)
        inner = (
            f'<rect class="inner" x="{x + 3:.1f}" y="{y + 3:.1f}" width="{w - 6:.1f}" '
            f'height="{_H - 6}" rx="4"/>'
            if state.terminal
            else ""
        )
        name_y = y + (_H / 2 + 4 if not tools else 15.5)
        text = (
            f'<text x="{x + w / 2:.1f}" y="{name_y:.1f}" text-anchor="middle">'
            f"{_html.esc(name)}</text>"
        )
        if tools:
            text += (
                f'<text class="tools" x="{x + w / 2:.1f}" y="{y + 29.5:.1f}" '
                f'text-anchor="middle">{_html.esc(tools)}</text>'
            )
        tip = state.instructions or ("terminal state" if state.terminal else name)
        return (
            f'<g class="{classes}" data-state="{_html.esc(name)}"><title>{_html.esc(tip)}</title>'
            f'<rect class="state" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_H}" '
            f'rx="6"/>{inner}{text}</g>'
        )

    def _edge(self, source: str, target: str) -> tuple[str, tuple[float, float]]:
        """The SVG path of a transition and where its guard's label goes."""
        (x1, y1), (x2, y2), w = self.xy[source], self.xy[target], self.width
        if source == target:  # a loop over the top of the state
            a, b = x1 + w * 0.35, x1 + w * 0.65
            return (
                f"M{a:.1f},{y1:.1f} C{a:.1f},{y1 - 34:.1f} {b:.1f},{y1 - 34:.1f} {b:.1f},{y1:.1f}",
                ((a + b) / 2, y1 - 30),
            )
        if (source, target) in self.back:  # below the states, right to left
            depth = _H + 26 + 12 * (self.rank[source] - self.rank[target])
            sx, tx = x1 + w * 0.4, x2 + w * 0.6
            bottom = max(y1, y2)
            points = [(sx, y1 + _H), (sx, bottom + depth), (tx, bottom + depth), (tx, y2 + _H)]
        else:
            out, into = self.ports[(source, target)]
            sx, sy = x1 + w, y1 + _H * out
            tx, ty = x2, y2 + _H * into
            if self.rank[target] - self.rank[source] > 1 and self._blocked(source, target):
                over = min(y1, y2) - _ROW_GAP  # around the states in between, above them
                points = [(sx, sy), (sx + self.gap, over), (tx - self.gap, over), (tx, ty)]
            else:
                bend = self.gap * 0.5
                points = [(sx, sy), (sx + bend, sy), (tx - bend, ty), (tx, ty)]
        (p0, p1, p2, p3) = points
        d = (
            f"M{p0[0]:.1f},{p0[1]:.1f} C{p1[0]:.1f},{p1[1]:.1f} "
            f"{p2[0]:.1f},{p2[1]:.1f} {p3[0]:.1f},{p3[1]:.1f}"
        )
        if (source, target) in self.back:
            return d, ((p1[0] + p2[0]) / 2, p1[1] - 4)
        # over the last, level stretch before the target, where transitions fanning
        # out of one state are apart
        return d, (p3[0] - self.gap / 2, p3[1] - 5)

    def _blocked(self, source: str, target: str) -> bool:
        """Whether a state between the columns of `source` and `target` sits in the way."""
        low, high = sorted((self.xy[source][1], self.xy[target][1]))
        return any(
            self.rank[source] < self.rank[n] < self.rank[target] and low - _H <= y <= high + _H
            for n, (_, y) in self.xy.items()
        )

    def _loops_above(self) -> int:
        top = min(y for _, y in self.xy.values())
        loops = any(s.name in s.targets and self.xy[s.name][1] == top for s in self.machine.states)
        over = any(
            self.rank[t] - self.rank[s.name] > 1 and (s.name, t) not in self.back
            for s in self.machine.states
            for t in s.targets
        )
        return 2 * loops + 2 * over

    def _room_below(self) -> float:
        spans = [self.rank[s] - self.rank[t] for s, t in self.back if s != t]
        return 26 + 12 * max(spans) if spans else 0.0  # the dip of the lowest one


def _spread(i: int, n: int) -> float:
    """The height (0 top, 1 bottom of a state) of the `i`-th of `n` ports on a side."""
    return 0.5 if n == 1 else 0.25 + 0.5 * i / (n - 1)


def _tools_line(names: Sequence[str]) -> str:
    line = ", ".join(names)
    return line if len(line) <= 40 else line[:39] + "…"


def _ranks(machine: StateMachine) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Each state's column (the longest path to it from the initial state, over
    transitions that do not go back) and the transitions that go back (close a cycle
    in a depth-first walk from the initial state)."""
    targets = {s.name: s.targets for s in machine.states}
    back: set[tuple[str, str]] = set()
    seen: set[str] = set()
    stack: list[str] = []

    def walk(name: str) -> None:
        seen.add(name)
        stack.append(name)
        for target in targets[name]:
            if target in stack:
                back.add((name, target))
            elif target not in seen:
                walk(target)
        stack.pop()

    walk(machine.initial)
    for name in targets:  # states the initial one does not reach (a machine refuses them)
        if name not in seen:
            walk(name)
    rank = dict.fromkeys(targets, 0)
    changed = True
    while changed:  # longest path over the acyclic forward transitions
        changed = False
        for source, outs in targets.items():
            for target in outs:
                if (source, target) not in back and rank[target] < rank[source] + 1:
                    rank[target] = rank[source] + 1
                    changed = True
    return rank, back
