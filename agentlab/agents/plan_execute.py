"""Plan-and-Execute: one model call makes a typed plan, then each plan step is one
step of the run loop, then the last step composes the answer from the results.

The plan is a call to the control tool ``submit_plan`` whose parameters are the
:class:`~agentlab.agents.plan.Plan` schema, offered alone and forced
(``tool_choice="submit_plan"``; on the local model that is grammar-constrained
decoding, with the step's ``tool`` an enum of the agent's tools). The plan is
checked when the call is validated, before any approval: a plan with unknown tools,
dependencies on later or absent steps, cycles, or no final ``answer`` step goes
back to the model with what to fix (``max_retries`` bounds it). Then each step
offers only its tool, forced, with an instruction naming its goal, its argument
hints and the results it depends on; the ``answer`` step offers no tool. A failed
step asks for a new plan (at most ``max_replans`` times). Everything is an ordinary
step of the one run loop, so tracing, budgets, retries, fallbacks, approval,
memory and alerts apply unchanged; the plan and the progress are read back from
the run's steps (:func:`~agentlab.agents.plan.plan_progress`) each turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator

from agentlab.agents.agent import Agent
from agentlab.agents.plan import (
    ANSWER,
    DEFAULT_PLAN_STEPS,
    MAX_PLAN_STEPS,
    SUBMIT_PLAN,
    PlanProgress,
    PlanStep,
    PlanSteps,
    PlanVersion,
    StepState,
    plan_problems,
    plan_progress,
    plan_schema,
    problems_message,
)
from agentlab.agents.turn import StopRun, Turn
from agentlab.errors import UserError
from agentlab.messages import Message, SystemMessage, ToolDefinition, UserMessage
from agentlab.models import Model
from agentlab.tools import Tool
from agentlab.tools.calls import capped

if TYPE_CHECKING:
    from agentlab.agents.run import Run

__all__ = ["PlanExecuteAgent"]

_RESULT_CHARS = 1500  # of each earlier result quoted in an instruction
_RESERVED = (SUBMIT_PLAN, ANSWER)


class PlanExecuteAgent(Agent):
    """An agent that plans first, then carries the plan out one step at a time.

    ``agent.start(question)`` then ``run.step_sync()``: the first step makes the
    plan, each next one carries out one plan step, the last one answers. A run
    shows its plan and progress (``agent.progress(run)``).

    Args:
        model, tools: as for every :class:`~agentlab.agents.Agent`.
        max_replans: new plans allowed after failed steps; once used up, the next
            failure ends the run with an explanation of the plans tried.
        max_plan_steps: the most steps a plan may have, its answer included (a
            small model tends to use them all: fewer make its runs shorter).
        require_plan_approval: pause the run on each plan until a person approves it
            (``run.resume_sync(approve=True)``), or declines it with a note that the
            model gets for a new plan (``approve=False, note=...``).
        **options: the other options of :class:`~agentlab.agents.Agent` (budget,
            fallback, memory, ...); ``max_steps`` defaults to 20.
    """

    default_instructions = (
        "You are a careful assistant who works to a plan: first plan the steps with the "
        "tools you have, then carry out the step you are asked for, then answer from "
        "the results."
    )

    def __init__(
        self,
        model: Model | str,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        *,
        max_replans: int = 2,
        max_plan_steps: int = DEFAULT_PLAN_STEPS,
        require_plan_approval: bool = False,
        **options: Any,
    ) -> None:
        if max_replans < 0:
            raise UserError(f"max_replans must be 0 or more (got {max_replans}).")
        if not 1 <= max_plan_steps <= MAX_PLAN_STEPS:
            raise UserError(
                f"max_plan_steps must be 1 to {MAX_PLAN_STEPS} (got {max_plan_steps}): the "
                "steps of a plan, its final answer included."
            )
        self.max_plan_steps = max_plan_steps
        taken = [n for n in map(_tool_name, tools) if n in _RESERVED]
        if taken:
            raise UserError(
                f"A PlanExecuteAgent's tools cannot be named {', '.join(map(repr, taken))}: "
                "it uses 'submit_plan' for its plans and 'answer' for their last step. "
                "Rename the tool (@tool(name=...))."
            )
        options.setdefault("max_steps", 20)
        planner = _submit_plan_tool(self._check_plan, require_plan_approval)
        super().__init__(model, [*tools, planner], **options)
        self.max_replans = max_replans
        self.require_plan_approval = require_plan_approval
        self.step_tools = [t for t in self.tools if t.name != SUBMIT_PLAN]
        """The tools a plan step may call."""
        self._planner = planner.definition
        self.plan_definition = self._plan_definition(self.step_tools)
        """``submit_plan`` as a planning step offers it: the plan's schema for this
        agent's tools, the tools described (a step lists them in the order of their
        relevance to the run's request)."""

    def _check_plan(self, steps: tuple[PlanStep, ...]) -> tuple[PlanStep, ...]:
        """Validate a submitted plan against this agent's tools (pydantic calls it)."""
        problems = plan_problems(steps, [t.name for t in self.step_tools], self.max_plan_steps)
        if problems:
            raise ValueError(problems_message(problems))
        return steps

    def opening_messages(self, input: str) -> list[Message]:
        return [SystemMessage(content=self.instructions), UserMessage(content=input)]

    def progress(self, run: Run) -> PlanProgress:
        """`run`'s plans so far and where it is in the latest (read from its steps)."""
        return plan_progress(run)

    def structure_html(self, run: Run) -> str:
        """The plan and its progress, for the run's view in a notebook."""
        from agentlab.agents.plan_html import progress_html

        return progress_html(plan_progress(run))

    # -- the turn of each step ------------------------------------------------------

    def turn(self, run: Run) -> Turn:
        progress = plan_progress(run)
        current = progress.current
        if current is None or current.status == "failed":
            return self._plan_turn(run, progress)
        step = current.next_step or current.steps[-1]
        if step.step.tool == ANSWER:
            return Turn((), tool_choice="none", instruction=_answer_instruction(run, current, step))
        tool = self.tools_by_name.get(step.step.tool)
        if tool is None or tool.name == SUBMIT_PLAN:
            raise StopRun(
                "plan",
                f"step {step.number} of plan v{current.number} uses tool {step.step.tool!r}, "
                "which this agent does not have (the plan was made by another agent).",
                "Resume the run with the agent that made its plan, or start a new run.",
            )
        return Turn(
            [tool.definition],
            tool_choice=tool.name,
            instruction=_step_instruction(run.input, current, step),
        )

    def _plan_turn(self, run: Run, progress: PlanProgress) -> Turn:
        failures = progress.failures
        if len(failures) > self.max_replans:
            raise StopRun("plan", _replans_used_up(progress, self.max_replans), _REPLAN_NEXT)
        rejected = progress.last_rejected
        question = run.input
        tools = _by_relevance(question, self.step_tools)
        if rejected is not None and rejected.status == "denied":
            instruction = _declined_instruction(run, rejected.run_step)
        elif rejected is not None:
            instruction = (
                f"That plan was not accepted: fix exactly what the error says and call "
                f"{SUBMIT_PLAN} again with the corrected plan for the request ({question})."
            )
        elif failures:
            instruction = _replan_instruction(question, failures[-1])
        else:
            instruction = _plan_instruction(question, tools, self.max_plan_steps)
        return Turn(
            [self._plan_definition(tools)], tool_choice=SUBMIT_PLAN, instruction=instruction
        )

    def _plan_definition(self, tools: Sequence[Tool]) -> ToolDefinition:
        """submit_plan as a planning step offers it: the plan's schema for `tools`
        (:func:`~agentlab.agents.plan.plan_schema`), the tools listed, in that order."""
        listing = "\n".join(
            f"- {t.name}({', '.join(t.definition.parameters.get('properties', {}))}): "
            f"{t.description.splitlines()[0]}"
            for t in tools
        )
        description = (
            f"{self._planner.description} The tools a step may call:\n{listing}\n"
            f"- {ANSWER}: the last step; writes the reply from the results."
        )
        schema = plan_schema([t.name for t in tools], self.max_plan_steps)
        return self._planner.model_copy(update={"description": description, "parameters": schema})


def _tool_name(tool: Tool | Callable[..., Any]) -> str:
    return tool.name if isinstance(tool, Tool) else getattr(tool, "__name__", "")


def _submit_plan_tool(
    check: Callable[[tuple[PlanStep, ...]], tuple[PlanStep, ...]], requires_approval: bool
) -> Tool:
    """The control tool a plan is submitted with; `check` validates the steps
    against the agent's tools when the call is validated (before any approval)."""

    def submit_plan(steps: tuple[PlanStep, ...]) -> str:
        return f"Plan accepted: {len(steps)} steps. Each is carried out when asked for."

    submit_plan.__annotations__ = {
        "steps": Annotated[PlanSteps, AfterValidator(check)],
        "return": str,
    }
    return Tool(
        submit_plan,
        description="Submit the plan: numbered steps carried out one at a time, the "
        "last one 'answer'.",
        requires_approval=requires_approval,
    )


_WORD = re.compile(r"[a-z0-9]+")
_QUESTION_WORDS = (  # they match every description
    "the and for are was were did does can you your with that this what which when where "
    "how who why from have has not"
)
_COMMON = frozenset(_QUESTION_WORDS.split())


def _words(text: str) -> set[str]:
    """The distinct words of `text` (their first five letters), common ones left out."""
    return {w[:5] for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _COMMON}


def _by_relevance(question: str, tools: Sequence[Tool]) -> list[Tool]:
    """`tools`, those sharing the most words with `question` (in their name and
    description) first, otherwise in the agent's order: a small model tends to
    plan with the first tool it is offered."""
    asked = _words(question)
    return sorted(
        tools, key=lambda t: -len(asked & _words(f"{t.name.replace('_', ' ')} {t.description}"))
    )


# -- instructions -------------------------------------------------------------------


def _plan_instruction(question: str, tools: Sequence[Tool], max_steps: int) -> str:
    names = ", ".join([*(t.name for t in tools), ANSWER])
    return (
        f"Plan how to handle this request: {question}\n"
        f"Call {SUBMIT_PLAN} with the steps in order, as few as the request needs (at most "
        f"{max_steps}). For each step give the tool it calls (one of: {names}), hints for "
        "the tool's arguments taken from the request, its goal, and depends_on: the numbers "
        "of the earlier steps whose results it needs. The last step's tool is 'answer'."
    )


def _results(version: PlanVersion, numbers: Sequence[int] | None = None) -> str:
    """Lines quoting the results of `version`'s steps done so far (those `numbers`)."""
    lines = [
        f"- step {s.number} ({s.step.tool}: {s.step.goal}): "
        f"{capped(_readable(s.result or ''), _RESULT_CHARS)}"
        for s in version.steps
        if s.status == "done" and (numbers is None or s.number in numbers)
    ]
    return "\n".join(lines)


def _readable(result: str) -> str:
    """A JSON object result as ``key: value`` pairs (easier for a small model to
    quote than JSON); any other result as it is."""
    try:
        value = json.loads(result)
    except ValueError:
        return result
    if not isinstance(value, dict):
        return result
    return "; ".join(
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in value.items()
    )


def _step_instruction(question: str, version: PlanVersion, step: StepState) -> str:
    lines = [
        f"Request: {question}",
        f"Step {step.number} of the plan: {step.step.goal}",
        f"Call {step.step.tool} now.",
    ]
    if step.step.args:
        lines.append(f"Argument hints: {step.step.args}")
    results = _results(version, step.step.depends_on)
    if results:
        lines.append(f"Results it depends on:\n{results}")
    return "\n".join(lines)


def _answer_instruction(run: Run, version: PlanVersion, step: StepState) -> str:
    results = _results(version, step.step.depends_on or None) or "(none)"
    return (
        f"{run.input}\n\nFacts:\n{results}\n\n"
        "Answer the request in one or two sentences using the facts."
    )


def _declined_instruction(run: Run, step: int) -> str:
    """Ask for a new plan after a person declined the one of run step `step`, with
    their note (from the run's decisions, keyed by the call)."""
    key = f"{run.id}-{step}-"
    notes = [d.get("note") for k, d in run.approvals.items() if k.startswith(key) and d]
    note = f" Their note: {notes[-1]}" if notes and notes[-1] else ""
    return (
        f"A person did not approve that plan.{note}\nMake a new plan for the request "
        f"({run.input}) that follows the note, and call {SUBMIT_PLAN}."
    )


def _replan_instruction(question: str, failed: PlanVersion) -> str:
    step = failed.failure
    assert step is not None
    done = _results(failed)
    known = f"\nResults so far:\n{done}" if done else ""
    return (
        f"Step {step.number} of the plan failed ({step.step.tool}: {step.step.goal}): "
        f"{capped(step.result or '', _RESULT_CHARS)}{known}\n"
        f"Make a new plan for the request ({question}) that gets around this failure, and "
        f"call {SUBMIT_PLAN}. A new plan starts again at its step 1: put values you already "
        "know in its argument hints."
    )


_REPLAN_NEXT = (
    "Read the errors of the failed steps: if a tool or the service behind it is broken, "
    "fix it; if the plans were wrong, give the agent the tools the task needs or describe "
    "them better; to let it try more plans, raise max_replans."
)


def _replans_used_up(progress: PlanProgress, max_replans: int) -> str:
    """What failed and the plans tried, for the run's explanation."""
    tried = []
    for version in progress.failures:
        step = version.failure
        assert step is not None
        error = (step.result or "").strip().replace("\n", " ")
        steps = "; ".join(f"{s.number}. {s.step.tool}" for s in version.steps)
        tried.append(
            f"plan v{version.number} ({steps}) failed at step {step.number} "
            f"({step.step.tool}: {step.step.goal}): {error[:300]}"
        )
    return (
        f"every plan failed, and the {max_replans} new plans allowed (max_replans="
        f"{max_replans}) are used up. " + " ".join(tried)
    )
