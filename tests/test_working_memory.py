"""Working memory: the context-window policy, its trace records, summaries and overflow."""

from __future__ import annotations

import pytest
from _recorder import Recorder

from agentlab.agents import ReActAgent
from agentlab.errors import UserError
from agentlab.events import ContextWindowEvent, ModelCallEvent, RunFinished
from agentlab.memory.agent_memory import Memory
from agentlab.memory.working import (
    HEADERS,
    ContextOverflowError,
    RecalledMemory,
    WorkingMemory,
)
from agentlab.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from agentlab.models import FunctionModel
from agentlab.tokens import MESSAGE_OVERHEAD, EstimateCounter, count_message, message_text
from agentlab.tools import tool

COUNTER = EstimateCounter()


def conversation(turns: int, result: str = "result " * 20):
    messages = [SystemMessage(content="You help."), UserMessage(content="Where is my order?")]
    for i in range(turns):
        messages.append(
            AssistantMessage(tool_calls=(ToolCall(id=f"c{i}", name="look", arguments="{}"),))
        )
        messages.append(ToolMessage(tool_call_id=f"c{i}", name="look", content=f"{i}: {result}"))
    return messages


def counts(messages):
    return [count_message(COUNTER, m) for m in messages]


# -- token counting ------------------------------------------------------------------


def test_the_estimate_is_documented_and_counts_calls_and_tool_names():
    assert COUNTER.count("x" * 35) == 10 and COUNTER.count("") == 0
    assert "3.5 characters per token" in COUNTER.name
    call = AssistantMessage(tool_calls=(ToolCall(id="1", name="get_order", arguments='{"a":1}'),))
    assert message_text(call) == 'get_order({"a":1})'
    result = ToolMessage(tool_call_id="1", name="get_order", content="shipped")
    assert message_text(result) == "get_order\nshipped"
    assert count_message(COUNTER, result) == COUNTER.count("get_order\nshipped") + MESSAGE_OVERHEAD
    with pytest.raises(ValueError):
        EstimateCounter(0)


def test_scripted_models_estimate_and_every_model_offers_a_counter():
    model = FunctionModel(lambda m, t: "hi")
    assert isinstance(model.token_counter(), EstimateCounter)


# -- the policy ----------------------------------------------------------------------


def test_everything_fits_nothing_is_dropped():
    messages = conversation(3)
    window = WorkingMemory(max_tokens=10_000).window(messages, counts(messages), COUNTER)
    assert window.messages == messages
    assert window.kept == tuple(range(len(messages))) and window.dropped == ()
    assert window.tokens == sum(counts(messages))


def test_oldest_turns_go_first_and_a_turn_is_kept_or_dropped_whole():
    messages = conversation(5)
    c = counts(messages)
    required = sum(c[:2]) + sum(c[-2:])  # system, question, latest turn
    budget = required + c[-4] + c[-3] + 1  # room for one more turn
    window = WorkingMemory(max_tokens=budget).window(messages, c, COUNTER)
    assert window.kept == (0, 1, 8, 9, 10, 11)
    assert window.dropped == (2, 3, 4, 5, 6, 7)
    assert window.tokens <= budget
    sent_calls = {m.tool_calls[0].id for m in window.messages if m.role == "assistant"}
    sent_results = {m.tool_call_id for m in window.messages if m.role == "tool"}
    assert sent_calls == sent_results  # no result without its call, no call without result


def test_pinned_notes_and_tool_definitions_always_count():
    messages = conversation(2)
    memory = WorkingMemory(max_tokens=10_000, pinned=["The user is a VIP."])
    memory.pin("Answer in French.")
    window = memory.window(messages, counts(messages), COUNTER, tools=[look.definition])
    assert window.messages[1].content.splitlines() == [
        HEADERS["pinned"],
        "- The user is a VIP.",
        "- Answer in French.",
    ]
    assert window.pinned == ("The user is a VIP.", "Answer in French.")
    without_tools = memory.window(messages, counts(messages), COUNTER)
    assert window.tokens > without_tools.tokens  # the schemas take room too


def test_memories_enter_best_first_while_they_fit():
    messages = conversation(1)
    c = counts(messages)
    memories = [
        RecalledMemory("m-low", "prefers email " * 30, 0.2),
        RecalledMemory("m-high", "ships to Lyon", 0.9),
    ]
    roomy = WorkingMemory(max_tokens=10_000).window(messages, c, COUNTER, memories=memories)
    assert roomy.memories == ("m-high", "m-low")
    assert roomy.messages[1].content.startswith(HEADERS["memories"])
    tight = WorkingMemory(max_tokens=sum(c) + 40).window(messages, c, COUNTER, memories=memories)
    assert tight.memories == ("m-high",)


def test_a_summary_replaces_the_dropped_turns_it_covers():
    messages = conversation(5)
    c = counts(messages)
    budget = sum(c[:2]) + sum(c[-4:]) + 30
    window = WorkingMemory(max_tokens=budget).window(
        messages, c, COUNTER, summary="Looked up orders 0-2.", summary_covers=frozenset(range(2, 8))
    )
    assert window.summarized == (2, 3, 4, 5, 6, 7) and window.dropped == ()
    assert window.summary == "Looked up orders 0-2."
    assert any(m.content and m.content.startswith(HEADERS["summary"]) for m in window.messages)


def test_what_cannot_fit_is_a_clear_error_naming_the_parts():
    messages = conversation(1, result="x" * 4000)
    with pytest.raises(ContextOverflowError) as info:
        WorkingMemory(max_tokens=300).window(messages, counts(messages), COUNTER)
    message = str(info.value)
    assert "over the working-memory budget of 300 tokens" in message
    assert "latest turn and tool results" in message and "estimate" in message
    assert info.value.needed > info.value.budget == 300


def test_bad_settings_are_refused():
    with pytest.raises(UserError, match="max_tokens"):
        WorkingMemory(max_tokens=0)
    with pytest.raises(UserError, match="recall"):
        Memory(recall="sometimes")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="long_term"):
        Memory(summarize_sessions=True)


# -- in the run loop ------------------------------------------------------------------


@tool
def look(n: int) -> str:
    """Look something up.

    Args:
        n: which thing
    """
    return f"thing {n}: " + "detail " * 30


def looping_model(calls: int):
    """Calls `look` `calls` times, then answers with how many messages it saw."""
    seen: list[list] = []

    def reply(messages, tools):
        seen.append(list(messages))
        done = sum(1 for m in messages if m.role == "tool")
        if done < calls and len(seen) <= calls:
            n = len(seen)
            return AssistantMessage(
                tool_calls=(ToolCall(id=f"c{n}", name="look", arguments=f'{{"n": {n}}}'),)
            )
        return f"saw {len(messages)} messages"

    return FunctionModel(reply), seen


def test_the_model_gets_the_window_and_the_trace_records_each_step():
    model, seen = looping_model(4)
    recorder = Recorder()
    agent = ReActAgent(
        model, [look], trace=recorder, memory=Memory(working=WorkingMemory(max_tokens=260))
    )
    result = agent.run_sync("Tell me about the things.")
    assert result.status == "completed"
    windows = recorder.of(ContextWindowEvent)
    assert [w.step for w in windows] == [1, 2, 3, 4, 5]
    assert all(w.tokens <= w.budget == 260 for w in windows)
    last = windows[-1]
    assert last.dropped and 0 in last.kept and 1 in last.kept  # system prompt, question
    assert len(seen[-1]) == len(last.kept) < len(result.messages)
    assert result.messages[: len(seen[0])] == seen[0]  # the conversation itself is whole
    model_calls = recorder.of(ModelCallEvent)
    assert [w.id for w in windows] == [m.id for m in model_calls]


def test_dropped_turns_are_summarised_by_a_model_and_recorded():
    model, seen = looping_model(4)
    summaries: list[str] = []

    def summarizer(messages, tools):
        summaries.append(messages[-1].content)
        return f"summary #{len(summaries)}"

    recorder = Recorder()
    working = WorkingMemory(max_tokens=300, summarize=FunctionModel(summarizer, name="sum"))
    agent = ReActAgent(model, [look], trace=recorder, memory=Memory(working=working))
    result = agent.run_sync("Tell me about the things.")
    assert result.status == "completed" and summaries
    windows = recorder.of(ContextWindowEvent)
    # Steps 1-3 fit; step 4 drops turn 1 (summarised) and turn 2 (to make room for the
    # summary); step 5 extends the summary with what it did not cover yet.
    assert [w.summarized for w in windows] == [[], [], [], [2, 3], [2, 3, 4, 5, 6, 7]]
    assert [w.summary for w in windows][3:] == ["summary #1", "summary #2"]
    assert summaries[1].startswith("Summary so far: summary #1")
    assert "look" in summaries[0] and "thing 1" in summaries[0]
    assert [w.summary_input_tokens > 0 for w in windows] == [False, False, False, True, True]
    sent = seen[-1]
    assert any(m.content and m.content.startswith(HEADERS["summary"]) for m in sent)
    finished = recorder.of(RunFinished)[0]
    model_input = sum(e.input_tokens for e in recorder.of(ModelCallEvent))
    summary_input = sum(w.summary_input_tokens for w in windows)
    assert finished.input_tokens == model_input + summary_input  # summaries are paid for


def test_a_step_that_cannot_fit_ends_the_run_with_an_explanation_and_keeps_the_steps():
    @tool
    def dump() -> str:
        """Return a very long text."""
        return "x" * 5000

    replies = iter(
        [AssistantMessage(tool_calls=(ToolCall(id="d", name="dump", arguments="{}"),)), "done"]
    )
    recorder = Recorder()
    agent = ReActAgent(
        FunctionModel(lambda m, t: next(replies)),
        [dump],
        trace=recorder,
        memory=Memory(working=WorkingMemory(max_tokens=400)),
    )
    result = agent.run_sync("Dump it.")
    assert result.status == "failed" and result.steps == 2
    assert "step 2 could not be sent to the model" in result.explanation
    assert "over the working-memory budget of 400 tokens" in result.explanation
    assert "Raise WorkingMemory(max_tokens=...)" in result.explanation
    calls = recorder.of(ModelCallEvent)
    assert [c.status for c in calls] == ["ok", "error"]
    assert calls[1].error.startswith("not sent:")
    assert recorder.of(RunFinished)[0].status == "failed"


@pytest.mark.local_model
@pytest.mark.timeout(120)
def test_the_local_model_counts_with_its_own_tokenizer():
    from agentlab.models.local import LocalModel

    counter = LocalModel().token_counter()
    assert counter.name == "local:smollm2 tokenizer"
    prose = "You are the support assistant of an online shop. Answer briefly."
    data = '{"order_id":"O-1003","status":"shipped","carrier":"DHL","total":129.5}'
    assert 0 < counter.count(prose) < len(prose) / 3  # whole words are single tokens
    assert counter.count(data) > len(data) / 3  # JSON and ids split finely
    hits = counter.count.cache_info().hits
    counter.count(prose)
    assert counter.count.cache_info().hits == hits + 1  # asked again: from the cache


def test_a_summary_model_given_by_name_is_resolved_once():
    from agentlab.models import Model, SchemaModel

    working = WorkingMemory(max_tokens=100, summarize="scripted:schema")
    assert isinstance(working.summarize, SchemaModel) and isinstance(working.summarize, Model)
    assert WorkingMemory(max_tokens=100, summarize=True).summarize is True
