"""The run loop: steps, tool feedback, limits and plain-language failures."""

import asyncio
import time

import pytest
from _recorder import Recorder

from agentlab.agents import ReActAgent
from agentlab.errors import ToolRetry, UnexpectedModelOutputError, UserError
from agentlab.events import ModelCallEvent, RunFinished, RunStarted, ToolCallEvent
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage
from agentlab.models import FunctionModel, SchemaModel
from agentlab.tools import tool
from agentlab.usage import Price, PriceTable


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise RuntimeError(f"boom: {reason}")


def call(name, arguments, id="c1"):
    return AssistantMessage(tool_calls=(ToolCall(id=id, name=name, arguments=arguments),))


def scripted(*replies):
    """A model that replies with `replies` in order (then repeats the last)."""
    replies = list(replies)
    seen = []

    def reply(messages, tools):
        seen.append(list(messages))
        return replies.pop(0) if len(replies) > 1 else replies[0]

    model = FunctionModel(reply)
    model.seen = seen
    return model


def make_agent(model, tools=(add,), **kwargs):
    recorder = Recorder()
    agent = ReActAgent(model, list(tools), trace=recorder, **kwargs)
    return agent, recorder


def test_tool_loop_completes_and_records_every_step():
    agent, rec = make_agent(scripted(call("add", '{"a": 2, "b": 3}'), "The sum is 5."))
    result = agent.run_sync("What is 2 + 3?")
    assert result.ok and result.output == "The sum is 5."
    assert result.steps == 2 and result.tools_called == ["add"]
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.cost == 0.0
    assert isinstance(result.messages[3], ToolMessage) and result.messages[3].content == "5"
    kinds = [e.kind for e in rec.events]
    assert kinds == ["run_started", "model_call", "tool_call", "model_call", "run_finished"]
    started, finished = rec.of(RunStarted)[0], rec.of(RunFinished)[0]
    assert started.run_id == finished.run_id == result.run_id
    assert finished.status == "completed" and finished.steps == 2
    assert finished.input_tokens == result.usage.input_tokens
    tool_event = rec.of(ToolCallEvent)[0]
    assert (tool_event.tool, tool_event.result, tool_event.status, tool_event.step) == (
        "add",
        "5",
        "ok",
        1,
    )


def test_model_call_events_hold_each_message_exactly_once():
    agent, rec = make_agent(
        scripted(call("add", '{"a": 1, "b": 1}'), call("add", '{"a": 2, "b": 2}', id="c2"), "done")
    )
    result = agent.run_sync("add things")
    rebuilt = []
    for event in rec.of(ModelCallEvent):
        rebuilt += event.messages
        rebuilt.append(event.response)
        assert event.context_messages == len(rebuilt) - 1
    assert rebuilt == result.messages


def test_step_by_step_run_can_be_inspected_between_steps():
    agent, _ = make_agent(scripted(call("add", '{"a": 1, "b": 2}'), "3"))
    run = agent.start("1 + 2?")
    assert not run.done and run.steps == []
    step = run.step_sync()
    assert step.index == 1 and step.kind == "tool_calls"
    assert step.tool_calls[0].result == "3" and not run.done
    assert isinstance(run.messages[-1], ToolMessage)
    with pytest.raises(UserError, match="still running"):
        run.result  # noqa: B018
    step = run.step_sync()
    assert step.kind == "answer" and run.done and run.result.output == "3"
    with pytest.raises(UserError, match="already finished"):
        run.step_sync()


def test_invalid_arguments_go_back_to_the_model_which_corrects_them():
    model = scripted(call("add", '{"a": "two", "b": 3}'), call("add", '{"a": 2, "b": 3}'), "5")
    agent, rec = make_agent(model)
    result = agent.run_sync("2 + 3")
    assert result.ok and result.output == "5"
    feedback = model.seen[1][-1]
    assert isinstance(feedback, ToolMessage) and feedback.is_error
    assert "- a: Input should be a valid integer" in feedback.content
    assert [e.status for e in rec.of(ToolCallEvent)] == ["invalid_arguments", "ok"]


def test_malformed_json_arguments_are_reported_not_raised():
    agent, rec = make_agent(scripted(call("add", '{"a": 2, "b": '), "gave up"))
    result = agent.run_sync("2 + 3")
    assert result.ok
    assert "Invalid JSON" in rec.of(ToolCallEvent)[0].result


def test_repeated_invalid_arguments_end_the_run_with_an_explanation():
    agent, rec = make_agent(scripted(call("add", '{"a": "x"}')), max_retries=2)
    result = agent.run_sync("2 + 3")
    assert result.status == "failed" and result.steps == 3
    assert "What went wrong: the call to tool 'add' failed 3 times in a row" in result.explanation
    assert "What was tried: 3 model calls; tools called: add 3x (3 failed)" in result.explanation
    assert "What to do next:" in result.explanation
    assert rec.of(RunFinished)[0].explanation == result.explanation
    assert len(rec.of(ToolCallEvent)) == 3


def test_unknown_tool_lists_available_tools():
    agent, rec = make_agent(scripted(call("subtract", '{"a": 1}'), "ok"))
    result = agent.run_sync("1 - 1")
    event = rec.of(ToolCallEvent)[0]
    assert event.status == "unknown_tool"
    assert "Unknown tool 'subtract'. Available tools: add." in event.result
    assert result.ok


def test_tool_exception_becomes_a_message_and_is_recorded():
    model = scripted(call("explode", '{"reason": "disk full"}'), "It failed.")
    agent, rec = make_agent(model, tools=(add, explode))
    result = agent.run_sync("do it")
    assert result.ok
    event = rec.of(ToolCallEvent)[0]
    assert event.status == "error"
    assert "Tool 'explode' raised RuntimeError: boom: disk full" in event.error
    assert model.seen[1][-1].is_error


def test_tool_retry_sends_the_tools_own_message():
    @tool
    def lookup(order_id: str) -> str:
        """Look up an order.

        Args:
            order_id: Like O-1001.
        """
        raise ToolRetry(f"No order {order_id}; ids look like O-1001.")

    model = scripted(call("lookup", '{"order_id": "1001"}'), "sorry")
    agent, _rec = make_agent(model, tools=(lookup,))
    agent.run_sync("where is 1001")
    assert model.seen[1][-1].content == "No order 1001; ids look like O-1001."


@pytest.mark.parametrize("is_async", [True, False])
def test_tool_timeout_is_an_error_message(is_async):
    if is_async:

        async def slow(seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "done"
    else:

        def slow(seconds: float) -> str:
            time.sleep(seconds)
            return "done"

    slow.__doc__ = "Wait.\n\nArgs:\n    seconds: How long."
    slow_tool = tool(timeout=0.05)(slow)
    agent, rec = make_agent(
        scripted(call("slow", '{"seconds": 0.5}'), "too slow"), tools=(slow_tool,)
    )
    t0 = time.perf_counter()
    result = agent.run_sync("wait")
    assert time.perf_counter() - t0 < 0.45
    event = rec.of(ToolCallEvent)[0]
    assert event.status == "timeout" and "did not finish within 0.05 s" in event.result
    assert result.ok


def test_step_limit_ends_with_a_plain_explanation():
    agent, _rec = make_agent(scripted(call("add", '{"a": 1, "b": 1}')), max_steps=3)
    result = agent.run_sync("loop forever")
    assert result.status == "max_steps" and result.steps == 3 and result.output is None
    assert "used all 3 steps (max_steps)" in result.explanation
    assert "raise max_steps" in result.explanation
    assert str(result) == result.explanation


def test_unparseable_model_output_is_retried_then_explained():
    def broken(messages, tools):
        raise UnexpectedModelOutputError("reply was not valid JSON", raw="{{{")

    agent, rec = make_agent(FunctionModel(broken), max_retries=1)
    result = agent.run_sync("hi")
    assert result.status == "failed" and result.steps == 2
    assert "failed 2 times in a row: reply was not valid JSON" in result.explanation
    assert "more capable model" in result.explanation
    assert [e.status for e in rec.of(ModelCallEvent)] == ["error", "error"]


def test_empty_reply_is_treated_as_unusable_output():
    agent, _rec = make_agent(scripted(AssistantMessage(content=""), "hello"))
    result = agent.run_sync("hi")
    assert result.ok and result.output == "hello" and result.steps == 2


def test_a_crashing_provider_ends_in_an_explanation_not_a_traceback():
    def crash(messages, tools):
        raise KeyError("choices")

    agent, rec = make_agent(FunctionModel(crash))
    result = agent.run_sync("hi")
    assert result.status == "failed"
    assert "KeyError: 'choices'" in result.explanation
    assert rec.of(RunFinished)[0].status == "failed"


def test_schema_model_calls_every_tool_with_valid_arguments():
    agent, rec = make_agent(SchemaModel(), tools=(add, explode))
    result = agent.run_sync("go")
    assert result.tools_called == ["add", "explode"]
    statuses = [e.status for e in rec.of(ToolCallEvent)]
    assert statuses == ["ok", "error"]  # arguments valid; explode raises by design


def test_cost_uses_the_price_table():
    prices = PriceTable({"scripted:*": Price(1_000_000.0, 0.0)})
    agent, _ = make_agent(scripted("hi"), prices=prices)
    result = agent.run_sync("x" * 40)
    assert result.cost == pytest.approx(result.usage.input_tokens)


def test_sync_entry_point_works_inside_a_running_event_loop():
    agent, _ = make_agent(scripted("inside"))

    async def notebook_cell():
        return agent.run_sync("hi")  # as a Jupyter cell would, with a loop running

    assert asyncio.run(notebook_cell()).output == "inside"


def test_async_run():
    agent, _ = make_agent(scripted(call("add", '{"a": 1, "b": 1}'), "2"))
    assert asyncio.run(agent.run("1+1")).output == "2"


def test_bad_agent_definitions_fail_clearly():
    with pytest.raises(UserError, match="several tools named"):
        ReActAgent(SchemaModel(), [add, add], trace=False)
    with pytest.raises(UserError, match="max_steps must be at least 1"):
        ReActAgent(SchemaModel(), [], max_steps=0, trace=False)
    with pytest.raises(UserError, match="Unknown model 'gpt'"):
        ReActAgent("gpt", [], trace=False)


def test_plain_functions_become_tools():
    def mul(a: int, b: int) -> int:
        """Multiply.

        Args:
            a: x
            b: y
        """
        return a * b

    agent, _ = make_agent(scripted(call("mul", '{"a": 3, "b": 4}'), "12"), tools=(mul,))
    assert agent.run_sync("3*4").messages[3].content == "12"


def test_schema_model_satisfies_patterns():
    from typing import Annotated

    from pydantic import Field

    @tool
    def get(order_id: Annotated[str, Field(pattern=r"^O-[0-9]{4}$")]) -> str:
        """Get an order.

        Args:
            order_id: Like O-1001.
        """
        return order_id

    agent, rec = make_agent(SchemaModel(), tools=(get,))
    agent.run_sync("go")
    assert [(e.status, e.result) for e in rec.of(ToolCallEvent)] == [("ok", "O-0000")]
