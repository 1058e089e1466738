"""A state machine for :class:`~agentlab.agents.state_machine_agent.StateMachineAgent`:
states with their own instructions, tools and budget, and the transitions allowed
out of each, optionally guarded.

Define one in Python or load it from a YAML/JSON spec::

    name: refund_flow
    initial: identify_order          # default: the first state
    states:
      identify_order:
        instructions: Find the order the customer means.
        tools: [get_order]           # names of the agent's tools
        budget: {steps: 4}           # steps, tokens, cost spent in the state
        transitions:
          - to: check_eligibility
            guard: order_found       # a guard registered in Python (see below)
            description: the order was found
      ...
      done:
        terminal: true
        instructions: Tell the customer what happened.

A guard is a Python function of the run (``def order_found(run) -> bool``); a spec
names it, and the functions are given to :meth:`StateMachine.from_spec` as
``guards={"order_found": order_found}``. In Python, ``Transition(to=...,
guard=order_found)`` names it after the function. Tool and guard names are checked
against what the agent has when the agent is built; everything else (unknown
states, duplicates, unreachable states, dead ends, no terminal state) when the
machine is.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from agentlab.agents.state_spec import StateMachineError, read_spec, write_spec
from agentlab.tools import Tool

if TYPE_CHECKING:
    from agentlab.agents.state_diagram import StateDiagram

__all__ = ["Guard", "State", "StateBudget", "StateMachine", "StateMachineError", "Transition"]

Guard = Callable[[Any], bool]
"""A transition's condition: called with the run (:class:`~agentlab.agents.Run`)
before each step of its state; the transition is offered only when it returns True."""

_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"


_nested: ContextVar[bool] = ContextVar("agentlab_state_machine_nested", default=False)
_where: ContextVar[str | None] = ContextVar("agentlab_state_machine_where", default=None)


class _SpecModel(BaseModel):
    """A part of a machine: frozen, no unknown keys, and a :class:`StateMachineError`
    naming each wrong key (in spec terms) instead of pydantic's error. Pydantic calls
    ``__init__`` for the parts inside a part too: only the outermost one translates."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        if _nested.get():
            super().__init__(**data)
            return
        token = _nested.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            where = _where.get() or f"{type(self).__name__}(...)"
            raise StateMachineError(_describe(exc, type(self).__name__, data, where)) from None
        finally:
            _nested.reset(token)


class StateBudget(_SpecModel):
    """What a run may spend while in one state, over all its visits: `steps` (model
    calls of the loop, failed ones included), `tokens` (input plus output) and `cost`
    (US dollars; the model needs a price). Checked before each step of the state."""

    steps: PositiveInt | None = None
    tokens: PositiveInt | None = None
    cost: PositiveFloat | None = None


class Transition(_SpecModel):
    """An allowed move to state `to`; with a `guard`, only while it returns True.
    `description` tells the model when to take it."""

    to: str
    guard: str | Guard | None = None
    description: str = ""

    @property
    def guard_name(self) -> str | None:
        """The name a spec knows the guard by."""
        if self.guard is None or isinstance(self.guard, str):
            return self.guard
        return getattr(self.guard, "__name__", None)

    def to_spec(self) -> str | dict[str, Any]:
        """The spec entry: the target's name alone when there is nothing else."""
        entry = {"to": self.to, "guard": self.guard_name, "description": self.description}
        kept = {k: v for k, v in entry.items() if v}
        return self.to if list(kept) == ["to"] else kept


class State(_SpecModel):
    """One state: its `instructions` (what the model does here), its `tools` (names
    of the agent's tools, or :class:`~agentlab.tools.Tool` objects), the
    `transitions` out of it, whether it is `terminal` (the run ends with the model's
    final answer), and its `budget`."""

    name: str = Field(pattern=_NAME_PATTERN)
    instructions: str = ""
    tools: tuple[str | Tool, ...] = ()
    transitions: tuple[Transition, ...] = ()
    terminal: bool = False
    budget: StateBudget | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        if isinstance(value, str | Tool) or callable(value):
            value = [value]
        return [v if isinstance(v, str | Tool) or not callable(v) else Tool(v) for v in value]

    @field_validator("transitions", mode="before")
    @classmethod
    def _transitions(cls, value: Any) -> Any:
        if isinstance(value, str | Transition | Mapping):
            value = [value]
        return [{"to": v} if isinstance(v, str) else v for v in value]

    @property
    def tool_names(self) -> list[str]:
        return [t if isinstance(t, str) else t.name for t in self.tools]

    @property
    def targets(self) -> list[str]:
        return [t.to for t in self.transitions]

    def to_spec(self) -> dict[str, Any]:
        """The spec body of this state (its name is the key)."""
        body: dict[str, Any] = {}
        if self.instructions:
            body["instructions"] = self.instructions
        if self.tools:
            body["tools"] = self.tool_names
        if self.transitions:
            body["transitions"] = [t.to_spec() for t in self.transitions]
        if self.terminal:
            body["terminal"] = True
        if self.budget is not None:
            body["budget"] = self.budget.model_dump(exclude_none=True)
        return body


class StateMachine(_SpecModel):
    """States and the transitions between them; the run starts in `initial` (default:
    the first state) and ends in a terminal state. `guards` are the functions that
    guards named in a spec refer to."""

    name: str = Field(default="state_machine", pattern=_NAME_PATTERN)
    description: str = ""
    initial: str = ""
    states: tuple[State, ...]
    guards: dict[str, Guard] = Field(default_factory=dict, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _states_by_name(cls, data: Any) -> Any:
        """A spec's ``states`` mapping (name: body) as a list of states."""
        if isinstance(data, dict) and isinstance(data.get("states"), Mapping):
            states = [
                {**(body or {}), "name": name} if isinstance(body, Mapping | None) else body
                for name, body in data["states"].items()
            ]
            data = {**data, "states": states}
        return data

    @model_validator(mode="after")
    def _check(self) -> StateMachine:
        problems = _problems(self)
        if problems:
            raise ValueError(_listed(problems))
        if not self.initial:
            object.__setattr__(self, "initial", self.states[0].name)
        guards = dict(self.guards)
        for state in self.states:
            for t in state.transitions:
                if callable(t.guard):
                    guards.setdefault(str(t.guard_name), t.guard)
        object.__setattr__(self, "guards", guards)
        return self

    # -- loading and saving ------------------------------------------------------------

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any] | str | os.PathLike[str],
        *,
        guards: Mapping[str, Guard] | None = None,
    ) -> StateMachine:
        """A machine from a spec: a mapping, or a YAML/JSON file (a relative path is
        read from the working directory, or an exported package's copy; see
        :mod:`~agentlab.agents.state_spec`). `guards` are the functions the spec's
        guards name."""
        data, where = read_spec(spec)
        token = _where.set(where)
        try:
            return cls(**{**data, "guards": dict(guards or {})})
        finally:
            _where.reset(token)

    def to_spec(self) -> dict[str, Any]:
        """The machine as spec data (guards and tools by name): ``from_spec`` of it,
        with the same guards, gives this machine back."""
        spec: dict[str, Any] = {"name": self.name}
        if self.description:
            spec["description"] = self.description
        spec["initial"] = self.initial
        spec["states"] = {s.name: s.to_spec() for s in self.states}
        return spec

    def save(self, path: str | os.PathLike[str]) -> os.PathLike[str]:
        """Write the spec to `path` (``.yaml``, ``.yml`` or ``.json``)."""
        return write_spec(self.to_spec(), path)

    # -- reading -------------------------------------------------------------------------

    def state(self, name: str) -> State:
        """The state called `name`."""
        for state in self.states:
            if state.name == name:
                return state
        raise StateMachineError(
            f"State machine {self.name!r} has no state {name!r}{_did_you_mean(name, self.names)}."
        )

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.states]

    def guard(self, transition: Transition) -> Guard | None:
        """The function of `transition`'s guard (None: no guard, or not registered)."""
        if callable(transition.guard):
            return transition.guard
        return None if transition.guard is None else self.guards.get(transition.guard)

    def diagram(self, path: Sequence[str] = (), status: str | None = None) -> StateDiagram:
        """The machine drawn, with `path` (the states a run went through, the last one
        current) highlighted; `status` is the run's."""
        from agentlab.agents.state_diagram import StateDiagram

        return StateDiagram(self, tuple(path), status)

    def _repr_html_(self) -> str:
        return self.diagram()._repr_html_()


# -- checks ------------------------------------------------------------------------------


def _problems(machine: StateMachine) -> list[str]:
    """Every mistake of `machine`'s shape, each naming its key and the fix."""
    states = machine.states
    if not states:
        return ["states: a machine needs at least one state (and a terminal one)."]
    names = [s.name for s in states]
    problems = [
        f"states.{n}: the name is used by {names.count(n)} states; names must be unique."
        for n in sorted({n for n in names if names.count(n) > 1})
    ]
    if machine.initial and machine.initial not in names:
        problems.append(
            f"initial: {machine.initial!r} is not a state{_did_you_mean(machine.initial, names)}."
        )
    for state in states:
        where = f"states.{state.name}"
        for i, t in enumerate(state.transitions):
            if t.to not in names:
                problems.append(
                    f"{where}.transitions[{i}].to: {t.to!r} is not a state"
                    f"{_did_you_mean(t.to, names)}; the states are {', '.join(names)}."
                )
            if callable(t.guard) and t.guard_name in (None, "<lambda>"):
                problems.append(
                    f"{where}.transitions[{i}].guard: a lambda has no name a spec or "
                    "diagram can show; define the guard with def."
                )
        problems += [
            f"{where}.transitions: the transition to {x!r} appears twice; keep one per "
            "target (a guard can check both conditions)."
            for x in sorted({x for x in state.targets if state.targets.count(x) > 1})
        ]
        if state.terminal and state.transitions:
            problems.append(
                f"{where}: a terminal state ends the run, so it has no transitions; remove "
                "them or set terminal: false."
            )
        if state.terminal and state.tools:
            problems.append(
                f"{where}.tools: a terminal state only asks for the final answer; move its "
                "tools to the state before it."
            )
        if not state.terminal and not state.transitions:
            problems.append(
                f"{where}: a state that is not terminal needs transitions (or terminal: true)."
            )
    if not any(s.terminal for s in states):
        problems.append("states: no state is terminal; mark the states that end the run terminal.")
    if problems:
        return problems
    return _graph_problems(machine)


def _graph_problems(machine: StateMachine) -> list[str]:
    """Unreachable states and states from which no terminal state can be reached."""
    edges = {s.name: s.targets for s in machine.states}
    start = machine.initial or machine.states[0].name
    reached = _closure([start], edges)
    problems = [
        f"states.{s.name}: unreachable from {start!r} (no transition leads to it); add a "
        "transition to it or remove it."
        for s in machine.states
        if s.name not in reached
    ]
    reverse: dict[str, list[str]] = {n: [] for n in edges}
    for source, targets in edges.items():
        for target in targets:
            reverse[target].append(source)
    ending = _closure([s.name for s in machine.states if s.terminal], reverse)
    problems += [
        f"states.{s.name}: no terminal state can be reached from it, so a run there "
        "could never end; add a transition towards a terminal state."
        for s in machine.states
        if s.name in reached and s.name not in ending
    ]
    return problems


def _closure(start: Iterable[str], edges: Mapping[str, Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges.get(name, ()))
    return seen


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _listed(problems: Sequence[str]) -> str:
    """One problem a line (:func:`_describe` lists the lines)."""
    return "\n".join(problems)


# -- pydantic's errors as spec keys -----------------------------------------------------

_KEYS = {
    "StateMachine": "name, description, initial, states",
    "State": "instructions, tools, transitions, terminal, budget",
    "Transition": "to, guard, description",
    "StateBudget": "steps, tokens, cost",
}


def _describe(exc: ValidationError, model: str, data: Any, where: str) -> str:
    """`exc` as lines naming each key in spec terms (a state by its name)."""
    lines = []
    for error in exc.errors(include_url=False):
        path, part = _key_path(error["loc"], data, model)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key; the keys of {_a(part)} are: {_KEYS[part]}"
        elif error["type"] == "missing":
            message = "required, missing"
        elif error["type"] not in ("value_error", "assertion_error"):
            message += f" (got {error['input']!r})"
        lines += [f"{path}: {line}" if path else line for line in message.splitlines()]
    head = f"{where} is not valid"
    if len(lines) == 1:
        return f"{head}: {lines[0]}"
    return f"{head}:\n" + "\n".join(f"  - {line}" for line in lines)


def _a(part: str) -> str:
    return {"StateMachine": "a machine", "StateBudget": "a budget"}.get(part, f"a {part.lower()}")


def _key_path(loc: Sequence[int | str], data: Any, model: str) -> tuple[str, str]:
    """`loc` as a spec key path (``states.deny.transitions[0].to``) and the part of
    the machine it is in (for the keys that part takes)."""
    parts: list[str] = []
    part = model
    node = data
    for i, key in enumerate(loc):
        if isinstance(key, int):
            name = _state_name(node, key) if part == "State" and loc[i - 1] == "states" else None
            if name is not None:
                parts.append(f".{name}")
            else:
                parts.append(f"[{key}]")
        else:
            parts.append(f".{key}")
            part = {"states": "State", "transitions": "Transition", "budget": "StateBudget"}.get(
                key, part
            )
        node = _child(node, key)
    return "".join(parts).lstrip("."), part


def _state_name(states: Any, index: int) -> str | None:
    if isinstance(states, Mapping):
        names = list(states)
        return str(names[index]) if index < len(names) else None
    if isinstance(states, Sequence) and index < len(states):
        item = states[index]
        name = item.get("name") if isinstance(item, Mapping) else getattr(item, "name", None)
        return name if isinstance(name, str) else None
    return None


def _child(node: Any, key: int | str) -> Any:
    if isinstance(node, Mapping):
        if isinstance(key, int):
            values = list(node.values())
            return values[key] if key < len(values) else None
        return node.get(key)
    if isinstance(node, Sequence) and not isinstance(node, str) and isinstance(key, int):
        return node[key] if key < len(node) else None
    return None
