"""StateMachineAgent: machines from Python or a spec, the narrowed transition tool,
guards, budgets per state, pause and resume from the trace, the diagram, the
exporter carrying the spec, and the refund flow on scripted and the real local model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from agentlab import tool
from agentlab.agents import ReActAgent, Run
from agentlab.agents.state_machine import (
    Guard,
    State,
    StateBudget,
    StateMachine,
    Transition,
)
from agentlab.agents.state_machine_agent import (
    TRANSITION_TOOL,
    StateMachineAgent,
    last_result,
)
from agentlab.agents.state_spec import StateMachineError
from agentlab.demo.refunds import (
    REFUND_FLOW_SPEC,
    REFUND_GUARDS,
    build_refund_agent,
    refund_ledger,
)
from agentlab.errors import UserError
from agentlab.events import ModelCallEvent
from agentlab.export import export_notebook
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.ui.state_view import state_path_from_rows, state_view_html
from agentlab.usage import PriceTable


@tool
def take_note(text: str) -> str:
    """Write a note about the customer's request.

    Args:
        text: What to note.
    """
    return f"noted: {text}"


def noted(run: Run) -> bool:
    """A note was taken."""
    return last_result(run, "take_note") is not None


def triage(**start: Any) -> StateMachine:
    """start --left--> left --> end; start --right [noted]--> right --> end."""
    return StateMachine(
        name="triage",
        states=[
            State(
                name="start",
                instructions="Note the request, then choose a side.",
                tools=[take_note],
                transitions=[
                    Transition(to="left", description="the customer wants left"),
                    Transition(to="right", guard=noted),
                ],
                **start,
            ),
            State(name="left", transitions=["end"]),
            State(name="right", transitions=["end"]),
            State(name="end", terminal=True, instructions="Say which side was taken."),
        ],
    )


def call(name: str, arguments: dict[str, Any], n: int) -> AssistantMessage:
    return AssistantMessage(
        tool_calls=(ToolCall(id=f"c{n}", name=name, arguments=json.dumps(arguments)),)
    )


def scripted(*replies: AssistantMessage | str) -> FunctionModel:
    """A model giving `replies` in order, then answering "done"."""
    queue = list(replies)
    return FunctionModel(lambda messages, tools: queue.pop(0) if queue else "done")


def go(to: str, n: int = 0) -> AssistantMessage:
    return call(TRANSITION_TOOL, {"to": to}, n)


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


# -- the machine: Python, spec files, errors ----------------------------------------


def test_a_machine_round_trips_through_yaml_and_json_specs(tmp_path: Path) -> None:
    machine = triage(budget=StateBudget(steps=3, tokens=500))
    for suffix in (".yaml", ".json"):
        path = machine.save(tmp_path / f"triage{suffix}")
        loaded = StateMachine.from_spec(path, guards={"noted": noted})
        assert loaded.to_spec() == machine.to_spec()
        assert loaded.guard(loaded.state("start").transitions[1]) is noted
    spec = machine.to_spec()
    assert spec["initial"] == "start"  # the first state by default
    assert spec["states"]["start"]["tools"] == ["take_note"]
    assert spec["states"]["start"]["budget"] == {"steps": 3, "tokens": 500}
    assert spec["states"]["start"]["transitions"][1] == {"to": "right", "guard": "noted"}
    assert spec["states"]["left"] == {"transitions": ["end"]}


BAD_SPECS = [
    (
        {"states": {"a": {"transitions": ["isue"]}, "issue": {"terminal": True}}},
        "states.a.transitions[0].to: 'isue' is not a state (did you mean 'issue'?)",
    ),
    (
        {"states": {"a": {"transition": ["b"]}, "b": {"terminal": True}}},
        "states.a.transition: unknown key; the keys of a state are: instructions, tools",
    ),
    (
        {"states": {"a": {"transitions": ["b"]}, "b": {"transitions": ["a"]}}},
        "states: no state is terminal",
    ),
    (
        {"states": {"a": {"transitions": ["b"]}, "b": {"terminal": True}, "c": {"terminal": True}}},
        "states.c: unreachable from 'a'",
    ),
    (
        {
            "states": {
                "a": {"transitions": ["b", "loop"]},
                "loop": {"transitions": ["loop"]},
                "b": {"terminal": True},
            }
        },
        "states.loop: no terminal state can be reached from it",
    ),
    (
        {"states": [{"name": "a", "transitions": ["b"]}, {"name": "b", "terminal": True}] * 2},
        "states.a: the name is used by 2 states",
    ),
    (
        {"states": {"a": {"transitions": ["b"]}, "b": {"terminal": True, "transitions": ["a"]}}},
        "states.b: a terminal state ends the run, so it has no transitions",
    ),
    (
        {"states": {"a": {}, "b": {"terminal": True}}},
        "states.a: a state that is not terminal needs transitions",
    ),
    (
        {"initial": "z", "states": {"a": {"transitions": ["b"]}, "b": {"terminal": True}}},
        "initial: 'z' is not a state",
    ),
    (
        {"states": {"a": {"transitions": ["b"], "budget": {"steps": 0}}, "b": {"terminal": True}}},
        "states.a.budget.steps: Input should be greater than 0",
    ),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_spec_errors_name_the_key_and_the_fix(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(StateMachineError) as caught:
        StateMachine.from_spec(spec)
    assert message in str(caught.value)
    assert isinstance(caught.value, UserError)


def test_spec_files_refuse_duplicate_keys_and_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("states:\n  a: {transitions: [b]}\n  b: {terminal: true}\n  a: {}\n")
    with pytest.raises(StateMachineError, match=r"flow.yaml is not a valid spec file.*'a' appears"):
        StateMachine.from_spec(path)
    path = tmp_path / "flow.json"
    path.write_text('{"states": {"a": {"transitions": ["b"]}, "b": {}, "b": {}}}')
    with pytest.raises(StateMachineError, match="'b' appears twice"):
        StateMachine.from_spec(path)
    with pytest.raises(StateMachineError, match=r"No state-machine spec at missing.yaml"):
        StateMachine.from_spec("missing.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("states:\n  a: {transitions: [c]}\n  b: {terminal: true}\n")
    with pytest.raises(StateMachineError, match=r"bad.yaml is not valid: states.a.transitions"):
        StateMachine.from_spec(path)


def test_python_definitions_get_the_same_errors() -> None:
    with pytest.raises(StateMachineError, match=r"State\(\.\.\.\) is not valid: name"):
        State(name="two words")
    with pytest.raises(StateMachineError, match="a lambda has no name"):
        StateMachine(
            states=[
                State(name="a", transitions=[Transition(to="b", guard=lambda run: True)]),
                State(name="b", terminal=True),
            ]
        )


def test_the_agent_refuses_tools_and_guards_it_does_not_have() -> None:
    spec = {
        "states": {
            "a": {"tools": ["take_note", "lookup"], "transitions": [{"to": "b", "guard": "ok"}]},
            "b": {"terminal": True},
        }
    }
    with pytest.raises(StateMachineError) as caught:
        StateMachineAgent(scripted(), StateMachine.from_spec(spec), [take_note], trace=False)
    text = str(caught.value)
    assert "states.a.tools: 'lookup' is not a tool of the agent (its tools: take_note)" in text
    assert "states.a.transitions[0].guard: 'ok' is not registered; pass guards={'ok'" in text

    @tool(name=TRANSITION_TOOL)
    def clash(to: str) -> str:
        """Go somewhere.

        Args:
            to: Where.
        """
        return to

    with pytest.raises(UserError, match="the name of the state machine's transition tool"):
        StateMachineAgent(scripted(), triage(), [clash], trace=False)
    with pytest.raises(UserError, match="has no price"):
        unpriced = PriceTable(include_defaults=False)
        StateMachineAgent(
            scripted(), triage(budget=StateBudget(cost=0.01)), trace=False, prices=unpriced
        )


# -- each step: what is offered -------------------------------------------------------


def test_each_step_offers_the_state_tools_and_only_the_transitions_allowed_now() -> None:
    seen: list[list[ToolDefinition]] = []

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Any:
        seen.append(list(tools))
        return [call("take_note", {"text": "right"}, 1), go("right", 2), go("end", 3), "right"][
            len(seen) - 1
        ]

    sink = Sink()
    agent = StateMachineAgent(FunctionModel(reply), triage(), trace=sink)
    run = agent.start("Go right")
    first = agent.turn(run)
    assert first.tool_choice == "required" and first.instruction is not None
    assert first.instruction.startswith("[State: start] Note the request")
    result = run.finish_sync()
    assert result.status == "completed" and result.output == "right"
    transition = {t.name: t for t in seen[0]}[TRANSITION_TOOL]
    assert transition.parameters == {
        "type": "object",
        "properties": {
            "to": {"type": "string", "enum": ["left"], "description": "The next state."}
        },
        "required": ["to"],
        "additionalProperties": False,
    }  # 'right' is guarded by 'noted', false before the note
    assert "'left' when the customer wants left" in transition.description
    # the note returned and a transition is open: the decision alone, both sides now
    (second,) = seen[1]
    assert second.parameters["properties"]["to"]["enum"] == ["left", "right"]
    assert [t.name for t in seen[2]] == [TRANSITION_TOOL]  # no tools: only the transition
    assert seen[3] == []  # terminal: no tools, the final answer
    calls = [e for e in sink.events if isinstance(e, ModelCallEvent)]
    assert [c.tools for c in calls] == [
        ["take_note", TRANSITION_TOOL],
        [TRANSITION_TOOL],
        [TRANSITION_TOOL],
        [],
    ]
    assert agent.state_path(run) == ["start", "right", "end"]
    results = [c.result for s in run.steps for c in s.tool_calls if c.name == TRANSITION_TOOL]
    assert results == ["start → right", "right → end"]


def test_tool_choice_names_the_transition_alone_and_none_in_a_terminal_state() -> None:
    agent = StateMachineAgent(scripted(go("left"), go("end")), triage(), trace=False)
    run = agent.start("left")
    run.step_sync()  # start → left
    turn = agent.turn(run)
    assert turn.tool_choice == TRANSITION_TOOL and [t.name for t in turn.tools] == [TRANSITION_TOOL]
    run.step_sync()  # left → end
    final = agent.turn(run)
    assert final.tools == () and final.tool_choice == "none"
    assert final.instruction is not None
    assert "The procedure is finished (start → left → end). Say which side" in final.instruction


def test_a_transition_not_allowed_now_is_refused_and_the_state_is_unchanged() -> None:
    replies = [go("right", 1), go("end", 2), go("nowhere", 3), go("left", 4), go("end", 5), "ok"]
    agent = StateMachineAgent(scripted(*replies), triage(), trace=False, max_retries=5)
    run = agent.start("q")
    for _ in range(3):
        run.step_sync()
        assert agent.current_state(run).name == "start"
    refused = [c for s in run.steps for c in s.tool_calls]
    assert [c.status for c in refused] == ["error", "error", "invalid_arguments"]
    assert "Transition refused: the procedure is in state 'start' and cannot go to 'right' " in (
        refused[0].result
    )
    assert "(its guard 'noted' is false now). Allowed now: left. The state is unchanged." in (
        refused[0].result
    )
    assert "cannot go to 'end' (it is not a transition of this state)" in refused[1].result
    assert "Input should be 'left', 'right' or 'end'" in refused[2].result
    result = run.finish_sync()
    assert result.status == "completed" and agent.state_path(run) == ["start", "left", "end"]


def test_a_transition_to_itself_lets_a_state_do_its_work_again() -> None:
    machine = StateMachine(
        states=[
            State(name="gather", tools=[take_note], transitions=["gather", "end"]),
            State(name="end", terminal=True),
        ]
    )
    replies = [
        call("take_note", {"text": "a"}, 1),
        go("gather", 2),
        call("take_note", {"text": "b"}, 3),
    ]
    agent = StateMachineAgent(scripted(*replies), machine, trace=False)
    run = agent.start("q")
    offered = []
    for _ in range(3):
        offered.append(sorted(t.name for t in agent.turn(run).tools))
        run.step_sync()
    assert offered == [
        ["take_note", TRANSITION_TOOL],
        [TRANSITION_TOOL],  # the note returned: decide
        ["take_note", TRANSITION_TOOL],  # a new visit: its work again
    ]
    assert agent.state_path(run) == ["gather", "gather"]


def test_a_state_tool_is_refused_once_the_run_has_left_its_state() -> None:
    both = AssistantMessage(
        tool_calls=(
            ToolCall(id="a", name=TRANSITION_TOOL, arguments='{"to": "left"}'),
            ToolCall(id="b", name="take_note", arguments='{"text": "late"}'),
        )
    )
    agent = StateMachineAgent(scripted(both), triage(), trace=False)
    run = agent.start("q")
    step = run.step_sync()
    moved, late = step.tool_calls
    assert moved.status == "ok" and moved.result == "start → left"
    assert late.status == "unknown_tool"
    assert "Tool 'take_note' cannot be used in state 'left' (its tools: none)" in late.result


def test_no_open_transition_and_no_tools_ends_the_run_with_why() -> None:
    machine = StateMachine(
        states=[
            State(name="a", transitions=[Transition(to="b", guard=noted)]),
            State(name="b", terminal=True),
        ]
    )
    result = StateMachineAgent(scripted(), machine, trace=False).run_sync("q")
    assert result.status == "failed" and result.failure is not None
    assert result.failure["kind"] == "state_machine"
    assert "in state 'a' no transition is allowed (its guards noted are false)" in str(
        result.explanation
    )


def test_a_guard_that_raises_fails_the_run_naming_it() -> None:
    def broken(run: Run) -> bool:
        raise KeyError("eligible")

    machine = StateMachine(
        states=[
            State(name="a", transitions=[Transition(to="b", guard=broken)], tools=[take_note]),
            State(name="b", terminal=True),
        ]
    )
    result = StateMachineAgent(scripted(), machine, trace=False).run_sync("q")
    assert result.status == "failed"
    assert "The guard 'broken' of a → b raised KeyError: 'eligible'" in str(result.explanation)


# -- budgets per state --------------------------------------------------------------------


def never(run: Run) -> bool:
    """Never true: the state keeps working."""
    return False


@pytest.mark.parametrize(
    ("budget", "named"),
    [
        (StateBudget(steps=2), "state 'start' used its budget of 2 steps (2 spent in the state)"),
        (StateBudget(tokens=30), "state 'start' used its budget of 30 tokens"),
    ],
)
def test_a_state_budget_ends_the_run_naming_the_state_and_the_budget(
    budget: StateBudget, named: str
) -> None:
    machine = StateMachine(
        states=[
            State(
                name="start",
                tools=[take_note],
                transitions=[Transition(to="end", guard=never)],
                budget=budget,
            ),
            State(name="end", terminal=True),
        ]
    )
    notes = [call("take_note", {"text": f"note {i}"}, i) for i in range(10)]
    agent = StateMachineAgent(scripted(*notes), machine, trace=False)
    result = agent.run_sync("keep noting")
    assert result.status == "budget_exceeded"
    assert named in str(result.explanation)
    assert "raise its budget" in str(result.explanation)
    assert result.tools_called == ["take_note"] * (result.steps - 1)


def test_spend_is_counted_per_state_over_the_run() -> None:
    agent = StateMachineAgent(
        scripted(call("take_note", {"text": "x"}, 1), go("left", 2), go("end", 3)),
        triage(),
        trace=False,
    )
    run = agent.start("q")
    run.finish_sync()
    assert agent.spent_in(run, "start").steps == 2
    assert agent.spent_in(run, "left").steps == 1
    assert agent.spent_in(run, "end").steps == 1
    assert agent.spent_in(run, "start").tokens == sum(s.usage.total_tokens for s in run.steps[:2])


# -- the refund flow: approval, resume in a new agent, the trace ----------------------


def follower(
    messages: Sequence[Message], tools: Sequence[ToolDefinition]
) -> AssistantMessage | str:
    """Takes the first transition allowed, else calls the state's tool with the order
    id of the question; answers with the last instruction's facts."""
    if not tools:
        return "Final: " + str(messages[-1].content).split("Facts:")[-1].strip()
    question = next(m for m in messages if isinstance(m, UserMessage))
    order = str(question.content).split()[-1].strip(".")
    n = sum(1 for m in messages if isinstance(m, AssistantMessage))
    offered = {t.name: t for t in tools}
    if TRANSITION_TOOL in offered:
        to = offered[TRANSITION_TOOL].parameters["properties"]["to"]["enum"][0]
        return call(TRANSITION_TOOL, {"to": to}, n)
    return call(tools[0].name, {"order_id": order}, n)


@pytest.fixture
def refunds(tmp_path: Path, workspace: Path) -> dict[str, Any]:
    ledger = tmp_path / "refunds.jsonl"

    def build() -> StateMachineAgent:
        return build_refund_agent(FunctionModel(follower), ledger=ledger, trace=workspace)

    return {"build": build, "ledger": ledger, "store": TraceStore(workspace)}


def test_the_refund_flow_pauses_before_the_refund_and_a_new_agent_resumes_it(
    refunds: dict[str, Any],
) -> None:
    agent = refunds["build"]()
    paused = agent.run_sync("Please refund order O-1003.")
    assert paused.status == "paused" and paused.pending is not None
    assert paused.pending["tool"] == "issue_refund"
    assert refund_ledger(refunds["ledger"]) == []
    fresh = refunds["build"]()  # another agent object: the state comes from the trace
    done = fresh.resume_sync(paused.run_id, approve=True)
    assert done.status == "completed", done.explanation
    (refund,) = refund_ledger(refunds["ledger"])
    assert refund["order_id"] == "O-1003" and refund["amount_usd"] == "28.50"
    assert '"refund_id":"R-0001"' in str(done.output)
    rows = refunds["store"].steps(done.run_id).to_dict("records")
    path = state_path_from_rows(rows, "identify_order")
    assert path == ["identify_order", "check_eligibility", "issue_refund", "done"]
    moves = [r["output"] for r in rows if r["name"] == TRANSITION_TOOL]
    assert moves == [
        "identify_order → check_eligibility",
        "check_eligibility → issue_refund",
        "issue_refund → done",
    ]


def test_a_declined_refund_ends_in_the_terminal_state_without_a_refund(
    refunds: dict[str, Any],
) -> None:
    paused = refunds["build"]().run_sync("Please refund order O-1001.")
    done = refunds["build"]().resume_sync(paused.run_id, approve=False, note="not today")
    assert done.status == "completed"
    assert refund_ledger(refunds["ledger"]) == []
    assert "issue_refund: denied: A person declined this call" in str(done.output)
    assert done.tools_called[-2:] == ["issue_refund", TRANSITION_TOOL]


def test_an_order_that_cannot_be_refunded_goes_through_deny(refunds: dict[str, Any]) -> None:
    agent = refunds["build"]()
    run = agent.start("Refund order O-1007.")
    result = run.finish_sync()
    assert result.status == "completed"
    assert agent.state_path(run) == ["identify_order", "check_eligibility", "deny", "done"]
    assert "not delivered yet" in str(result.output)
    assert refund_ledger(refunds["ledger"]) == []


def test_the_stored_run_draws_its_machine_and_path(refunds: dict[str, Any]) -> None:
    paused = refunds["build"]().run_sync("Please refund order O-1003.")
    store = refunds["store"]
    row = store.run(paused.run_id)
    assert row is not None and row["metadata"]["state_machine"]["name"] == "refund_flow"
    html = state_view_html(store.steps(paused.run_id).to_dict("records"), row)
    assert 'class="state-node visited current warn" data-state="issue_refund"' in html
    assert 'class="state-node visited" data-state="check_eligibility"' in html
    assert 'class="state-node" data-state="deny"' in html
    assert "identify_order → check_eligibility → issue_refund" in html
    assert state_view_html([], {"metadata": {}}) == ""
    shown = refunds["build"]()._repr_html_()
    assert "StateMachineAgent <code>refund-flow</code>" in shown and "<svg" in shown


def test_the_inspector_and_the_run_view_show_the_state_path(refunds: dict[str, Any]) -> None:
    from agentlab.ui import RunInspector

    agent = refunds["build"]()
    run = agent.start("Please refund order O-1003.")
    run.finish_sync()
    live = run._repr_html_()  # the run's own view holds the diagram
    assert 'data-state="issue_refund"' in live and "current" in live
    inspector = RunInspector(refunds["store"], run_id=run.id)
    assert 'class="state-node visited current warn" data-state="issue_refund"' in (
        inspector.pattern_view.value
    )
    react = ReActAgent(FunctionModel(lambda m, t: "hi"), trace=refunds["store"]).run_sync("hi")
    assert RunInspector(refunds["store"], run_id=react.run_id).pattern_view.value == ""


# -- the diagram --------------------------------------------------------------------------


def test_the_diagram_shows_every_state_and_highlights_the_path() -> None:
    machine = StateMachine.from_spec(REFUND_FLOW_SPEC, guards=REFUND_GUARDS)
    plain = machine._repr_html_()
    for name in machine.names:
        assert f'data-state="{name}"' in plain
    assert plain.count('class="edge"') == 6  # 5 transitions and the start arrow
    assert "[order_found]" in plain and 'class="state-node visited' not in plain
    path = ["identify_order", "check_eligibility", "deny"]
    drawn = machine.diagram(path, "failed")._repr_html_()
    assert drawn.count('class="edge taken"') == 3  # the start arrow and two transitions
    assert 'class="state-node visited current bad" data-state="deny"' in drawn
    assert "var(--jp-brand-color1" in drawn and "var(--jp-layout-color1" in drawn


def test_a_cycle_and_a_self_loop_are_drawn_inside_the_picture() -> None:
    machine = StateMachine(
        states=[
            State(name="ask", transitions=["check"]),
            State(name="check", transitions=["ask", "check", "end"]),
            State(name="end", terminal=True),
        ]
    )
    svg = machine.diagram(["ask", "check", "ask", "check"]).svg()
    assert svg.count('<path class="edge') == 5
    view_box = svg.split('viewBox="')[1].split('"')[0].split()
    top, height = float(view_box[1]), float(view_box[3])
    assert top < 0 and height > 38 * 2  # room above for the loop, below for the way back


# -- export: the package carries its spec ---------------------------------------------

FLOW_YAML = """\
name: tiny
states:
  start: {transitions: [end]}
  end: {terminal: true}
"""

AGENT_CELL = """\
from agentlab.agents.state_machine import StateMachine
from agentlab.agents.state_machine_agent import StateMachineAgent
from agentlab.messages import AssistantMessage, ToolCall
from agentlab.models import FunctionModel


def reply(messages, tools):
    if tools:
        move = ToolCall(id="c1", name="transition", arguments='{"to": "end"}')
        return AssistantMessage(tool_calls=(move,))
    return "finished"


def build_agent():
    machine = StateMachine.from_spec("specs/flow.yaml")
    return StateMachineAgent(FunctionModel(reply), machine, name="tiny", trace=False)
"""


def test_an_exported_state_machine_agent_finds_its_spec_when_installed_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "notebooks"
    (source / "specs").mkdir(parents=True)
    (source / "specs" / "flow.yaml").write_text(FLOW_YAML)
    nb = new_notebook()
    cell = new_code_cell(AGENT_CELL)
    cell.metadata["tags"] = ["export"]
    nb.cells = [cell]
    nbformat.write(nb, source / "agent.ipynb")
    monkeypatch.chdir(tmp_path)  # not the notebook's directory
    out = export_notebook(
        source / "agent.ipynb", name="tiny", out=tmp_path / "exports", validate=False
    )
    assert (out / "tiny" / "specs" / "flow.yaml").read_text() == FLOW_YAML
    config = json.loads((out / "tiny" / "config.json").read_text())
    assert config["spec_files"] == {"specs/flow.yaml": "specs/flow.yaml"}
    assert '"specs/*"' in (out / "pyproject.toml").read_text()
    elsewhere = tmp_path / "site"
    shutil.copytree(out / "tiny", elsewhere / "tiny")
    shutil.rmtree(source)  # the notebook's spec is gone: only the package's copy is left
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    script = (
        "from tiny import create_agent\n"
        "agent = create_agent()\n"
        "print(agent.machine.name, agent.run_sync('go').output)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(elsewhere)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tiny", "finished"]


# -- the real local model -----------------------------------------------------------------


def always(run: Run) -> bool:
    """Always true."""
    return True


def routing(refund_guard: Guard) -> StateMachine:
    """triage → refund [refund_guard] | billing | shipping → end; refund listed first."""
    return StateMachine(
        states=[
            State(
                name="triage",
                instructions="Route the request.",
                transitions=[
                    Transition(to="refund", guard=refund_guard, description="refund requests"),
                    Transition(to="billing", description="questions about invoices"),
                    Transition(to="shipping", description="questions about deliveries"),
                ],
            ),
            State(name="billing", transitions=["end"]),
            State(name="shipping", transitions=["end"]),
            State(name="refund", transitions=["end"]),
            State(name="end", terminal=True),
        ]
    )


@pytest.mark.local_model
@pytest.mark.timeout(600)
def test_the_local_model_cannot_take_a_transition_that_is_not_allowed(allow_real_models) -> None:
    """Where 'refund' is open the 135M model takes it (it is listed first); closed, the
    grammar holds `to` to the other targets, even when the question asks for it."""
    open_run = StateMachineAgent("local:smollm2", routing(always), trace=False).start("Refund me.")
    (move,) = open_run.step_sync().tool_calls
    assert json.loads(move.arguments)["to"] == "refund"  # what the model wants
    agent = StateMachineAgent("local:smollm2", routing(noted), trace=False)
    for question in ("I want a refund.", "Go to refund now.", "Where is my parcel?"):
        run = agent.start(question)
        (move,) = run.step_sync().tool_calls
        assert move.name == TRANSITION_TOOL and move.status == "ok", move.result
        assert json.loads(move.arguments)["to"] in ("billing", "shipping")


@pytest.mark.local_model
@pytest.mark.timeout(900)
def test_the_refund_flow_runs_to_its_end_on_the_local_model(
    allow_real_models, tmp_path: Path, workspace: Path
) -> None:
    ledger = tmp_path / "refunds.jsonl"
    agent = build_refund_agent("local:smollm2", ledger=ledger, trace=workspace)
    run = agent.start("Please refund order O-1003.")
    result = run.finish_sync()
    assert result.status == "paused" and result.pending is not None
    assert result.pending["tool"] == "issue_refund"
    result = run.resume_sync(approve=True)
    assert result.status == "completed", result.explanation
    assert result.output
    assert agent.state_path(run) == ["identify_order", "check_eligibility", "issue_refund", "done"]
    moves = [c for s in run.steps for c in s.tool_calls if c.name == TRANSITION_TOOL]
    assert [c.status for c in moves] == ["ok"] * 3
    assert [r["order_id"] for r in refund_ledger(ledger)] == ["O-1003"]
