"""The pattern hook of the run loop: Agent.turn decides what each step offers."""

from __future__ import annotations

import json
from collections.abc import Sequence

from agentlab import tool
from agentlab.agents import ReActAgent, Run
from agentlab.agents.turn import StopRun, Turn
from agentlab.errors import UnexpectedModelOutputError
from agentlab.events import ModelCallEvent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import FunctionModel


@tool
def add(a: int, b: int) -> int:
    """Add two integers and return the sum.

    Args:
        a: the first integer.
        b: the second integer.
    """
    return a + b


@tool
def mul(a: int, b: int) -> int:
    """Multiply two integers and return the product.

    Args:
        a: the first integer.
        b: the second integer.
    """
    return a * b


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


class OneToolPerStep(ReActAgent):
    """Offers `add` at step 1, then only `mul`, each with an instruction."""

    def turn(self, run: Run) -> Turn:
        name = "add" if not run.steps else "mul"
        if len(run.steps) >= 2:
            return Turn((), tool_choice="none", instruction="Now answer.")
        definition = self.tools_by_name[name].definition
        return Turn([definition], tool_choice=name, instruction=f"Use {name}.")


def test_each_step_offers_what_the_turn_says_and_records_it() -> None:
    seen: list[tuple[list[str], str]] = []

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        seen.append(([t.name for t in tools], str(messages[-1].content)))
        if not tools:
            return AssistantMessage(content="done")
        args = json.dumps({"a": 2, "b": 3})
        return AssistantMessage(tool_calls=(ToolCall(id="c", name=tools[0].name, arguments=args),))

    sink = Sink()
    agent = OneToolPerStep(FunctionModel(reply), [add, mul], trace=sink)
    result = agent.run_sync("2 and 3?")
    assert result.status == "completed" and result.output == "done"
    assert seen[0] == (["add"], "Use add.")
    assert seen[1][0] == ["mul"]
    assert seen[2] == ([], "Now answer.")
    calls = [e for e in sink.events if isinstance(e, ModelCallEvent)]
    assert [c.tools for c in calls] == [["add"], ["mul"], []]
    # the instruction is part of what the trace records as sent with the step
    assert [m.content for m in calls[0].messages if isinstance(m, UserMessage)][-1] == "Use add."


def test_a_call_to_a_tool_the_step_did_not_offer_is_refused_with_the_offered_ones() -> None:
    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        if len(messages) > 4:
            return AssistantMessage(content="ok")
        return AssistantMessage(tool_calls=(ToolCall(id="c", name="mul", arguments="{}"),))

    class AddOnly(ReActAgent):
        def turn(self, run: Run) -> Turn:
            return Turn([self.tools_by_name["add"].definition])

    run = AddOnly(FunctionModel(reply), [add, mul], trace=False).start("2+3?")
    step = run.step_sync()
    (record,) = step.tool_calls
    assert record.status == "unknown_tool"
    assert "Tool not available at this step: 'mul'. Available tools: add." in str(record.error)


def test_stop_run_ends_the_run_with_its_explanation_before_asking_the_model() -> None:
    asked: list[int] = []

    class Stops(ReActAgent):
        def turn(self, run: Run) -> Turn:
            raise StopRun("plan", "the plan could not be repaired", "Simplify the task.")

    agent = Stops(FunctionModel(lambda m, t: asked.append(1) or "x"), [add], trace=False)
    result = agent.run_sync("hi")
    assert asked == []
    assert result.status == "failed"
    assert result.failure is not None and result.failure["kind"] == "plan"
    assert "the plan could not be repaired" in str(result.explanation)
    assert "Simplify the task." in str(result.explanation)


def test_an_instruction_is_not_repeated_when_a_failed_request_is_asked_again() -> None:
    replies = iter(["garbled", "answer"])

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        text = next(replies)
        if text == "garbled":
            raise UnexpectedModelOutputError("not a reply", model="scripted:function")
        return text

    class Instructs(ReActAgent):
        def turn(self, run: Run) -> Turn:
            return Turn(self.tool_definitions, instruction="Answer briefly.")

    result = Instructs(FunctionModel(reply), [add], trace=False).run_sync("q")
    assert result.status == "completed" and result.steps == 2  # the first was asked again
    texts = [m.content for m in result.messages if isinstance(m, UserMessage)]
    assert texts == ["q", "Answer briefly."]


def test_a_run_rebuilt_from_its_trace_has_every_instruction_the_live_run_had(tmp_path) -> None:
    from agentlab.agents.recovery import read_run
    from agentlab.tools import Tool
    from agentlab.tracing import TraceStore

    def send(text: str) -> str:
        """Send a text to the customer.

        Args:
            text: what to send.
        """
        return "sent"

    class Instructs(ReActAgent):
        def turn(self, run: Run) -> Turn:
            return Turn(self.tool_definitions, instruction=f"Now step {len(run.steps) + 1}.")

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        n = sum(1 for m in messages if m.role == "assistant")
        name = "add" if n == 0 else "send"
        args = '{"a": 1, "b": 2}' if n == 0 else '{"text": "hello"}'
        return AssistantMessage(tool_calls=(ToolCall(id=f"c{n}", name=name, arguments=args),))

    store = TraceStore(tmp_path)
    tools = [add, Tool(send, requires_approval=True)]
    live = Instructs(FunctionModel(reply), tools, trace=store).start("q")
    live.finish_sync()
    assert live.status == "paused"
    rebuilt = read_run(Instructs(FunctionModel(reply), tools, trace=store), live.id, store)
    assert [(m.role, m.content) for m in rebuilt.messages] == [
        (m.role, m.content) for m in live.messages
    ]
    texts = [m.content for m in rebuilt.messages if isinstance(m, UserMessage)]
    assert texts == ["q", "Now step 1.", "Now step 2."]


def test_text_where_a_tool_call_was_required_is_not_an_answer_and_is_asked_again() -> None:
    replies = iter(
        [
            "I'd rather chat",
            AssistantMessage(
                tool_calls=(ToolCall(id="c1", name="add", arguments='{"a": 1, "b": 2}'),)
            ),
            "3",
        ]
    )

    class MustCall(ReActAgent):
        def turn(self, run: Run) -> Turn:
            if any(s.tool_calls for s in run.steps):
                return Turn((), tool_choice="none")
            return Turn(self.tool_definitions, tool_choice="required")

    run = MustCall(FunctionModel(lambda m, t: next(replies)), [add], trace=False).start("q")
    result = run.finish_sync()
    assert result.status == "completed" and result.output == "3"
    assert "answered in text where it had to call a tool" in str(run.steps[0].error)
    assert [len(s.tool_calls) for s in run.steps] == [0, 1, 0]
