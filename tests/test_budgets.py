"""Budgets: checked before each request (so the one that would cross a limit is
never sent) and after it (real usage); set per agent, overridden per run."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from agentlab import Budget, Price, PriceTable, ReActAgent, tool
from agentlab.budgets import BudgetTracker
from agentlab.errors import BudgetExceededError, UserError
from agentlab.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from agentlab.models import FunctionModel, ModelResponse, ModelSettings
from agentlab.tokens import (
    MESSAGE_OVERHEAD,
    EstimateCounter,
    count_message,
    message_text,
    message_text_length,
)
from agentlab.usage import Usage


@tool
def ping(n: int) -> int:
    """Answer a ping.

    Args:
        n: The ping number.
    """
    return n


class Counting:
    """A scripted model that keeps calling ``ping`` and counts what it was sent."""

    def __init__(self) -> None:
        self.requests = 0
        self.max_tokens: list[int | None] = []

    def model(self, *, name: str = "counting") -> FunctionModel:
        def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
            self.requests += 1
            n = self.requests
            return AssistantMessage(
                tool_calls=(ToolCall(id=f"c{n}", name="ping", arguments=f'{{"n": {n}}}'),)
            )

        counting = self

        class Recording(FunctionModel):
            async def request(
                self,
                messages: Sequence[Message],
                tools: Sequence[ToolDefinition] = (),
                settings: ModelSettings | None = None,
            ) -> ModelResponse:
                counting.max_tokens.append(settings.max_tokens if settings else None)
                return await super().request(messages, tools, settings)

        return Recording(reply, name=name)


def test_the_request_that_would_cross_the_token_budget_is_never_sent() -> None:
    counting = Counting()
    agent = ReActAgent(
        counting.model(), [ping], trace=False, max_steps=50, budget=Budget(tokens=400)
    )
    result = agent.run_sync("Ping until told to stop.")
    assert result.status == "budget_exceeded"
    assert result.usage.total_tokens <= 400
    assert result.failure["kind"] == "budget"
    assert "400-token budget" in result.explanation
    assert "raise Budget(tokens=...)" in result.explanation
    failed = result.failure["tried"]["steps"][-1]
    assert failed["attempts"][-1]["status"] == "skipped", "the last request was not sent"
    assert counting.requests == result.steps - 1
    assert all(m is not None for m in counting.max_tokens), "max output capped to what is left"


def test_a_cost_budget_needs_prices_and_stops_before_overspending() -> None:
    counting = Counting()
    with pytest.raises(UserError, match="has no price"):
        ReActAgent(
            counting.model(name="pricey"),
            [ping],
            trace=False,
            prices=PriceTable({}, include_defaults=False),
            budget=Budget(cost=0.01),
        )
    prices = PriceTable({"scripted:pricey": Price(1000.0, 1000.0)})
    agent = ReActAgent(
        counting.model(name="pricey"),
        [ping],
        trace=False,
        prices=prices,
        max_steps=50,
        settings=ModelSettings(max_tokens=20),
        budget=Budget(cost=0.5),
    )
    result = agent.run_sync("Ping until told to stop.")
    assert result.status == "budget_exceeded"
    assert result.cost is not None and result.cost <= 0.5
    assert "could cost up to $" in result.explanation
    assert result.failure["tried"]["budget_spent"]["cost"] == pytest.approx(result.cost)


def test_model_call_tool_call_and_step_budgets(workspace) -> None:
    counting = Counting()
    agent = ReActAgent(counting.model(), [ping], trace=False, max_steps=50)
    result = agent.run_sync("go", budget=Budget(model_calls=3))
    assert result.status == "budget_exceeded" and counting.requests == 3
    assert "budget of 3 model calls is used up" in result.explanation

    result = agent.run_sync("go", budget=Budget(tool_calls=2))
    assert result.status == "budget_exceeded"
    assert [c for c in result.tools_called] == ["ping", "ping"]
    assert "budget of 2 tool calls is used up before calling 'ping'" in result.explanation

    result = agent.run_sync("go", budget=Budget(steps=4))
    assert result.status == "max_steps" and result.steps == 4


def test_the_wall_time_budget_ends_a_slow_run() -> None:
    import time

    @tool
    def slow(n: int) -> int:
        """Wait a little.

        Args:
            n: A number.
        """
        time.sleep(0.05)
        return n

    def calls_slow(
        messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AssistantMessage:
        return AssistantMessage(tool_calls=(ToolCall(id="c", name="slow", arguments='{"n": 1}'),))

    agent = ReActAgent(FunctionModel(calls_slow), [slow], trace=False, max_steps=1000)
    started = time.monotonic()
    result = agent.run_sync("go", budget=Budget(wall_time=0.3))
    assert time.monotonic() - started < 1.5
    assert result.status == "budget_exceeded"
    assert "wall-time budget of 0.3 s is spent" in result.explanation


def test_real_usage_over_the_budget_ends_the_run_after_the_request() -> None:
    class Overspends(FunctionModel):
        async def request(self, messages, tools=(), settings=None):  # type: ignore[no-untyped-def]
            response = await super().request(messages, tools, settings)
            response.usage = Usage(input_tokens=10, output_tokens=5_000, requests=1)
            return response

    model = Overspends(lambda m, t: "a very long answer", name="over")
    result = ReActAgent(model, trace=False, budget=Budget(tokens=1000)).run_sync("hi")
    assert result.status == "budget_exceeded"
    assert result.output == "a very long answer", "what was paid for is kept"
    assert "over its 1,000-token budget" in result.explanation


def test_budgets_are_checked_when_they_are_made() -> None:
    with pytest.raises(UserError, match=r"Budget\(tokens=0\): a limit must be positive"):
        Budget(tokens=0)
    assert Budget(tokens=10, cost=1.0).merged(Budget(cost=2.0)) == Budget(tokens=10, cost=2.0)


@pytest.mark.parametrize(
    "message",
    [
        SystemMessage(content="You are terse."),
        UserMessage(content=""),
        UserMessage(content="héllo wörld ✓"),
        AssistantMessage(content="The answer is 4."),
        AssistantMessage(content=None),
        AssistantMessage(content="", tool_calls=(ToolCall(id="c", name="f", arguments=""),)),
        AssistantMessage(
            content="thinking",
            tool_calls=(
                ToolCall(id="a", name="add", arguments='{"a": 1, "b": 2}'),
                ToolCall(id="b", name="négate", arguments="{}"),
            ),
        ),
        ToolMessage(tool_call_id="c", name="add", content="3"),
        ToolMessage(tool_call_id="c", name="", content=""),
        ToolMessage(tool_call_id="c", name="add", content=""),
    ],
    ids=lambda m: f"{m.role}-{len(message_text(m))}",
)
def test_the_token_estimate_counts_the_text_without_building_it(message: Message) -> None:
    """The budget's per-step estimate takes the length of a message's text without
    building it: the same count as counting the text itself."""
    assert message_text_length(message) == len(message_text(message))
    for counter in (EstimateCounter(), EstimateCounter(1.0), EstimateCounter(4.2)):
        expected = counter.count(message_text(message)) + MESSAGE_OVERHEAD
        assert count_message(counter, message) == expected


def test_budget_checks_without_a_wall_time_limit_and_at_its_end() -> None:
    tracker = BudgetTracker(Budget(tokens=100, tool_calls=2))
    assert tracker.before_model_call("m", None, 10, None) == 90
    tracker.before_tool_call("ping")
    timed = BudgetTracker(Budget(wall_time=1.0), started=time.monotonic() - 2.0)
    with pytest.raises(BudgetExceededError, match=r"wall-time budget of 1 s is spent.*to m"):
        timed.before_model_call("m", None, 0, None)
    with pytest.raises(BudgetExceededError, match="before calling tool 'ping'"):
        timed.before_tool_call("ping")


def test_a_token_budget_does_not_make_a_cost_budget_refuse_what_it_can_pay_for() -> None:
    """The token budget caps the output at what is left; the cost budget then caps it at
    what is still paid for, instead of taking the token cap as the request's own."""
    price = Price(input_per_mtok=1.0, output_per_mtok=10.0)  # $0.00001 per output token
    both = BudgetTracker(Budget(tokens=4000, cost=0.002))
    assert both.before_model_call("m", price, 80, None) == 192  # (0.002 - 0.00008) / 1e-5
    alone = BudgetTracker(Budget(cost=0.002))
    assert alone.before_model_call("m", price, 80, None) == 192
    asked = BudgetTracker(Budget(tokens=4000, cost=0.002))
    with pytest.raises(BudgetExceededError, match="could cost up to"):
        asked.before_model_call("m", price, 80, 1000)  # its own max_tokens: not capped
