"""The typed plan of a Plan-and-Execute agent, its checks, and its history in a run.

A :class:`Plan` is numbered :class:`PlanStep` s (numbered from 1 by position): each
has its goal, the tool it calls (or ``"answer"``: the last step, which writes the
reply), hints for the tool's arguments and the earlier steps whose results it needs.
The bounds are small on purpose (a 135M local model fills the schema by constrained
decoding): at most :data:`MAX_PLAN_STEPS` steps (an agent may allow fewer), short
strings.

A run keeps no plan of its own: every plan version is a ``submit_plan`` call in its
steps, and every plan step is the tool call (or the answer) of one of its steps.
:func:`plan_progress` reads them back, from a live run, its steps, or the rows of a
stored run, so a run rebuilt from its trace (resumed, recovered, branched) knows its
plan and where it is in it. :func:`plan_diff` compares two versions.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agentlab.messages import AssistantMessage, Message, ToolMessage

if TYPE_CHECKING:
    from agentlab.agents.records import Step
    from agentlab.agents.run import Run

__all__ = [
    "ANSWER",
    "DEFAULT_PLAN_STEPS",
    "MAX_PLAN_STEPS",
    "SUBMIT_PLAN",
    "Plan",
    "PlanCall",
    "PlanDiff",
    "PlanDiffEntry",
    "PlanProgress",
    "PlanStep",
    "PlanVersion",
    "RejectedPlan",
    "StepState",
    "plan_diff",
    "plan_problems",
    "plan_progress",
    "plan_schema",
    "problems_message",
]

ANSWER = "answer"
"""The tool of a plan's last step: the reply, written from the step results."""
SUBMIT_PLAN = "submit_plan"
"""The control tool a Plan-and-Execute agent submits its plans with."""
MAX_PLAN_STEPS = 8
"""The most steps any plan may have (the answer included); an agent's
``max_plan_steps`` (default :data:`DEFAULT_PLAN_STEPS`) may allow fewer."""
DEFAULT_PLAN_STEPS = 4
"""An agent's default ``max_plan_steps``: a plan of at most 4 steps fits the local
model's 256 output tokens (a 135M model tends to fill every step allowed)."""
RETRYABLE = frozenset({"invalid_arguments", "unknown_tool"})
"""Statuses of a step's call that are the model's slip, not the step failing: the
model is told what was wrong and asked for the same step again."""


def _all_required(schema: dict[str, Any]) -> None:
    """The schema a model fills lists every field as required (defaults are for
    people writing plans in Python), so strict providers accept it and a small
    model always writes each field."""
    schema["required"] = list(schema.get("properties", {}))


class PlanStep(BaseModel):
    """One step of a plan: its goal, the tool it calls ('answer' for the last step),
    hints for the tool's arguments and the earlier steps it depends on."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_all_required)

    goal: str = Field(min_length=1, max_length=48, description="What this step finds out or does.")
    tool: str = Field(
        min_length=1,
        max_length=64,
        description="The tool this step calls; 'answer' for the last step, which replies.",
    )
    args: str = Field(
        "", max_length=48, description="Hints for the tool's arguments, taken from the request."
    )
    depends_on: tuple[Annotated[int, Field(ge=1, le=MAX_PLAN_STEPS)], ...] = Field(
        (),
        max_length=MAX_PLAN_STEPS - 1,
        description="Numbers of the earlier steps whose results this step needs.",
    )

    @field_validator("depends_on")
    @classmethod
    def _distinct(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(value)))


PlanSteps = Annotated[
    tuple[PlanStep, ...],
    Field(
        min_length=1,
        max_length=MAX_PLAN_STEPS,
        description="The steps in order, numbered from 1; the last one 'answer'.",
    ),
]


class Plan(BaseModel):
    """Numbered steps carried out one at a time; the last one answers.

    Building one checks its structure (dependencies only on earlier steps, no
    cycles, one final ``"answer"`` step); :meth:`problems` with an agent's tool
    names also checks the tools. It shows itself as a table in a notebook.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: PlanSteps

    @model_validator(mode="after")
    def _structure(self) -> Plan:
        problems = plan_problems(self.steps)
        if problems:
            raise ValueError(problems_message(problems))
        return self

    def problems(
        self, tools: Collection[str] | None = None, max_steps: int = MAX_PLAN_STEPS
    ) -> list[str]:
        """What is wrong with this plan for an agent with `tools` (names; ``answer``
        is always allowed) and `max_steps`: each problem and how to fix it; empty
        when it is fine."""
        return plan_problems(self.steps, tools, max_steps)

    def __str__(self) -> str:
        return "\n".join(_step_line(n, s) for n, s in enumerate(self.steps, 1))

    def _repr_html_(self) -> str:
        from agentlab.agents.plan_html import plan_html

        return plan_html(self)


def plan_schema(tools: Sequence[str], max_steps: int = DEFAULT_PLAN_STEPS) -> dict[str, Any]:
    """The JSON schema of a plan of at most `max_steps` steps for an agent with `tools`
    (names), as a model is asked to fill it: one alternative per length, each step
    at its position (a tool step's ``tool`` one of `tools`, the last step's "answer",
    ``depends_on`` only earlier numbers). Decoding constrained by it (the local
    model) cannot produce a plan with an unknown tool, a dependency on a later or
    absent step, a cycle, or no final answer. Compact (the fields are described
    once, on ``steps``), as it is part of every planning prompt."""
    fields = PlanStep.model_fields
    text = {"type": "string", "maxLength": _max_length(fields["goal"])}
    defs: dict[str, Any] = {"Text": text}
    if tools:
        defs["Tool"] = {"type": "string", "enum": list(tools)}

    def step(n: int, answer: bool) -> dict[str, Any]:
        earlier = list(range(1, n))
        depends: dict[str, Any] = {"type": "array", "maxItems": len(earlier)}
        if earlier:
            depends["items"] = {"enum": earlier}
        props: dict[str, Any] = {"tool": {"const": ANSWER} if answer else {"$ref": "#/$defs/Tool"}}
        if not answer:  # an answer step needs no argument hints
            props["args"] = {"$ref": "#/$defs/Text"}
        props |= {"goal": {"$ref": "#/$defs/Text"}, "depends_on": depends}
        return {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }

    longest = max_steps if tools else 1
    defs |= {f"Step{n}": step(n, False) for n in range(1, longest)}
    defs |= {f"Answer{n}": step(n, True) for n in range(1, longest + 1)}
    lengths = [
        {
            "type": "array",
            "prefixItems": [
                *({"$ref": f"#/$defs/Step{i}"} for i in range(1, k)),
                {"$ref": f"#/$defs/Answer{k}"},
            ],
            "items": False,
            "minItems": k,
            "maxItems": k,
        }
        for k in range(1, longest + 1)
    ]
    described = "; ".join(
        f"{name} ({fields[name].description})" for name in ("tool", "args", "goal", "depends_on")
    )
    return {
        "type": "object",
        "properties": {
            "steps": {
                "description": f"The steps in order, numbered from 1. Each has: {described}.",
                "anyOf": lengths,
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
        "$defs": defs,
    }


def _max_length(field: Any) -> int:
    """The ``max_length`` of a pydantic string field."""
    return next(m.max_length for m in field.metadata if hasattr(m, "max_length"))


def _step_line(number: int, step: PlanStep) -> str:
    hints = f" ({step.args})" if step.args else ""
    after = f" after {', '.join(map(str, step.depends_on))}" if step.depends_on else ""
    return f"{number}. {step.tool}{hints}: {step.goal}{after}"


def problems_message(problems: Sequence[str]) -> str:
    """Problems as one message: the one, or each numbered."""
    if len(problems) == 1:
        return f"The plan is not valid: {problems[0]}"
    items = " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
    return f"The plan has {len(problems)} problems: {items}"


def plan_problems(
    steps: Sequence[PlanStep],
    tools: Collection[str] | None = None,
    max_steps: int = MAX_PLAN_STEPS,
) -> list[str]:
    """Every problem of `steps`, each saying what to fix: more than `max_steps`,
    dependencies on absent, later or the same step, cycles, a missing or misplaced
    ``answer`` step and, given the agent's `tools`, tools it does not have."""
    problems: list[str] = []
    count = len(steps)
    if count > max_steps:
        problems.append(
            f"the plan has {count} steps but at most {max_steps} are allowed: merge or drop "
            "steps (the last one stays 'answer')."
        )
    if tools is not None:
        allowed = sorted({*tools} - {ANSWER})
        for n, step in enumerate(steps, 1):
            if step.tool != ANSWER and step.tool not in allowed:
                close = difflib.get_close_matches(step.tool, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    f"step {n} uses tool {step.tool!r}, which the agent does not have{hint}: "
                    f"use one of {', '.join(allowed) or '(none)'}, or 'answer' for the last step."
                )
    cycle = _cycle(steps)
    if cycle:
        path = " -> ".join(map(str, cycle))
        problems.append(
            f"steps {path} depend on each other in a cycle: a step can only depend on "
            "earlier steps, so remove one of these dependencies."
        )
    for n, step in enumerate(steps, 1):
        for d in dict.fromkeys(step.depends_on):
            if d == n:
                problems.append(f"step {n} depends on itself: remove {n} from its depends_on.")
            elif d > count:
                problems.append(
                    f"step {n} depends on step {d}, but the plan has steps 1 to {count}: "
                    f"depend only on earlier steps."
                )
            elif d > n and not (cycle and n in cycle and d in cycle):
                problems.append(
                    f"step {n} depends on step {d}, which comes later: a step can only use "
                    f"the results of earlier steps, so reorder the steps or drop {d} from "
                    f"step {n}'s depends_on."
                )
    answers = [n for n, s in enumerate(steps, 1) if s.tool == ANSWER]
    if steps and steps[-1].tool != ANSWER:
        room = " (drop a step to make room)" if count >= max_steps else ""
        problems.append(
            f"the last step (step {count}) uses {steps[-1].tool!r}: end the plan with a step "
            f"whose tool is 'answer', which writes the reply from the results{room}."
        )
    for n in answers:
        if n != count:
            problems.append(
                f"step {n} is an 'answer' step but not the last: only the last step answers; "
                "move it to the end or give it a tool."
            )
    return problems


def _cycle(steps: Sequence[PlanStep]) -> list[int]:
    """A cycle among the steps' dependencies (``[1, 2, 1]``), or ``[]``."""
    count = len(steps)
    graph = {
        n: {d for d in s.depends_on if d != n and 1 <= d <= count} for n, s in enumerate(steps, 1)
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return [int(n) for n in reversed(exc.args[1])]
    return []


# -- a run's plans, read back from its calls ------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanCall:
    """One call of a run as the plan reads it: `name` is a tool, or ``answer`` for a
    text reply; `status` ``waiting`` is a call asked for and not made (a run paused
    for approval)."""

    step: int
    name: str
    arguments: str
    status: str
    result: str


@dataclass(frozen=True, slots=True)
class StepState:
    """Where one step of a plan version is: ``done``, ``failed``, ``next`` (the one
    the run is at), ``waiting`` (its call waits for approval) or ``pending``."""

    number: int
    step: PlanStep
    status: Literal["done", "failed", "next", "waiting", "pending"]
    run_step: int | None = None
    result: str | None = None
    tries: int = 0  # calls refused for the model's slip (invalid arguments) first


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """One accepted plan (or the one waiting for approval) and how far it got.
    `status`: ``waiting`` (for approval), ``current``, ``done`` (it answered),
    ``failed`` (a step failed; the next version replaces it)."""

    number: int
    plan: Plan
    run_step: int
    status: Literal["waiting", "current", "done", "failed"]
    steps: tuple[StepState, ...]

    @property
    def failure(self) -> StepState | None:
        """The step that failed, if one did."""
        return next((s for s in self.steps if s.status == "failed"), None)

    @property
    def next_step(self) -> StepState | None:
        """The step the run is at (None: waiting, failed or done)."""
        return next((s for s in self.steps if s.status in ("next", "waiting")), None)


@dataclass(frozen=True, slots=True)
class RejectedPlan:
    """A ``submit_plan`` call that was not accepted: invalid (``invalid_arguments``,
    `message` says what was wrong) or declined by a person (``denied``)."""

    run_step: int
    status: str
    message: str
    arguments: str


@dataclass(frozen=True)
class PlanProgress:
    """A run's plans: each version with its steps' states, and the rejected ones."""

    versions: tuple[PlanVersion, ...] = ()
    rejected: tuple[RejectedPlan, ...] = ()

    @property
    def current(self) -> PlanVersion | None:
        """The latest version (None before the first plan)."""
        return self.versions[-1] if self.versions else None

    @property
    def failures(self) -> list[PlanVersion]:
        """The versions that failed at a step (each one asked for a replan)."""
        return [v for v in self.versions if v.status == "failed"]

    @property
    def last_rejected(self) -> RejectedPlan | None:
        """The latest rejected plan when no plan was accepted after it."""
        if not self.rejected:
            return None
        last = self.rejected[-1]
        current = self.current
        return last if current is None or last.run_step > current.run_step else None

    def diff(self, a: int = -2, b: int = -1) -> PlanDiff:
        """The diff of versions `a` and `b` (positions in :attr:`versions`; by default
        the last two). Raises :class:`IndexError` with fewer versions."""
        if len(self.versions) < 2:
            raise IndexError(f"the run has {len(self.versions)} plan version(s): nothing to diff")
        return plan_diff(self.versions[a].plan, self.versions[b].plan)

    def _repr_html_(self) -> str:
        from agentlab.agents.plan_html import progress_html

        return progress_html(self)


def plan_progress(
    source: Run | Sequence[Step] | Sequence[Mapping[str, Any]],
) -> PlanProgress:
    """The plans of a run, from the run itself, its :class:`Step` s, or the rows
    of a stored run (``TraceStore.steps(run_id)`` as dicts: its model calls and tool
    calls). A live run's conversation before its first step (a branch) counts too."""
    from agentlab.agents.records import Step
    from agentlab.agents.run import Run

    if isinstance(source, Run):
        calls = [*_prefix_calls(source), *_step_calls(source.steps)]
    elif all(isinstance(s, Step) for s in source):
        calls = _step_calls(source)  # type: ignore[arg-type]
    else:
        calls = _row_calls(source)  # type: ignore[arg-type]
    return _progress_of(calls)


def _step_calls(steps: Iterable[Step]) -> list[PlanCall]:
    calls: list[PlanCall] = []
    for step in steps:
        made = [
            PlanCall(step.index, c.name, c.arguments, c.status, c.result) for c in step.tool_calls
        ]
        calls += made + _unmade_or_answer(step.index, step.response, len(made))
    return calls


def _unmade_or_answer(index: int, reply: AssistantMessage | None, made: int) -> list[PlanCall]:
    """The calls a reply asked for beyond the `made` ones (waiting), or its answer."""
    if reply is None:
        return []
    if not reply.tool_calls:
        text = reply.content or ""
        return [PlanCall(index, ANSWER, "", "ok", text)] if text else []
    return [PlanCall(index, c.name, c.arguments, "waiting", "") for c in reply.tool_calls[made:]]


def _prefix_calls(run: Run) -> list[PlanCall]:
    """The calls in the conversation a run started from (a branch of another run):
    those before its first step's reply. Their status is ``ok`` or ``error`` (a
    message keeps no more)."""
    first = next((s.response for s in run.steps if s.response is not None), None)
    end = next((i for i, m in enumerate(run.messages) if m is first), len(run.messages))
    return _message_calls(run.messages[:end])


def _message_calls(messages: Sequence[Message]) -> list[PlanCall]:
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    calls: list[PlanCall] = []
    for m in messages:
        if isinstance(m, AssistantMessage):
            for c in m.tool_calls:
                r = results.get(c.id)
                if r is not None:
                    status = "error" if r.is_error else "ok"
                    calls.append(PlanCall(0, c.name, c.arguments, status, r.content))
    return calls


def _row_calls(rows: Sequence[Mapping[str, Any]]) -> list[PlanCall]:
    """Calls from a stored run's rows (model calls and tool calls, in step order)."""
    calls: list[PlanCall] = []
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), []).append(row)
    for index, group in sorted(by_step.items()):
        made = [
            PlanCall(
                index,
                str(r["name"]),
                _text(r.get("input")),
                str(r["status"]),
                _text(r.get("output")),
            )
            for r in group
            if r["kind"] == "tool_call"
        ]
        reply = next((_reply(r.get("output")) for r in group if r["kind"] == "model_call"), None)
        calls += made + _unmade_or_answer(index, reply, len(made))
    return calls


def _text(value: Any) -> str:
    return "" if value is None or value != value else str(value)  # None or NaN


def _reply(output: Any) -> AssistantMessage | None:
    text = _text(output)
    if not text:
        return None
    try:
        return AssistantMessage.model_validate_json(text)
    except ValidationError:
        return None


def _parse_plan(arguments: str) -> Plan | None:
    """The plan a ``submit_plan`` call carries (None when it does not parse)."""
    try:
        return Plan.model_validate_json(arguments or "{}")
    except ValidationError:
        return None


@dataclass
class _Version:
    """A version being read: its plan and the calls of its steps."""

    number: int
    plan: Plan
    run_step: int
    waiting: bool = False
    done: dict[int, PlanCall] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    failed: tuple[int, PlanCall] | None = None
    at_call: PlanCall | None = None  # the next step's call, waiting for approval

    def next_number(self) -> int | None:
        return next((n for n in range(1, len(self.plan.steps) + 1) if n not in self.done), None)

    def take(self, call: PlanCall) -> None:
        """Count `call` as the next step's, if it is one."""
        n = self.next_number()
        if n is None or self.failed is not None or self.waiting:
            return
        if call.name != self.plan.steps[n - 1].tool:
            return  # not this step's tool (a branch's earlier conversation)
        if call.status == "ok":
            self.done[n] = call
        elif call.status == "waiting":
            self.at_call = call
        elif call.status in RETRYABLE:
            self.tries[n] = self.tries.get(n, 0) + 1
        else:
            self.failed = (n, call)

    def freeze(self) -> PlanVersion:
        states = []
        at = self.next_number()
        for n, step in enumerate(self.plan.steps, 1):
            call = self.done.get(n)
            if call is not None:
                states.append(
                    StepState(n, step, "done", call.step, call.result, self.tries.get(n, 0))
                )
            elif self.failed is not None and self.failed[0] == n:
                failed = self.failed[1]
                states.append(
                    StepState(n, step, "failed", failed.step, failed.result, self.tries.get(n, 0))
                )
            elif n == at and self.failed is None and not self.waiting:
                status: Literal["next", "waiting"] = "waiting" if self.at_call else "next"
                states.append(StepState(n, step, status, tries=self.tries.get(n, 0)))
            else:
                states.append(StepState(n, step, "pending"))
        version_status: Literal["waiting", "current", "done", "failed"] = (
            "waiting"
            if self.waiting
            else "failed"
            if self.failed is not None
            else "done"
            if at is None
            else "current"
        )
        return PlanVersion(self.number, self.plan, self.run_step, version_status, tuple(states))


def _progress_of(calls: Sequence[PlanCall]) -> PlanProgress:
    """The plans `calls` (a run's, in order) hold, and how far each got."""
    versions: list[_Version] = []
    rejected: list[RejectedPlan] = []
    for call in calls:
        if call.name == SUBMIT_PLAN:
            plan = _parse_plan(call.arguments) if call.status in ("ok", "waiting") else None
            if plan is None:
                message = call.result or "the plan could not be read"
                rejected.append(RejectedPlan(call.step, call.status, message, call.arguments))
            else:
                waiting = call.status == "waiting"
                versions.append(_Version(len(versions) + 1, plan, call.step, waiting=waiting))
        elif versions:
            versions[-1].take(call)
    return PlanProgress(tuple(v.freeze() for v in versions), tuple(rejected))


# -- diff ---------------------------------------------------------------------------

DiffKind = Literal["same", "changed", "added", "removed"]
_FIELDS = ("goal", "tool", "args", "depends_on")


@dataclass(frozen=True, slots=True)
class PlanDiffEntry:
    """One row of a diff: a step kept (``same``/``changed``: which `fields`),
    ``added`` in the new plan or ``removed`` from the old."""

    kind: DiffKind
    old: tuple[int, PlanStep] | None
    new: tuple[int, PlanStep] | None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanDiff:
    """How plan `b` differs from plan `a`, step by step."""

    a: Plan
    b: Plan
    entries: tuple[PlanDiffEntry, ...]

    @property
    def changed(self) -> bool:
        """Whether the plans differ at all."""
        return any(e.kind != "same" for e in self.entries)

    def __str__(self) -> str:
        lines = []
        mark = {"same": " ", "changed": "~", "added": "+", "removed": "-"}
        for e in self.entries:
            n, step = e.new or e.old  # type: ignore[misc]
            note = f"  [{', '.join(e.fields)} changed]" if e.fields else ""
            lines.append(f"{mark[e.kind]} {_step_line(n, step)}{note}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from agentlab.agents.plan_html import diff_html

        return diff_html(self)


def plan_diff(a: Plan, b: Plan) -> PlanDiff:
    """The step-by-step differences from plan `a` to plan `b`: steps are matched in
    order by their tool (a kept step whose goal, hints or dependencies changed is
    ``changed``), the rest are ``added`` or ``removed``."""
    old, new = list(a.steps), list(b.steps)
    matcher = difflib.SequenceMatcher(
        None, [s.tool for s in old], [s.tool for s in new], autojunk=False
    )
    entries: list[PlanDiffEntry] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        paired = min(i2 - i1, j2 - j1) if op in ("equal", "replace") else 0
        for k in range(paired):
            before, after = old[i1 + k], new[j1 + k]
            changed = tuple(f for f in _FIELDS if getattr(before, f) != getattr(after, f))
            kind: DiffKind = "changed" if changed else "same"
            entries.append(PlanDiffEntry(kind, (i1 + k + 1, before), (j1 + k + 1, after), changed))
        entries += [PlanDiffEntry("removed", (i + 1, old[i]), None) for i in range(i1 + paired, i2)]
        entries += [PlanDiffEntry("added", None, (j + 1, new[j])) for j in range(j1 + paired, j2)]
    return PlanDiff(a, b, tuple(entries))
