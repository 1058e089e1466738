"""`StateMachineAgent`: a run moves through the states of a :class:`StateMachine`;
in each, the model may use that state's tools and choose only among the
transitions allowed there and then.

Each step offers the current state's tools plus the transition tool ``transition``,
whose definition is narrowed to an ``enum`` of the transitions allowed now (guards
are evaluated before the request; a transition whose guard is false is not in it),
in a strict schema (``additionalProperties: false``, ``to`` required). Once a
transition is open, a tool that has already returned in this visit of the state
(or that a person declined) is not offered again: each visit does the state's work
once, then decides (give a state a transition to itself to let it repeat its work).
The model must call one of what is offered (``tool_choice``): the local model
cannot generate anything else (grammar-constrained decoding); an OpenAI-compatible
model gets the enum and ``tool_choice``. The tool still checks the target against
the state the run is in and refuses anything else with an error for the model,
leaving the state as it was.
A state's tools are refused outside it in the same way. In a terminal state the
step offers no tool and asks for the final answer (the state's instructions say how
to phrase it), which ends the run.

The state is derived from the run's steps alone (the ``transition`` calls that
succeeded, whose results read ``from → to``), so a run rebuilt from its trace (after
a pause for approval, a crash, in another process) carries on in the right state.
Budgets per state (steps, tokens, cost spent in the state over all its visits) are
checked before each step: one used up ends the run with status
``budget_exceeded`` and an explanation naming the state and the budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agentlab._context import current_run
from agentlab.agents.agent import Agent
from agentlab.agents.state_machine import State, StateMachine, Transition
from agentlab.agents.state_spec import StateMachineError
from agentlab.agents.turn import StopRun, Turn
from agentlab.budgets import Budget
from agentlab.errors import BudgetExceededError, ToolRetry, UserError
from agentlab.messages import Message, SystemMessage, ToolDefinition, UserMessage
from agentlab.models import Model
from agentlab.tools import Tool
from agentlab.tools.calls import ToolHandler, ToolInvocation, ToolOutcome, build_chain

if TYPE_CHECKING:
    from agentlab.agents.run import Run
    from agentlab.agents.state_diagram import StateDiagram

__all__ = [
    "METADATA_KEY",
    "TRANSITION_TOOL",
    "StateMachineAgent",
    "StateSpend",
    "last_result",
    "transition_target",
]

TRANSITION_TOOL = "transition"
"""The name of the tool that moves a run to its next state."""

METADATA_KEY = "state_machine"
"""The key of a run's metadata that holds its machine's spec (for views of stored runs)."""


_RESULT_CHARS = 300  # of each tool result the final instruction quotes


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class StateSpend:
    """What a run has spent while in one state (over all its visits)."""

    steps: int = 0
    tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class _Position:
    path: tuple[str, ...]
    spent: dict[str, StateSpend] = field(default_factory=dict)
    done: frozenset[str] = frozenset()  # tools that returned in this visit of the state


def transition_target(arguments: str | None) -> str | None:
    """The state a ``transition`` call's JSON arguments name (None if they name none)."""
    try:
        data = json.loads(arguments or "{}")
    except ValueError:
        return None
    target = data.get("to") if isinstance(data, dict) else None
    return target if isinstance(target, str) else None


def last_result(run: Run, tool: str) -> Any:
    """The result of the latest successful call to `tool` in `run` (decoded from JSON
    when it is JSON), or None: what a guard usually reads."""
    for step in reversed(run.steps):
        for call in reversed(step.tool_calls):
            if call.name == tool and call.status == "ok":
                try:
                    return json.loads(call.result)
                except ValueError:
                    return call.result
    return None


class StateMachineAgent(Agent):
    """An agent that follows a :class:`StateMachine` (see the module docstring).

    Args:
        model: a :class:`Model` or a string for :func:`~agentlab.models.infer_model`.
        machine: the states, their tools and transitions.
        tools: the tools the states name (tools given as objects in the states
            are added).
        **options: the options of :class:`~agentlab.agents.Agent` (name,
            instructions, max_steps, budget, trace, memory, ...).
    """

    default_instructions = (
        "You are an assistant that follows a fixed procedure, one state at a time. In "
        f"each state, do what the state asks with its tools, then call {TRANSITION_TOOL} "
        "to move to the next state. Never guess facts: look them up."
    )

    def __init__(
        self,
        model: Model | str,
        machine: StateMachine,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        **options: Any,
    ) -> None:
        if not isinstance(machine, StateMachine):
            raise UserError(
                f"machine must be a StateMachine (got {type(machine).__name__}); load a spec "
                "with StateMachine.from_spec(path, guards={...})."
            )
        self.machine = machine
        own = [t for s in machine.states for t in s.tools if isinstance(t, Tool)]
        given = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        unique = list({id(t): t for t in [*given, *own]}.values())
        if any(t.name == TRANSITION_TOOL for t in unique):
            raise UserError(
                f"A tool is named {TRANSITION_TOOL!r}, the name of the state machine's "
                f"transition tool; rename it (@tool(name=...))."
            )
        super().__init__(model, [*unique, self._transition_tool()], **options)
        self._check_machine()
        for name in {n for s in machine.states for n in s.tool_names}:
            self.tool_handlers[name] = build_chain(
                [self._state_gate(name)], innermost=self.tool_handlers[name]
            )

    def _check_machine(self) -> None:
        """Tool and guard names the agent cannot resolve; cost budgets it cannot keep."""
        problems = []
        tools = ", ".join(n for n in self.tool_names if n != TRANSITION_TOOL) or "none"
        for state in self.machine.states:
            for name in state.tool_names:
                if name not in self.tools_by_name:
                    problems.append(
                        f"states.{state.name}.tools: {name!r} is not a tool of the agent (its "
                        f"tools: {tools}); pass it in "
                        "StateMachineAgent(tools=[...]) or fix the name."
                    )
            for i, t in enumerate(state.transitions):
                if t.guard is not None and self.machine.guard(t) is None:
                    problems.append(
                        f"states.{state.name}.transitions[{i}].guard: {t.guard!r} is not "
                        f"registered; pass guards={{{t.guard!r}: function}} to "
                        "StateMachine.from_spec."
                    )
            if state.budget is not None and state.budget.cost is not None:
                self.check_budget(Budget(cost=state.budget.cost))
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise StateMachineError(
                f"State machine {self.machine.name!r} does not fit agent {self.name!r}:\n{listed}"
            )

    # -- the state, from the run's steps ----------------------------------------------

    def _position(self, run: Run) -> _Position:
        path = [self.machine.initial]
        spent: dict[str, StateSpend] = {}
        done: set[str] = set()
        for step in run.steps:
            spend = spent.setdefault(path[-1], StateSpend())
            spend.steps += 1
            spend.tokens += step.usage.total_tokens
            spend.cost += step.cost or 0.0
            for call in step.tool_calls:
                if call.name == TRANSITION_TOOL and call.status == "ok":
                    target = transition_target(call.arguments)
                    if target is not None:
                        path.append(target)
                        done = set()
                elif call.status in ("ok", "denied"):
                    done.add(call.name)
        return _Position(tuple(path), spent, frozenset(done))

    def current_state(self, run: Run) -> State:
        """The state `run` is in."""
        return self.machine.state(self._position(run).path[-1])

    def state_path(self, run: Run) -> list[str]:
        """The states `run` went through, in order (the last is the current one)."""
        return list(self._position(run).path)

    def spent_in(self, run: Run, state: str) -> StateSpend:
        """What `run` has spent while in `state`."""
        return self._position(run).spent.get(state, StateSpend())

    def allowed(self, run: Run, state: State) -> list[Transition]:
        """The transitions out of `state` whose guards hold for `run` now."""
        allowed = []
        for t in state.transitions:
            guard = self.machine.guard(t)
            if guard is None:
                allowed.append(t)
                continue
            try:
                holds = bool(guard(run))
            except Exception as exc:
                raise StateMachineError(
                    f"The guard {t.guard_name!r} of {state.name} → {t.to} raised "
                    f"{type(exc).__name__}: {exc}. Fix the guard (it is given the run: "
                    "read run.steps, or last_result(run, tool))."
                ) from exc
            if holds:
                allowed.append(t)
        return allowed

    # -- each step ----------------------------------------------------------------------

    def opening_messages(self, input: str) -> list[Message]:
        system = self.instructions
        if self.machine.description:
            system += f"\n\nThe procedure: {self.machine.description}"
        return [SystemMessage(content=system), UserMessage(content=input)]

    def turn(self, run: Run) -> Turn:
        position = self._position(run)
        state = self.machine.state(position.path[-1])
        if state.terminal:
            return Turn((), "none", self._new(run, self._final_instruction(run, state, position)))
        self._check_budget(state, position.spent.get(state.name, StateSpend()))
        allowed = self.allowed(run, state)
        names = [n for n in state.tool_names if not (allowed and n in position.done)]
        tools = [self.tools_by_name[name].definition for name in names]
        if allowed:
            tools.append(self._narrowed(state, allowed))
        if not tools:
            guards = ", ".join(str(t.guard_name) for t in state.transitions)
            raise StopRun(
                "state_machine",
                f"in state {state.name!r} no transition is allowed (its guards {guards} are "
                "false) and the state has no tools that could change that.",
                f"Give state {state.name!r} the tools its guards depend on, or a transition "
                "without a guard (e.g. to a terminal state that explains the refusal).",
            )
        choice = "required" if len(tools) > 1 else tools[0].name
        return Turn(tools, choice, self._new(run, self._instruction(state, allowed)))

    @staticmethod
    def _new(run: Run, instruction: str) -> str | None:
        """`instruction`, unless it is the latest one the conversation holds (it is
        given again when the state or what it allows changes, and after a run is
        rebuilt from its trace without it)."""
        latest = next((m for m in reversed(run.messages) if isinstance(m, UserMessage)), None)
        return None if latest is not None and latest.content == instruction else instruction

    def _check_budget(self, state: State, spend: StateSpend) -> None:
        budget = state.budget
        if budget is None:
            return
        limits = (
            ("steps", budget.steps, spend.steps, f"{budget.steps} steps", f"{spend.steps}"),
            ("tokens", budget.tokens, spend.tokens, f"{budget.tokens} tokens", f"{spend.tokens}"),
            ("cost", budget.cost, spend.cost, f"${budget.cost}", f"${spend.cost:.6f}"),
        )
        for kind, limit, used, shown, used_shown in limits:
            if limit is not None and used >= limit:
                raise BudgetExceededError(
                    f"state {state.name!r} used its budget of {shown} ({used_shown} spent in "
                    "the state) without leaving it",
                    budget=f"state {state.name} {kind}",
                    limit=float(limit),
                    spent=float(used),
                    hint=f"Look at the steps in state {state.name!r}: if a tool kept failing "
                    "or the model did not move on, fix the tool, the state's instructions or "
                    f"its transitions' descriptions; if the state needs more, raise its "
                    f"budget ({kind} in the state's budget).",
                )

    def _narrowed(self, state: State, allowed: Sequence[Transition]) -> ToolDefinition:
        """The transition tool as this step offers it: `to` is one of `allowed`."""
        when = "; ".join(
            f"{t.to!r}" + (f" when {t.description}" if t.description else "") for t in allowed
        )
        return ToolDefinition(
            name=TRANSITION_TOOL,
            description=f"Move from state {state.name!r} to the next state, once this "
            f"state's work is done. Allowed now: {when}.",
            parameters={
                "type": "object",
                "properties": {
                    "to": {
                        "type": "string",
                        "enum": [t.to for t in allowed],
                        "description": "The next state.",
                    }
                },
                "required": ["to"],
                "additionalProperties": False,
            },
        )

    def _instruction(self, state: State, allowed: Sequence[Transition]) -> str:
        parts = [f"[State: {state.name}]"]
        if state.instructions:
            parts.append(state.instructions.strip())
        if allowed:
            targets = ", ".join(
                t.to + (f" ({t.description})" if t.description else "") for t in allowed
            )
            parts.append(f"When this state's work is done, call {TRANSITION_TOOL} with: {targets}.")
        else:
            parts.append("Do this state's work with its tools first: no transition is open yet.")
        return " ".join(parts)

    def _final_instruction(self, run: Run, state: State, position: _Position) -> str:
        """Ask for the final answer, with the path and the latest result of each tool
        the states used (so the answer rests on them, even for a small model)."""
        how = state.instructions.strip() or "Tell the user the outcome."
        results: dict[str, str] = {}
        for step in run.steps:
            for call in step.tool_calls:
                if call.name != TRANSITION_TOOL:
                    results[call.name] = f"{call.status}: {_clip(call.result, _RESULT_CHARS)}"
        facts = "".join(f"\n- {name}: {result}" for name, result in results.items())
        return (
            f"The procedure is finished ({' → '.join(position.path)}). {how} Reply with "
            "the final answer, without calling tools." + (f"\nFacts:{facts}" if facts else "")
        )

    # -- the transition tool and the state gate ----------------------------------------

    def _transition_tool(self) -> Tool:
        def transition(to: str) -> str:
            """Move the procedure to its next state, once the current state's work is done.

            Args:
                to: The next state (one of those allowed from the current state).
            """
            return self._move(current_run(), to)

        targets = tuple(dict.fromkeys(t for s in self.machine.states for t in s.targets))
        transition.__annotations__ = {"to": Literal[targets], "return": str}
        return Tool(transition)

    def _move(self, run: Run, to: str) -> str:
        """Check `to` against the state `run` is in; ``from → to`` when allowed."""
        state = self.current_state(run)
        allowed = [t.to for t in self.allowed(run, state)] if not state.terminal else []
        if to in allowed:
            return f"{state.name} → {to}"
        why = "it is not a transition of this state"
        guarded = next((t for t in state.transitions if t.to == to), None)
        if guarded is not None:
            why = f"its guard {guarded.guard_name!r} is false now"
        raise ToolRetry(
            f"Transition refused: the procedure is in state {state.name!r} and cannot go to "
            f"{to!r} ({why}). Allowed now: {', '.join(allowed) or 'none'}. The state is unchanged."
        )

    def _state_gate(self, name: str) -> Callable[[ToolInvocation, ToolHandler], Any]:
        async def gate(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
            run = invocation.run
            if run is not None:
                state = self.current_state(run)
                if name not in state.tool_names:
                    return ToolOutcome(
                        "unknown_tool",
                        f"Tool {name!r} cannot be used in state {state.name!r} (its tools: "
                        f"{', '.join(state.tool_names) or 'none'}); the call was not made.",
                    )
            return await rest(invocation)

        return gate

    # -- running and showing -------------------------------------------------------------

    def start(self, input: str, *, metadata: dict[str, Any] | None = None, **options: Any) -> Run:
        """:meth:`Agent.start`; the run's metadata records the machine's spec (under
        ``state_machine``), so views of the stored run can draw it."""
        recorded = {METADATA_KEY: self.machine.to_spec(), **(metadata or {})}
        return super().start(input, metadata=recorded, **options)

    def diagram(self, run: Run) -> StateDiagram:
        """The machine with `run`'s path through it highlighted (shows itself in a notebook)."""
        return self.machine.diagram(self.state_path(run), run.status)

    def structure_html(self, run: Run) -> str:
        """The machine with `run`'s path highlighted, for the run's notebook view."""
        return self.diagram(run)._repr_html_()

    def _repr_html_(self) -> str:
        return super()._repr_html_() + self.machine._repr_html_()
