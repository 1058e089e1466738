"""Plan-and-Execute on the one run loop: a typed plan, checked, approved, carried out
one step at a time, replanned after a failure, all read back from the run's steps."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Annotated, Any

import jsonschema
import pytest
from pydantic import Field

from agentlab import tool
from agentlab.agents import Run
from agentlab.agents.plan import (
    Plan,
    PlanStep,
    plan_diff,
    plan_problems,
    plan_progress,
)
from agentlab.agents.plan_execute import PlanExecuteAgent
from agentlab.budgets import Budget
from agentlab.errors import UserError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.usage import Price, PriceTable

ORDERS = {"A-1001": {"order_id": "A-1001", "status": "shipped", "carrier": "DHL"}}
REFUNDS: list[str] = []


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order's status and carrier.

    Args:
        order_id: the order id, like A-1001.
    """
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return ORDERS[order_id]


@tool
def search_orders(email: str) -> list[str]:
    """Find the ids of a customer's orders.

    Args:
        email: the customer's email address.
    """
    return ["A-1001"] if email == "ann@example.com" else []


@tool(requires_approval=True)
def refund(order_id: str) -> str:
    """Refund an order (a person approves it first).

    Args:
        order_id: the order to refund.
    """
    REFUNDS.append(order_id)
    return f"refunded {order_id}"


def step(tool: str, args: str = "", after: Sequence[int] = (), goal: str = "") -> dict[str, Any]:
    """A plan step as a model writes it (an answer step has no argument hints)."""
    hints = {} if tool == "answer" else {"args": args}
    return {"tool": tool, **hints, "goal": goal or f"use {tool}", "depends_on": list(after)}


def plan(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps)}


LOOKUP_THEN_ANSWER = plan(
    step("lookup_order", "order_id=A-1001", goal="Find the order"),
    step("answer", after=[1], goal="Say where it is"),
)


class Planner:
    """A scripted model for plan-execute runs, driven by what each step offers: the
    next of `plans` when only submit_plan is offered, the offered tool with
    `arguments[tool]` (the next of a list, or the same dict each time), and an answer
    quoting the instruction's results when no tool is offered."""

    def __init__(self, plans: Sequence[dict[str, Any]], arguments: dict[str, Any]) -> None:
        self.plans = list(plans)
        self.arguments = arguments
        self.offered: list[list[str]] = []
        self.instructions: list[str] = []
        self._ids = itertools.count(1)

    def __call__(self, messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Any:
        names = [t.name for t in tools]
        self.offered.append(names)
        last = messages[-1]
        self.instructions.append(str(last.content) if isinstance(last, UserMessage) else "")
        if not names:
            results = str(last.content).split("Facts:\n", 1)[-1].split("\n\n", 1)[0]
            return f"Answer from: {results}"
        (name,) = names
        if name == "submit_plan":
            arguments: Any = self.plans.pop(0)
        else:
            given = self.arguments[name]
            arguments = given.pop(0) if isinstance(given, list) else given
        call = ToolCall(id=f"c{next(self._ids)}", name=name, arguments=json.dumps(arguments))
        return AssistantMessage(tool_calls=(call,))


def agent_with(planner: Planner, tools: Sequence[Any] = (lookup_order,), **options: Any):
    options.setdefault("trace", False)
    return PlanExecuteAgent(FunctionModel(planner), list(tools), name="planner", **options)


ORDER_ARGS = {"lookup_order": {"order_id": "A-1001"}}


# -- the plan ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "tools", "expected"),
    [
        (
            [step("lookup_ordr"), step("answer")],
            ["lookup_order"],
            "step 1 uses tool 'lookup_ordr', which the agent does not have (did you mean "
            "'lookup_order'?)",
        ),
        ([step("lookup_order", after=[3]), step("answer")], None, "step 1 depends on step 3, but "),
        ([step("lookup_order", after=[2]), step("answer")], None, "step 2, which comes later"),
        ([step("lookup_order", after=[1]), step("answer")], None, "step 1 depends on itself"),
        (
            [step("a", after=[2]), step("b", after=[1]), step("answer")],
            None,
            "steps 1 -> 2 -> 1 depend on each other in a cycle",
        ),
        ([step("lookup_order")], None, "end the plan with a step whose tool is 'answer'"),
        ([step("answer"), step("answer")], None, "step 1 is an 'answer' step but not the last"),
    ],
)
def test_each_plan_problem_says_what_to_fix(steps, tools, expected) -> None:
    problems = plan_problems([PlanStep(**s) for s in steps], tools)
    assert any(expected in p for p in problems), problems


def test_a_good_plan_has_no_problems_and_shows_itself() -> None:
    good = Plan.model_validate(LOOKUP_THEN_ANSWER)
    assert good.problems(["lookup_order"]) == []
    assert str(good).splitlines() == [
        "1. lookup_order (order_id=A-1001): Find the order",
        "2. answer: Say where it is after 1",
    ]
    html = good._repr_html_()
    assert "Find the order" in html and "<code>lookup_order</code>" in html
    with pytest.raises(ValueError, match="depend on each other in a cycle"):
        Plan.model_validate(plan(step("a", after=[2]), step("b", after=[1]), step("answer")))


def test_the_offered_plan_schema_admits_only_valid_plans() -> None:
    agent = agent_with(Planner([], {}), [lookup_order, search_orders])
    schema = agent.plan_definition.parameters
    assert "search_orders(email): Find the ids" in agent.plan_definition.description
    jsonschema.validate(LOOKUP_THEN_ANSWER, schema)
    two = plan(step("search_orders"), step("lookup_order", after=[1]), step("answer", after=[1, 2]))
    jsonschema.validate(two, schema)
    for bad in (
        plan(step("refund"), step("answer")),  # a tool the agent does not have
        plan(step("lookup_order")),  # no final answer
        plan(step("lookup_order", after=[2]), step("answer")),  # a later step
        plan(step("lookup_order", after=[1]), step("answer")),  # itself
        plan(step("answer"), step("answer")),  # answer in the middle
        plan(*[step("lookup_order")] * 5, step("answer")),  # too long
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_planning_turn_lists_the_tools_most_relevant_to_the_request_first() -> None:
    agent = agent_with(Planner([], {}), [lookup_order, search_orders])
    for question, first in [
        ("Which orders does the customer with email ann@example.com have?", "search_orders"),
        ("What is the status and carrier of A-1001?", "lookup_order"),
    ]:
        turn = agent.turn(agent.start(question))
        assert turn.tool_choice == "submit_plan" and question in str(turn.instruction)
        (definition,) = turn.tools
        assert definition.parameters["$defs"]["Tool"]["enum"][0] == first
        assert definition.description.split("\n")[1].startswith(f"- {first}(")


def test_reserved_names_and_bad_options_are_refused() -> None:
    @tool
    def answer(text: str) -> str:
        """Answer.

        Args:
            text: the text.
        """
        return text

    with pytest.raises(UserError, match="cannot be named 'answer'"):
        PlanExecuteAgent(FunctionModel(lambda m, t: "x"), [answer], trace=False)
    with pytest.raises(UserError, match="max_replans must be 0 or more"):
        PlanExecuteAgent(FunctionModel(lambda m, t: "x"), [], max_replans=-1, trace=False)
    with pytest.raises(UserError, match="max_plan_steps must be 1 to 8"):
        PlanExecuteAgent(FunctionModel(lambda m, t: "x"), [], max_plan_steps=9, trace=False)


def test_max_plan_steps_bounds_the_schema_and_the_check() -> None:
    long = plan(step("lookup_order"), step("lookup_order"), step("answer"))
    planner = Planner([long, LOOKUP_THEN_ANSWER], ORDER_ARGS)
    agent = agent_with(planner, max_plan_steps=2)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(long, agent.plan_definition.parameters)
    jsonschema.validate(LOOKUP_THEN_ANSWER, agent.plan_definition.parameters)
    result = agent.run_sync("Where is A-1001?")
    assert result.ok
    rejected = next(m.content for m in result.messages if m.role == "tool")
    assert "the plan has 3 steps but at most 2 are allowed" in rejected


# -- executing it ------------------------------------------------------------------------


def test_each_plan_step_is_one_traced_step_offering_only_its_tool(tmp_path) -> None:
    planner = Planner([LOOKUP_THEN_ANSWER], ORDER_ARGS)
    agent = agent_with(planner, [lookup_order, search_orders], trace=tmp_path)
    run = agent.start("Where is order A-1001?")

    run.step_sync()  # the plan
    progress = agent.progress(run)
    assert progress.current is not None and progress.current.number == 1
    assert [s.status for s in progress.current.steps] == ["next", "pending"]
    assert "Plan v1" in run._repr_html_()  # the run view shows its plan

    run.step_sync()  # plan step 1: the lookup, with its goal and hints in the instruction
    assert planner.instructions[1].splitlines()[:4] == [
        "Request: Where is order A-1001?",
        "Step 1 of the plan: Find the order",
        "Call lookup_order now.",
        "Argument hints: order_id=A-1001",
    ]
    assert [s.status for s in agent.progress(run).current.steps] == ["done", "next"]

    run.step_sync()  # plan step 2: the answer, composed from the results it depends on
    assert run.status == "completed"
    assert planner.instructions[2] == (
        "Where is order A-1001?\n\nFacts:\n- step 1 (lookup_order: Find the order): "
        "order_id: A-1001; status: shipped; carrier: DHL\n\n"
        "Answer the request in one or two sentences using the facts."
    )
    assert "DHL" in str(run.output)
    assert planner.offered == [["submit_plan"], ["lookup_order"], []]
    assert agent.progress(run).current.status == "done"

    rows = TraceStore(tmp_path).sql(
        "SELECT step, tools FROM model_calls WHERE run_id = ? ORDER BY step", [run.id]
    )
    assert [list(r[1]) for r in rows] == [["submit_plan"], ["lookup_order"], []]
    calls = TraceStore(tmp_path).sql(
        "SELECT step, tool, status FROM tool_calls WHERE run_id = ? ORDER BY step", [run.id]
    )
    assert calls == [(1, "submit_plan", "ok"), (2, "lookup_order", "ok")]


def test_an_invalid_plan_goes_back_to_the_model_with_what_to_fix() -> None:
    bad = plan(step("lookup_ordr", after=[2]), step("lookup_order"))
    planner = Planner([bad, LOOKUP_THEN_ANSWER], ORDER_ARGS)
    result = agent_with(planner).run_sync("Where is order A-1001?")
    assert result.ok and result.steps == 4
    error = next(m.content for m in result.messages if m.role == "tool")  # the first plan's
    assert "did you mean 'lookup_order'?" in error
    assert "step 1 depends on step 2, which comes later" in error
    assert "end the plan with a step whose tool is 'answer'" in error
    assert planner.offered[1] == ["submit_plan"]
    assert "fix exactly what the error says" in planner.instructions[1]


def test_plans_that_stay_invalid_end_the_run_after_max_retries() -> None:
    planner = Planner([plan(step("lookup_order"))] * 5, ORDER_ARGS)
    result = agent_with(planner, max_retries=1).run_sync("Where is A-1001?")
    assert result.status == "failed" and result.steps == 2
    assert "the call to tool 'submit_plan' failed 2 times in a row" in str(result.explanation)
    assert "end the plan with a step whose tool is 'answer'" in str(result.explanation)


def test_a_slip_in_a_step_call_asks_for_the_same_step_again() -> None:
    planner = Planner(
        [LOOKUP_THEN_ANSWER], {"lookup_order": [{"order": "A-1001"}, {"order_id": "A-1001"}]}
    )
    agent = agent_with(planner)
    result = agent.run_sync("Where is A-1001?")
    assert result.ok
    assert planner.offered == [["submit_plan"], ["lookup_order"], ["lookup_order"], []]


def test_a_failed_step_makes_a_new_plan_that_is_traced_and_diffed() -> None:
    search_first = plan(
        step("search_orders", "email=ann@example.com", goal="Find her orders"),
        step("lookup_order", after=[1], goal="Find the order"),
        step("answer", after=[1, 2], goal="Say where it is"),
    )
    planner = Planner(
        [LOOKUP_THEN_ANSWER, search_first],
        {
            "lookup_order": [{"order_id": "A-9"}, {"order_id": "A-1001"}],
            "search_orders": {"email": "ann@example.com"},
        },
    )
    agent = agent_with(planner, [lookup_order, search_orders])
    run = agent.start("Where is my order? I am ann@example.com")
    result = run.finish_sync()
    assert result.ok and "DHL" in str(result.output)
    assert planner.offered[2] == ["submit_plan"]  # after the failed lookup
    replan = planner.instructions[2]
    assert "Step 1 of the plan failed (lookup_order: Find the order)" in replan
    assert "KeyError" in replan and "no order A-9" in replan

    progress = agent.progress(run)
    assert [v.status for v in progress.versions] == ["failed", "done"]
    assert progress.versions[0].failure is not None
    diff = progress.diff()
    assert [e.kind for e in diff.entries] == ["added", "changed", "changed"]
    assert diff.entries[1].fields == ("args", "depends_on")
    assert (
        str(diff).splitlines()[0] == "+ 1. search_orders (email=ann@example.com): Find her orders"
    )
    html = diff._repr_html_()
    assert "added" in html and "<del>" in html
    assert "What changed from v1 to v2" in progress._repr_html_()


def test_when_replans_are_used_up_the_run_says_what_failed_and_what_was_tried() -> None:
    planner = Planner(
        [LOOKUP_THEN_ANSWER, LOOKUP_THEN_ANSWER],
        {"lookup_order": {"order_id": "A-9"}},
    )
    agent = agent_with(planner, max_replans=1, max_retries=5)
    result = agent.run_sync("Where is A-9?")
    assert result.status == "failed" and result.failure is not None
    assert result.failure["kind"] == "plan"
    what = result.failure["what"]
    assert "the 1 new plans allowed (max_replans=1) are used up" in what
    assert "plan v1 (1. lookup_order; 2. answer) failed at step 1" in what
    assert "plan v2" in what and "no order A-9" in what
    assert "raise max_replans" in str(result.explanation)


def test_no_replans_allowed_stops_at_the_first_failure() -> None:
    planner = Planner([LOOKUP_THEN_ANSWER], {"lookup_order": {"order_id": "A-9"}})
    result = agent_with(planner, max_replans=0).run_sync("Where is A-9?")
    assert result.status == "failed" and result.failure["kind"] == "plan"
    assert planner.offered == [["submit_plan"], ["lookup_order"]]


# -- approval, resuming from the trace, branching ------------------------------------------


def test_a_plan_waits_for_approval_then_runs() -> None:
    planner = Planner([LOOKUP_THEN_ANSWER], ORDER_ARGS)
    agent = agent_with(planner, require_plan_approval=True)
    run = agent.start("Where is A-1001?")
    paused = run.finish_sync()
    assert paused.status == "paused" and paused.pending["tool"] == "submit_plan"
    progress = agent.progress(run)
    assert progress.current.status == "waiting"
    assert "waiting for approval" in progress._repr_html_()
    done = run.resume_sync(approve=True)
    assert done.ok and planner.offered == [["submit_plan"], ["lookup_order"], []]


def test_a_declined_plan_sends_the_note_back_for_a_new_plan() -> None:
    planner = Planner([LOOKUP_THEN_ANSWER, LOOKUP_THEN_ANSWER], ORDER_ARGS)
    agent = agent_with(planner, require_plan_approval=True)
    run = agent.start("Where is A-1001?")
    run.finish_sync()
    again = run.resume_sync(approve=False, note="check the carrier too")
    assert again.status == "paused"  # the new plan waits for approval too
    assert planner.offered == [["submit_plan"], ["submit_plan"]]
    assert (
        "A person did not approve that plan. Their note: check the carrier too"
        in (planner.instructions[1])
    )
    progress = agent.progress(run)
    assert [r.status for r in progress.rejected] == ["denied"]
    assert run.resume_sync(approve=True).ok


def test_a_paused_plan_is_resumed_by_a_new_agent_from_the_trace(tmp_path) -> None:
    first = agent_with(
        Planner([LOOKUP_THEN_ANSWER], {}), require_plan_approval=True, trace=tmp_path
    )
    run_id = first.run_sync("Where is A-1001?").run_id

    planner = Planner([], ORDER_ARGS)  # a new process: only the trace knows the plan
    fresh = agent_with(planner, require_plan_approval=True, trace=tmp_path)
    result = fresh.resume_sync(run_id, approve=True)
    assert result.ok and "DHL" in str(result.output)
    assert planner.offered == [["lookup_order"], []]
    rows = TraceStore(tmp_path).steps(run_id).to_dict("records")
    progress = plan_progress(rows)
    assert [s.status for s in progress.current.steps] == ["done", "done"]
    assert progress.current.status == "done"


def test_a_branch_carries_on_with_the_plan_of_its_conversation() -> None:
    planner = Planner([LOOKUP_THEN_ANSWER], ORDER_ARGS)
    agent = agent_with(planner)
    run = agent.start("Where is A-1001?")
    run.finish_sync()
    result_at = next(
        i for i, m in enumerate(run.messages) if m.role == "tool" and m.name == "lookup_order"
    )
    branch = run.branch(result_at, '{"order_id": "A-1001", "carrier": "UPS"}')
    assert isinstance(branch, Run) and branch.steps == []
    assert agent.progress(branch).current.steps[1].status == "next"
    done = branch.finish_sync()
    assert done.ok and "UPS" in str(done.output) and planner.offered[-1] == []
    assert len(planner.offered) == 4  # the branch only answered again


# -- the run loop's layers apply unchanged ---------------------------------------------------


def test_a_step_budget_stops_a_plan_run_with_its_usual_explanation() -> None:
    planner = Planner([LOOKUP_THEN_ANSWER], ORDER_ARGS)
    result = agent_with(planner).run_sync("Where is A-1001?", budget=Budget(steps=2))
    assert result.status == "max_steps" and result.steps == 2
    assert "used all 2 steps" in str(result.explanation)


def test_a_cost_budget_stops_a_plan_run() -> None:
    planner = Planner([LOOKUP_THEN_ANSWER], ORDER_ARGS)
    prices = PriceTable({"scripted:function": Price(1_000_000.0, 1_000_000.0)})
    agent = agent_with(planner, prices=prices)
    result = agent.run_sync("Where is A-1001?", budget=Budget(cost=0.5))
    assert result.status == "budget_exceeded" and result.failure["kind"] == "budget"
    assert "cost" in str(result.explanation)


def test_the_progress_reads_the_same_from_steps_and_from_stored_rows(tmp_path) -> None:
    planner = Planner(
        [LOOKUP_THEN_ANSWER, LOOKUP_THEN_ANSWER],
        {"lookup_order": [{"order_id": "A-9"}, {"order_id": "A-1001"}]},
    )
    agent = agent_with(planner, trace=tmp_path)
    run = agent.start("Where is A-1001?")
    run.finish_sync()
    from_steps = plan_progress(run.steps)
    rows = TraceStore(tmp_path).steps(run.id).to_dict("records")
    from_rows = plan_progress(rows)
    assert from_rows.versions == from_steps.versions
    assert [v.status for v in from_rows.versions] == ["failed", "done"]


def test_plan_diff_matches_steps_by_tool() -> None:
    a = Plan.model_validate(LOOKUP_THEN_ANSWER)
    b = Plan.model_validate(
        plan(
            step("lookup_order", "order_id=A-1002", goal="Find the order"),
            step("answer", after=[1]),
        )
    )
    diff = plan_diff(a, b)
    assert [(e.kind, e.fields) for e in diff.entries] == [
        ("changed", ("args",)),
        ("changed", ("goal",)),
    ]
    assert not plan_diff(a, a).changed
    assert "the same" in plan_diff(a, a)._repr_html_()


# -- the real local model ------------------------------------------------------------------


@tool
def get_order(order_id: Annotated[str, Field(pattern=r"^A-[0-9]{4}$")]) -> dict[str, Any]:
    """Get an order's status and carrier by its id.

    Args:
        order_id: the order id, like A-1001.
    """
    return lookup_order.function(order_id)


@pytest.mark.local_model
@pytest.mark.timeout(600)
def test_the_local_model_makes_a_schema_valid_plan_and_the_run_ends_with_a_status(
    allow_real_models, tmp_path
) -> None:
    agent = PlanExecuteAgent(
        "local:smollm2", [get_order, search_orders], max_replans=1, max_steps=8, trace=tmp_path
    )
    run = agent.start("What is the status of order A-1001?")
    run.step_sync()  # the plan: one constrained generation
    (call,) = run.steps[0].tool_calls
    assert call.name == "submit_plan"
    jsonschema.validate(json.loads(call.arguments), agent.plan_definition.parameters)
    assert call.status == "ok", call.result  # the grammar admits only valid plans
    result = run.finish_sync()
    assert result.status in ("completed", "failed", "max_steps")
    assert result.ok or result.explanation
    progress = agent.progress(run)
    offered = TraceStore(tmp_path).sql(
        "SELECT tools FROM model_calls WHERE run_id = ? ORDER BY step", [run.id]
    )
    assert list(offered[0][0]) == ["submit_plan"]
    for (tools,) in offered[1:]:  # each step offered one tool (a plan step's) or none
        assert len(tools) <= 1
    step_tools = [t.name for t in agent.step_tools]
    assert progress.versions and all(v.plan.problems(step_tools) == [] for v in progress.versions)


def test_the_inspector_shows_a_stored_runs_plans(tmp_path) -> None:
    from agentlab.tracing import TraceStore
    from agentlab.ui import RunInspector

    agent = agent_with(Planner([LOOKUP_THEN_ANSWER], ORDER_ARGS), trace=tmp_path)
    result = agent.run_sync("Where is order A-1001?")
    assert result.status == "completed"
    shown = RunInspector(TraceStore(tmp_path), run_id=result.run_id).pattern_view.value
    assert "Plan v1" in shown and "lookup_order" in shown
