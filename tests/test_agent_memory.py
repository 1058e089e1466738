"""Agents using memory: the tool-result cache, traced short-term access, sessions."""

from __future__ import annotations

import re
import time

import pytest
from _recorder import Recorder

from agentlab._context import current_run
from agentlab.agents import ReActAgent
from agentlab.errors import UserError
from agentlab.events import (
    ContextWindowEvent,
    MemoryOpEvent,
    MemoryRetrievalEvent,
    ModelCallEvent,
    RunFinished,
    RunStarted,
    ToolCallEvent,
)
from agentlab.memory.agent_memory import Memory
from agentlab.memory.short_term import EmbeddedStore
from agentlab.messages import AssistantMessage, ToolCall
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore


def calling(*calls: tuple[str, str]):
    """A model that makes `calls` (name, JSON arguments) one per step, then answers."""

    def reply(messages, tools):
        made = sum(1 for m in messages if m.role == "tool")
        if made < len(calls):
            name, arguments = calls[made]
            return AssistantMessage(
                tool_calls=(ToolCall(id=f"c{made}", name=name, arguments=arguments),)
            )
        return "done: " + " | ".join(m.content for m in messages if m.role == "tool")

    return FunctionModel(reply)


def weather_tool(ttl: float = 60.0):
    executions: list[str] = []

    @tool(cache_ttl=ttl, cost=0.002)
    def weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: the city's name
        """
        executions.append(city)
        return f"sunny in {city} (call {len(executions)})"

    return weather, executions


@pytest.fixture
def store(tmp_path):
    with EmbeddedStore(tmp_path / "kv.sqlite3") as s:
        yield s


def test_a_second_call_with_the_same_arguments_is_served_from_the_cache(store):
    weather, executions = weather_tool()
    recorder = Recorder()
    agent = ReActAgent(
        calling(
            ("weather", '{"city": "Lyon"}'),
            ("weather", '{"city":"Lyon"}'),  # same validated arguments, other JSON text
            ("weather", '{"city": "Nice"}'),
        ),
        [weather],
        trace=recorder,
        memory=Memory(short_term=store),
    )
    result = agent.run_sync("weather?", session="s1")
    assert executions == ["Lyon", "Nice"]
    assert result.output == (
        "done: sunny in Lyon (call 1) | sunny in Lyon (call 1) | sunny in Nice (call 2)"
    )
    calls = recorder.of(ToolCallEvent)
    assert [c.cache for c in calls] == ["miss", "hit", "miss"]
    cache_ops = [
        (o.step, o.op, o.hit) for o in recorder.of(MemoryOpEvent) if o.key.startswith("tool-cache/")
    ]  # the cache is short-term memory: its reads and writes are traced like any key's
    assert cache_ops == [
        (1, "get", False),
        (1, "set", None),
        (2, "get", True),
        (3, "get", False),
        (3, "set", None),
    ]
    hit = calls[1]
    assert hit.saved_cost == 0.002 and hit.saved_latency_ms is not None
    assert [c.saved_cost for c in calls if c.cache == "miss"] == [None, None]
    # The same session in a later run is served from the cache; another session is not.
    agent.run_sync("again", session="s1")
    agent.run_sync("elsewhere", session="s2")
    assert executions == ["Lyon", "Nice", "Lyon", "Nice"]


def test_failed_calls_are_not_cached_and_expired_results_are_not_served(store):
    attempts: list[int] = []

    @tool(cache_ttl=60)
    def flaky(n: int) -> str:
        """Fails the first time.

        Args:
            n: a number
        """
        attempts.append(n)
        if len(attempts) == 1:
            raise RuntimeError("temporarily down")
        return f"ok {n}"

    agent = ReActAgent(
        calling(("flaky", '{"n": 1}'), ("flaky", '{"n": 1}'), ("flaky", '{"n": 1}')),
        [flaky],
        trace=False,
        memory=Memory(short_term=store),
    )
    agent.run_sync("go")
    assert attempts == [1, 1]  # the error was retried, the success then served

    weather, executions = weather_tool(ttl=0.05)
    agent = ReActAgent(
        calling(("weather", '{"city": "Lyon"}')),
        [weather],
        trace=False,
        memory=Memory(short_term=store),
    )
    agent.run_sync("a", session="same")
    time.sleep(0.1)
    agent.run_sync("b", session="same")
    assert executions == ["Lyon", "Lyon"]


def test_cacheable_tools_without_a_store_use_the_workspace(workspace):
    weather, executions = weather_tool()
    agent = ReActAgent(
        calling(("weather", '{"city": "Lyon"}')), [weather], trace=TraceStore(workspace)
    )
    agent.run_sync("a", session="x")
    agent.run_sync("b", session="x")
    assert executions == ["Lyon"]
    assert (workspace / "memory" / "short_term.sqlite3").is_file()
    rows = TraceStore(workspace).sql("SELECT cache, saved_cost FROM tool_calls ORDER BY started_at")
    assert rows == [("miss", None), ("hit", 0.002)]
    sessions = TraceStore(workspace).sql("SELECT DISTINCT session FROM runs")
    assert sessions == [("x",)]


def test_tools_use_the_session_memory_and_every_access_is_traced(store):
    @tool
    def add_to_cart(item: str) -> str:
        """Add an item to the cart.

        Args:
            item: the item's name
        """
        memory = current_run().short_term
        cart = memory.get("cart", list[str], default=[])
        memory.set("cart", [*cart, item], ttl=3600)
        return f"cart: {', '.join([*cart, item])}"

    recorder = Recorder()
    agent = ReActAgent(
        calling(("add_to_cart", '{"item": "mug"}'), ("add_to_cart", '{"item": "pen"}')),
        [add_to_cart],
        trace=recorder,
        memory=Memory(short_term=store),
    )
    result = agent.run_sync("buy", session="s-7", user="ann")
    assert result.output == "done: cart: mug | cart: mug, pen"
    ops = recorder.of(MemoryOpEvent)
    assert [(o.op, o.key, o.hit, o.step) for o in ops] == [
        ("get", "cart", False, 1),
        ("set", "cart", None, 1),
        ("get", "cart", True, 2),
        ("set", "cart", None, 2),
    ]
    assert {o.namespace for o in ops} == {"agent/s-7"} and ops[1].ttl == 3600
    started = recorder.of(RunStarted)[0]
    assert (started.session, started.user) == ("s-7", "ann")
    assert store.session("agent", "s-7").get("cart") == ["mug", "pen"]


def test_short_term_outside_a_run_or_without_a_store_is_a_clear_error():
    with pytest.raises(UserError, match="only available inside a tool"):
        current_run()

    @tool
    def peek() -> str:
        """Peek at the session memory."""
        return str(current_run().short_term.keys())

    agent = ReActAgent(calling(("peek", "{}")), [peek], trace=False)
    result = agent.run_sync("peek")
    assert "has no short-term memory" in result.output


# -- long-term memory -------------------------------------------------------------------


@pytest.fixture
def long_term(tmp_path):
    from agentlab.memory.long_term import LongTermMemory

    memory = LongTermMemory(tmp_path / "ltm", embedder="hash")
    memory.add("Ann prefers DHL for every delivery", kind="preference", user="ann")
    memory.add("Bob wants invoices by post", kind="preference", user="bob")
    memory.add("Orders ship from the Lyon warehouse within two days", kind="knowledge")
    return memory


def echo_context():
    """Answers with the system messages it was sent (what entered working memory)."""
    seen: list[list] = []

    def reply(messages, tools):
        seen.append(list(messages))
        return " || ".join(m.content for m in messages if m.role == "system")

    return FunctionModel(reply), seen


def test_relevant_memories_enter_working_memory_and_the_retrieval_is_traced(long_term):
    model, _ = echo_context()
    recorder = Recorder()
    agent = ReActAgent(
        model,
        trace=recorder,
        memory=Memory(long_term=long_term, recall_k=2, recall_mode="fulltext"),
    )
    result = agent.run_sync("Which delivery company do I prefer?", user="ann")
    assert "Ann prefers DHL for every delivery" in result.output
    assert "Bob" not in result.output  # recall is filtered by the run's user
    [retrieval] = recorder.of(MemoryRetrievalEvent)
    assert retrieval.source == "auto" and retrieval.mode == "fulltext"
    assert retrieval.query == "Which delivery company do I prefer?"
    assert retrieval.filters == {"user": "ann"}
    assert retrieval.hits and retrieval.hits[0]["text"] == "Ann prefers DHL for every delivery"
    assert all("score" in h for h in retrieval.hits)
    assert retrieval.entered == [h["id"] for h in retrieval.hits]


def test_memories_that_do_not_fit_are_traced_as_retrieved_but_not_entered(long_term):
    from agentlab.memory.working import WorkingMemory

    long_term.add("Ann " + "likes long stories " * 40, kind="note", user="ann")
    model, _ = echo_context()
    recorder = Recorder()
    agent = ReActAgent(
        model,
        trace=recorder,
        memory=Memory(
            long_term=long_term,
            working=WorkingMemory(max_tokens=150),
            recall_k=5,
            recall_mode="fulltext",
            remember_tool=False,
        ),
    )
    result = agent.run_sync("Ann delivery stories", user="ann")
    [retrieval] = recorder.of(MemoryRetrievalEvent)
    [window] = recorder.of(ContextWindowEvent)
    assert len(retrieval.hits) == 2 and len(retrieval.entered) == 1
    assert window.memories == retrieval.entered and window.tokens <= 150
    assert "Ann prefers DHL" in result.output and "long stories" not in result.output

    # A step that cannot be sent at all still records what was retrieved.
    recorder = Recorder()
    agent.memory.working.max_tokens = 50
    agent.trace, agent._tracer_resolved = recorder, False
    result = agent.run_sync("Ann delivery stories, again", user="ann")
    assert result.status == "failed" and "over the working-memory budget" in result.explanation
    [retrieval] = recorder.of(MemoryRetrievalEvent)
    assert len(retrieval.hits) == 2 and retrieval.entered == []


def test_the_model_can_recall_and_remember_with_tools(long_term):
    recorder = Recorder()
    agent = ReActAgent(
        calling(
            ("recall", '{"query": "warehouse shipping", "kind": "knowledge"}'),
            ("remember", '{"text": "Ann moved to Nice", "kind": "knowledge"}'),
        ),
        trace=recorder,
        memory=Memory(long_term=long_term, recall="tool", recall_mode="fulltext"),
    )
    assert agent.tool_names == ["recall", "remember"]
    result = agent.run_sync("Where do orders ship from?", user="ann", session="s1")
    assert "Lyon warehouse" in result.output and "Saved to long-term memory as" in result.output
    [retrieval] = recorder.of(MemoryRetrievalEvent)
    assert retrieval.source == "tool" and retrieval.filters == {"user": "ann", "kind": "knowledge"}
    [write] = recorder.of(MemoryOpEvent)
    assert (write.tier, write.op, write.detail, write.step) == (
        "long_term",
        "add",
        "Ann moved to Nice",
        2,
    )
    [stored] = long_term.search("Nice", mode="fulltext", user="ann", session="s1")
    assert stored.id == write.key and stored.source == f"run:{result.run_id}"


def test_a_finished_session_is_summarised_into_long_term_memory(long_term):
    def reply(messages, tools):
        if messages[0].content.startswith("You write the memory"):
            return "Ann asked about her order O-7; it is shipped."
        return "It is shipped."

    recorder = Recorder()
    agent = ReActAgent(
        FunctionModel(reply),
        trace=recorder,
        memory=Memory(long_term=long_term, recall="off", summarize_sessions=True),
    )
    agent.run_sync("Where is order O-7?", user="ann", session="s9")
    [write] = recorder.of(MemoryOpEvent)
    assert (write.namespace, write.detail) == (
        "history",
        "Ann asked about her order O-7; it is shipped.",
    )
    [hit] = long_term.search("order O-7", mode="fulltext", kind="history", user="ann")
    assert hit.session == "s9"
    finished = recorder.of(RunFinished)[0]
    assert finished.input_tokens > sum(e.input_tokens for e in recorder.of(ModelCallEvent))


# -- the memory inspector ----------------------------------------------------------------


def test_the_memory_inspector_shows_window_retrievals_and_keys(workspace, long_term, store):
    pytest.importorskip("ipywidgets")
    from agentlab.memory.working import WorkingMemory
    from agentlab.tracing.memory_view import step_memory
    from agentlab.ui import MemoryInspector

    @tool
    def note(text: str) -> str:
        """Keep a note in the session.

        Args:
            text: the note
        """
        current_run().short_term.set("last-note", text, ttl=60)
        return "noted " + "with many details " * 20

    replies = iter(
        [
            *(
                AssistantMessage(
                    tool_calls=(ToolCall(id=t, name="note", arguments=f'{{"text": "{t}"}}'),)
                )
                for t in "abc"
            ),
            "done",
        ]
    )  # the model sees only the window, so it cannot count the calls it made itself
    traces = TraceStore(workspace)
    agent = ReActAgent(
        FunctionModel(lambda messages, tools: next(replies)),
        [note],
        trace=traces,
        memory=Memory(
            working=WorkingMemory(max_tokens=480, pinned=["Be brief."]),
            short_term=store,
            long_term=long_term,
            recall_mode="fulltext",
        ),
    )
    result = agent.run_sync("Ann delivery?", user="ann")
    assert result.status == "completed", result.explanation
    last = step_memory(traces, result.run_id, result.steps)
    assert last.window is not None and last.window["dropped"]
    assert [i for i, _, how in last.left_out()] == last.window["dropped"]

    inspector = MemoryInspector(result.run_id, traces)
    assert inspector.step_selector.options == tuple(range(1, result.steps + 1))
    assert inspector.memory.step == 1, "it opens at the step that searched memory"
    assert "Retrieved (auto, fulltext" in inspector.retrievals_view.value
    inspector.step_selector.value = result.steps
    html = inspector.window_view.value
    assert f"Working memory at step {result.steps}" in html and "Be brief." in html
    assert "Ann prefers DHL" in html  # the recalled memory, entered every step
    assert "dropped" in inspector.left_out_view.value
    assert inspector.retrievals_view.value == ""  # retrieval happened at step 1
    inspector.step_selector.value = 1
    assert inspector.memory.step == 1
    assert "entered" in inspector.retrievals_view.value
    assert inspector.left_out_view.value == ""
    inspector.step_selector.value = 2
    keys = inspector.keys_view.value
    assert "last-note" in keys and "60 s" in keys and "set" in keys
    with pytest.raises(UserError, match="has no step 9"):
        step_memory(traces, result.run_id, 9)


def test_an_agent_name_with_a_slash_keeps_its_own_namespace(store):
    @tool
    def remember_me() -> str:
        """Store a flag in the session."""
        current_run().short_term.set("flag", True)
        return current_run().short_term.namespace

    agent = ReActAgent(
        calling(("remember_me", "{}")),
        [remember_me],
        name="support/v2",
        trace=False,
        memory=Memory(short_term=store),
    )
    result = agent.run_sync("go", session="s")
    assert result.output == "done: support%2Fv2/s"
    assert store.session("support", "v2/s").keys() == []


def test_a_failing_long_term_store_ends_the_run_with_an_explanation(tmp_path):
    from agentlab.errors import MemoryStoreError
    from agentlab.memory.long_term import LongTermMemory

    class Unreachable(LongTermMemory):  # the store is not what this test is about
        def search(self, query, **filters):
            raise MemoryStoreError("long-term memory at /mnt/gone: cannot be read")

    broken = Unreachable(tmp_path / "ltm", embedder="hash")
    recorder = Recorder()
    agent = ReActAgent(
        FunctionModel(lambda m, t: "never asked"),
        trace=recorder,
        memory=Memory(long_term=broken),
    )
    result = agent.run_sync("anything I said before?")
    assert result.status == "failed" and result.output is None
    assert "long-term memory at /mnt/gone: cannot be read" in result.explanation
    assert "Memory(recall='tool')" in result.explanation
    [call] = recorder.of(ModelCallEvent)
    assert call.status == "error" and call.error.startswith("not sent:")


def test_the_memory_inspector_shows_what_each_mode_scored_a_hybrid_hit(workspace, long_term):
    pytest.importorskip("ipywidgets")
    from agentlab.ui import MemoryInspector

    traces = TraceStore(workspace)
    agent = ReActAgent(
        FunctionModel(lambda messages, tools: "DHL"),
        trace=traces,
        memory=Memory(long_term=long_term, recall_k=2, recall_mode="hybrid"),
    )
    result = agent.run_sync("Which delivery company does Ann prefer?", user="ann")
    retrievals = MemoryInspector(result.run_id, traces).retrievals_view.value
    assert "Retrieved (auto, hybrid" in retrievals
    assert re.search(r"semantic -?\d\.\d{3} · fulltext (\d\.\d{3}|—)", retrievals), retrievals
