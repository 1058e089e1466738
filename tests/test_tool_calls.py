"""Tool calls as a chain of layers: the defects found by probing the old run loop,
each reproduced first, and the output cap."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence

from agentlab import ReActAgent, tool
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore


def calls_then_answers(*calls: tuple[str, str]) -> FunctionModel:
    """Make each call in turn (one per step), then answer with the last tool result."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done < len(calls):
            name, arguments = calls[done]
            return AssistantMessage(
                tool_calls=(ToolCall(id=f"c{done}", name=name, arguments=arguments),)
            )
        return AssistantMessage(content=f"done: {messages[-1].content[:60]}")

    return FunctionModel(reply)


class Unserialisable:
    pass


def test_a_result_that_cannot_be_serialised_is_a_tool_error_not_a_crash(workspace) -> None:
    @tool
    async def fetch(key: str) -> object:
        """Fetch a thing.

        Args:
            key: Which thing.
        """
        return Unserialisable()

    @tool(timeout=5)
    def fetch_sync(key: str) -> object:
        """Fetch a thing, with a time limit.

        Args:
            key: Which thing.
        """
        return Unserialisable()

    store = TraceStore(workspace)
    for name in ("fetch", "fetch_sync"):
        model = calls_then_answers((name, '{"key": "a"}'))
        result = ReActAgent(model, [fetch, fetch_sync], trace=store).run_sync("get a")
        assert result.ok, result.explanation
        rows = store.sql("select status, result from tool_calls where run_id = ?", [result.run_id])
        assert rows[0][0] == "error"
        assert "returned a value that cannot be sent to the model" in rows[0][1]
        assert store.run(result.run_id)["status"] == "completed"


def test_a_timed_out_sync_tool_is_never_started_twice_for_the_same_call() -> None:
    charges: list[str] = []
    release = threading.Event()

    @tool(timeout=0.1)
    def charge(card: str) -> str:
        """Charge a card once.

        Args:
            card: The card id.
        """
        charges.append(card)
        release.wait(10)
        return "charged"

    @tool
    def instant(x: int) -> int:
        """Return x.

        Args:
            x: A number.
        """
        return x

    same = ("charge", '{"card": "4242"}')
    model = calls_then_answers(same, same, same, ("instant", '{"x": 7}'))
    run = ReActAgent(model, [charge, instant], trace=False, max_retries=5).start("pay")
    try:
        result = run.finish_sync()
    finally:
        release.set()
    assert charges == ["4242"], "one charge for one request"
    statuses = [c.status for s in run.steps for c in s.tool_calls]
    assert statuses == ["timeout", "error", "error", "ok"]
    first, second = (c.result for s in run.steps[:2] for c in s.tool_calls)
    assert "may still be running" in first and "do not call it again" in first
    assert "still running the same call" in second
    assert result.ok and result.output == "done: 7", "an instant tool is not starved"


def test_many_stuck_calls_do_not_exhaust_a_pool_or_block_exit(tmp_path) -> None:
    script = textwrap.dedent(
        """
        import threading, time
        from agentlab import ReActAgent, tool
        from agentlab.messages import AssistantMessage, ToolCall, ToolMessage
        from agentlab.models import FunctionModel

        @tool(timeout=0.05)
        def stuck(n: int) -> int:
            '''Never returns.

            Args:
                n: A number.
            '''
            threading.Event().wait()

        def reply(messages, tools):
            done = sum(isinstance(m, ToolMessage) for m in messages)
            if done < 40:
                return AssistantMessage(tool_calls=(
                    ToolCall(id=f"c{done}", name="stuck", arguments=f'{{"n": {done}}}'),))
            return AssistantMessage(content="gave up")

        agent = ReActAgent(FunctionModel(reply), [stuck], trace=False, max_steps=50,
                           max_retries=100)
        print(agent.run_sync("go").output, flush=True)
        """
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "gave up"
    assert time.monotonic() - started < 20, "exit does not wait for stuck tool threads"


def test_async_tools_are_really_stopped_at_their_timeout() -> None:
    finished: list[int] = []

    @tool(timeout=0.05)
    async def sleepy(n: int) -> int:
        """Sleep, then return n.

        Args:
            n: A number.
        """
        await asyncio.sleep(1)
        finished.append(n)
        return n

    model = calls_then_answers(("sleepy", '{"n": 1}'))
    run = ReActAgent(model, [sleepy], trace=False).start("go")
    run.finish_sync()
    time.sleep(1.2)
    assert finished == []
    assert "was stopped" in run.steps[0].tool_calls[0].result


def test_a_huge_result_is_cut_for_the_model_and_stored_once(workspace) -> None:
    @tool
    def dump(what: str) -> str:
        """Dump everything.

        Args:
            what: What to dump.
        """
        return "x" * 10_000_000

    store = TraceStore(workspace)
    model = calls_then_answers(("dump", '{"what": "all"}'))
    agent = ReActAgent(model, [dump], trace=store, max_tool_result_chars=5_000)
    result = agent.run_sync("dump it")
    seen = next(m for m in result.messages if isinstance(m, ToolMessage)).content
    assert len(seen) < 5_300
    assert "[result cut: the first 5,000 of 10,000,000 characters are shown" in seen
    ((stored,),) = store.sql(
        "select length(result) from tool_calls where run_id = ?", [result.run_id]
    )
    assert stored == 10_000_000
    messages = store.sql(
        "select messages from model_calls where run_id = ? order by step", [result.run_id]
    )
    assert max(len(json.dumps(m[0])) for m in messages) < 20_000, "the whole result once"


def test_a_failing_tool_trips_its_breaker_and_is_not_called_while_open(workspace) -> None:
    from agentlab.resilience import BreakerConfig

    calls: list[str] = []

    @tool
    def flaky(order_id: str) -> str:
        """Ask the flaky order service.

        Args:
            order_id: The order id.
        """
        calls.append(order_id)
        raise ConnectionError("order service down")

    store = TraceStore(workspace)
    model = calls_then_answers(*[("flaky", f'{{"order_id": "O-{i}"}}') for i in range(4)])
    breaker = BreakerConfig(failure_threshold=2, window_s=60, cooldown_s=30)
    agent = ReActAgent(model, [flaky], trace=store, max_retries=10, breaker=breaker)
    run = agent.start("check")
    run.finish_sync()
    assert calls == ["O-0", "O-1"], "not called while its breaker is open"
    third = run.steps[2].tool_calls[0].result
    assert "is unavailable right now" in third and "circuit breaker is open" in third
    rows = store.sql("select breaker, to_state from breaker_transitions")
    assert rows == [("tool:flaky", "open")]
    assert "Last error: " in third and "order service down" in third


def test_corrections_and_bad_results_do_not_trip_the_breaker(workspace) -> None:
    """Only faults count (the tool raised or timed out): a ToolRetry is the tool doing
    its job, and an unserialisable result is a bug in it, not an outage."""
    from agentlab.errors import ToolRetry
    from agentlab.resilience import BreakerConfig

    calls: list[str] = []

    @tool
    def find(order_id: str) -> object:
        """Find an order.

        Args:
            order_id: The order id, like "O-123".
        """
        calls.append(order_id)
        if not order_id.startswith("O-"):
            raise ToolRetry("order ids look like O-123; ask the user for theirs")
        return Unserialisable()

    store = TraceStore(workspace)
    model = calls_then_answers(
        *[("find", f'{{"order_id": "{i}"}}') for i in ("a", "b", "c", "O-1")]
    )
    breaker = BreakerConfig(failure_threshold=2, window_s=60, cooldown_s=30)
    result = ReActAgent(model, [find], trace=store, max_retries=10, breaker=breaker).run_sync("x")
    assert calls == ["a", "b", "c", "O-1"], "every call reached the tool"
    assert "returned a value that cannot be sent" in result.output
    assert store.sql("select count(*) from breaker_transitions") == [(0,)]
