"""Tool fallbacks: when a call fails for good (raised, timed out, breaker open), an
alternative tool or a simpler request serves it; the outcome and the trace say
which tool served and what failed first."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from agentlab import Fallback, ReActAgent, simpler, tool
from agentlab.errors import ApprovalRequired, UserError
from agentlab.events import ToolCallEvent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.resilience import BreakerConfig
from agentlab.tools import Tool
from agentlab.tools.calls import ToolInvocation, ToolOutcome
from agentlab.tracing import TraceStore


def answer_with_tool_result(name: str, arguments: str) -> FunctionModel:
    """Call `name` once, then answer with what the tool returned."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            return AssistantMessage(tool_calls=(ToolCall(id="c1", name=name, arguments=arguments),))
        return AssistantMessage(content=f"Answer: {results[-1].content}")

    return FunctionModel(reply)


def make_agent(tools: Sequence[Tool], **options) -> ReActAgent:
    options.setdefault("trace", False)
    return ReActAgent(answer_with_tool_result("unused", "{}"), tools, **options)


async def call(agent: ReActAgent, name: str, arguments: dict | str) -> ToolOutcome:
    """One call through the tool's whole chain, as the run loop makes it (no run)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    invocation = ToolInvocation(
        agent.tools_by_name[name], ToolCall(id="c1", name=name, arguments=text), 1, "run-1-c1"
    )
    return await agent.tool_handlers[name](invocation)


@tool
def search_mirror(query: str, limit: int = 10) -> str:
    """Search the mirror index.

    Args:
        query: What to look for.
        limit: At most this many results.
    """
    return f"mirror: {limit} results for {query}"


def main_search(behaviour: Callable[[str, int], str], **options: Any) -> Tool:
    """A ``search(query, limit=10)`` tool over the main index that does `behaviour`,
    declared with tool `options` (its fallbacks, above all)."""

    def search(query: str, limit: int = 10) -> str:
        return behaviour(query, limit)

    search.__doc__ = """Search the main index.

    Args:
        query: What to look for.
        limit: At most this many results.
    """
    return tool(**options)(search)


# -- an alternative tool -----------------------------------------------------------


async def test_an_alternative_tool_serves_when_the_primary_raises() -> None:
    def behaviour(query: str, limit: int) -> str:
        raise ConnectionError("index down")

    search = main_search(behaviour, fallback=[search_mirror])

    outcome = await call(make_agent([search]), "search", {"query": "cats", "limit": 3})
    assert outcome.status == "ok"
    assert outcome.content == "mirror: 3 results for cats"  # the same validated arguments
    assert outcome.served_by == "search_mirror"
    assert outcome.fallback is not None and len(outcome.fallback) == 1
    failed = outcome.fallback[0]
    assert failed["tool"] == "search" and failed["status"] == "error"
    assert "ConnectionError: index down" in failed["error"]


async def test_an_alternative_serves_when_the_primary_times_out() -> None:
    @tool(timeout=0.05, fallback=[search_mirror])
    async def search(query: str, limit: int = 10) -> str:
        """Search the main index.

        Args:
            query: What to look for.
            limit: At most this many results.
        """
        await asyncio.sleep(5)
        return "too late"

    t0 = time.perf_counter()
    outcome = await call(make_agent([search]), "search", {"query": "cats"})
    assert time.perf_counter() - t0 < 2
    assert outcome.status == "ok" and outcome.content == "mirror: 10 results for cats"
    assert outcome.served_by == "search_mirror"
    assert outcome.fallback is not None
    assert [(t["tool"], t["status"]) for t in outcome.fallback] == [("search", "timeout")]


async def test_an_open_breaker_sends_calls_to_the_alternative_not_the_primary() -> None:
    calls: list[str] = []

    def behaviour(query: str, limit: int) -> str:
        calls.append(query)
        raise ConnectionError("index down")

    search = main_search(behaviour, fallback=[search_mirror])

    agent = make_agent([search], breaker=BreakerConfig(failure_threshold=2, cooldown_s=600))
    for query in ("a", "b"):  # two failures open the breaker; the mirror serves both
        assert (await call(agent, "search", {"query": query})).served_by == "search_mirror"
    assert calls == ["a", "b"]

    outcome = await call(agent, "search", {"query": "c"})
    assert calls == ["a", "b"], "the primary is not called while its breaker is open"
    assert outcome.status == "ok" and outcome.content == "mirror: 10 results for c"
    assert outcome.served_by == "search_mirror"
    assert outcome.fallback is not None
    assert "circuit breaker is open" in outcome.fallback[0]["error"]


async def test_a_tool_that_succeeds_records_itself_as_served_by_and_no_failed_tries() -> None:
    def behaviour(query: str, limit: int) -> str:
        return "main"

    search = main_search(behaviour, fallback=[search_mirror])

    outcome = await call(make_agent([search]), "search", {"query": "x"})
    assert (outcome.status, outcome.content, outcome.served_by) == ("ok", "main", "search")
    assert outcome.fallback is None


# -- a simpler request -------------------------------------------------------------


async def test_a_simpler_request_serves_when_the_full_one_fails() -> None:
    seen: list[int] = []

    def behaviour(query: str, limit: int) -> str:
        seen.append(limit)
        if limit > 5:
            raise RuntimeError("the index gave up on a large request")
        return f"{limit} results for {query}"

    search = main_search(behaviour, fallback=[simpler(lambda args: {**args, "limit": 5})])

    outcome = await call(make_agent([search]), "search", {"query": "cats", "limit": 50})
    assert seen == [50, 5]
    assert outcome.status == "ok" and outcome.served_by == "search"
    assert outcome.content.startswith("5 results for cats")
    assert "simpler request" in outcome.content and '"limit":5' in outcome.content
    assert outcome.fallback is not None and outcome.fallback[0]["tool"] == "search"


async def test_an_other_tool_with_an_adapted_request_serves() -> None:
    @tool
    def lookup(q: str) -> str:
        """Look something up in the cache.

        Args:
            q: The key.
        """
        return f"cached {q}"

    def behaviour(query: str, limit: int) -> str:
        raise ConnectionError("index down")

    search = main_search(
        behaviour,
        fallback=[Fallback(lookup, adapt=lambda args: {"q": args["query"]}), search_mirror],
    )

    outcome = await call(make_agent([search]), "search", {"query": "cats"})
    assert outcome.served_by == "lookup" and outcome.content.startswith("cached cats")


# -- what goes back to the model -----------------------------------------------------


async def test_when_every_try_fails_the_model_gets_one_error_naming_each() -> None:
    @tool(timeout=0.05)
    async def search_mirror_slow(query: str, limit: int = 10) -> str:
        """Search the slow mirror.

        Args:
            query: What to look for.
            limit: At most this many results.
        """
        await asyncio.sleep(5)
        return "too late"

    def behaviour(query: str, limit: int) -> str:
        raise ConnectionError(f"index down (limit {limit})")

    search = main_search(
        behaviour, fallback=[search_mirror_slow, simpler(lambda args: {**args, "limit": 1})]
    )

    outcome = await call(make_agent([search]), "search", {"query": "cats"})
    assert outcome.status == "error" and outcome.served_by is None
    assert outcome.fallback is not None
    assert [(t["tool"], t["status"]) for t in outcome.fallback] == [
        ("search", "error"),
        ("search_mirror_slow", "timeout"),
        ("search (simpler request)", "error"),
    ]
    text = outcome.content
    assert "Tool 'search' failed, and so did each of its 2 fallbacks" in text
    assert "1. search (error): " in text and "index down (limit 10)" in text
    assert "2. search_mirror_slow (timeout): " in text
    assert '3. search (simpler request) with {"query":"cats","limit":1} (error)' in text
    assert "index down (limit 1)" in text


async def test_invalid_arguments_go_back_to_the_model_without_trying_fallbacks() -> None:
    mirror_calls: list[str] = []

    @tool
    def mirror(query: str, limit: int = 10) -> str:
        """Search the mirror index.

        Args:
            query: What to look for.
            limit: At most this many results.
        """
        mirror_calls.append(query)
        return "mirror"

    def behaviour(query: str, limit: int) -> str:
        raise AssertionError("never called with invalid arguments")

    search = main_search(behaviour, fallback=[mirror])

    agent = make_agent([search])
    outcome = await call(agent, "search", {"query": "cats", "limit": "many"})
    assert outcome.status == "invalid_arguments" and "Invalid arguments for tool 'search'" in (
        outcome.content
    )
    assert outcome.served_by is None and outcome.fallback is None and mirror_calls == []
    outcome = await call(agent, "search", "{not json")
    assert outcome.status == "invalid_arguments" and mirror_calls == []


# -- approval ------------------------------------------------------------------------


@tool(requires_approval=True)
def refund_by_hand(order_id: str) -> str:
    """Ask a clerk to refund an order (a person approves it first).

    Args:
        order_id: The order id.
    """
    return f"a clerk refunds {order_id}"


@tool(fallback=[refund_by_hand])
def refund(order_id: str) -> str:
    """Refund an order through the payment API.

    Args:
        order_id: The order id.
    """
    raise ConnectionError("payment API down")


async def test_an_alternative_that_needs_approval_pauses_before_it_runs() -> None:
    with pytest.raises(ApprovalRequired) as paused:
        await call(make_agent([refund]), "refund", {"order_id": "O-1"})
    assert paused.value.tool == "refund_by_hand"
    assert json.loads(paused.value.arguments) == {"order_id": "O-1"}
    assert paused.value.key == "run-1-c1-fallback-1"  # its own approval (and idempotency) key


def test_an_approved_alternative_serves_the_call_when_the_run_resumes() -> None:
    agent = ReActAgent(
        answer_with_tool_result("refund", '{"order_id": "O-1"}'), [refund], trace=False
    )
    run = agent.start("Refund O-1")
    result = run.finish_sync()
    assert result.status == "paused" and result.pending is not None
    assert result.pending["tool"] == "refund_by_hand"
    assert "Approve the call to 'refund_by_hand'" in result.pending["question"]
    done = run.resume_sync(approve=True)
    assert done.ok and done.output == "Answer: a clerk refunds O-1"


def test_a_declined_alternative_is_not_made_and_the_model_is_told() -> None:
    agent = ReActAgent(
        answer_with_tool_result("refund", '{"order_id": "O-1"}'), [refund], trace=False
    )
    run = agent.start("Refund O-1")
    run.finish_sync()
    done = run.resume_sync(approve=False, note="not today")
    assert done.ok and "A person declined this call to 'refund_by_hand'" in str(done.output)
    assert run.steps[-2].tool_calls[-1].status == "denied"


# -- declaration ---------------------------------------------------------------------


def test_an_alternative_whose_parameters_do_not_match_fails_at_declaration() -> None:
    @tool
    def lookup(q: str, region: str, limit: str = "10") -> str:
        """Look something up.

        Args:
            q: The key.
            region: Where.
            limit: How many.
        """
        return q

    with pytest.raises(UserError) as error:

        @tool(fallback=[lookup])
        def search(query: str, limit: int = 10) -> str:
            """Search the main index.

            Args:
                query: What to look for.
                limit: At most this many results.
            """
            return query

    message = str(error.value)
    assert "fallback 'lookup' cannot take its arguments" in message
    assert "it has no parameter 'query'" in message
    assert "its 'limit' is str, not int" in message
    assert "it requires 'region'" in message
    assert "Fallback(lookup, adapt=" in message  # how to fix it


def test_compatible_parameters_and_bad_entries_at_declaration() -> None:
    @tool
    def wider(query: str | None = None, limit: float = 1.0, extra: bool = False) -> str:
        """Accepts more than search sends.

        Args:
            query: What to look for.
            limit: At most this many.
            extra: An optional flag.
        """
        return "ok"

    def search(query: str, limit: int = 10) -> str:
        """Search the main index.

        Args:
            query: What to look for.
            limit: At most this many results.
        """
        return query

    assert Tool(search, fallback=[wider]).fallback[0].tool is wider
    own = Tool(search, fallback=[simpler(lambda a: a)])
    assert own.fallback[0].tool is own  # simpler(): the tool itself
    with pytest.raises(UserError, match="cannot be its own fallback"):
        Tool(search, fallback=[Fallback()])
    with pytest.raises(UserError, match=r"fallback entry .* is not understood"):
        Tool(search, fallback=[lambda args: args])  # type: ignore[list-item]
    with pytest.raises(UserError, match="must be a function"):
        Tool(search, fallback=[Fallback(wider, adapt=42)])  # type: ignore[arg-type]


# -- a whole run, and the trace ------------------------------------------------------


def test_a_run_whose_primary_fails_gets_the_fallbacks_result_and_the_trace_says_so(
    workspace,
) -> None:
    def behaviour(query: str, limit: int) -> str:
        raise ConnectionError("index down")

    search = main_search(behaviour, fallback=[search_mirror])

    store = TraceStore(workspace)
    model = answer_with_tool_result("search", '{"query": "cats"}')
    result = ReActAgent(model, [search], trace=store).run_sync("find cats")
    assert result.ok and result.output == "Answer: mirror: 10 results for cats"
    rows = store.sql(
        "select tool, status, result, served_by, fallback from tool_calls where run_id = ?",
        [result.run_id],
    )
    [(tool_name, status, stored, served_by, fallback)] = rows
    assert (tool_name, status, stored) == ("search", "ok", "mirror: 10 results for cats")
    assert served_by == "search_mirror"
    [failed] = json.loads(fallback)
    assert failed["tool"] == "search" and failed["status"] == "error"
    assert "index down" in failed["error"]


def test_the_trace_store_keeps_served_by_and_fallback_columns(workspace) -> None:
    """The ingest mapping (migration 6) on its own, from a tool_call event."""
    store = TraceStore(workspace)
    writer = store.writer()
    tries = [{"tool": "search", "status": "timeout", "error": "took too long"}]
    for i, (served_by, fallback) in enumerate([("search_mirror", tries), (None, None)]):
        writer.emit(
            ToolCallEvent(
                id=f"r-1-{i}",
                run_id="r",
                step=1,
                tool="search",
                arguments="{}",
                result="ok",
                latency_ms=1.0,
                started_at=time.time(),
                served_by=served_by,
                fallback=fallback,
            )
        )
    writer.flush()
    rows = store.sql("select served_by, fallback from tool_calls where run_id = 'r' order by id")
    assert rows[0][0] == "search_mirror" and json.loads(rows[0][1]) == tries
    assert rows[1] == (None, None)
