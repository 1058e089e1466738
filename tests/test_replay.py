"""Trace replay: a stored run is run again with a change; what did not change comes
from the trace (no side effect repeats), and the result is a step-by-step diff."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from agentlab.agents import ReActAgent, replay_sync
from agentlab.errors import UserError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore


@dataclass
class Shop:
    """A shop whose order service says `status`, and what happened in it."""

    status: str = "shipped"
    lookups: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    model_calls: int = 0

    def tools(self) -> list:
        @tool
        def lookup(order_id: str) -> str:
            """Look up the status of an order.

            Args:
                order_id: The order id, like "O-1".
            """
            self.lookups.append(order_id)
            return self.status

        @tool(side_effects=True)
        def notify(order_id: str, text: str) -> str:
            """Email the customer about their order.

            Args:
                order_id: The order id.
                text: The email's text.
            """
            self.emails.append(text)
            return "sent"

        return [lookup, notify]

    def model(self, name: str = "shop") -> FunctionModel:
        """Look the order up, email the customer its status, then answer."""

        def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
            self.model_calls += 1
            results = [m for m in messages if isinstance(m, ToolMessage)]
            if not results:
                call = ToolCall(id="c1", name="lookup", arguments='{"order_id": "O-1"}')
                return AssistantMessage(tool_calls=(call,))
            if len(results) == 1:
                text = f"Your order is {results[0].content}."
                arguments = f'{{"order_id": "O-1", "text": "{text}"}}'
                return AssistantMessage(
                    tool_calls=(ToolCall(id="c2", name="notify", arguments=arguments),)
                )
            return AssistantMessage(content=f"Told the customer: {results[0].content}.")

        return FunctionModel(reply, name=name)

    def agent(self, workspace, **options) -> ReActAgent:  # type: ignore[no-untyped-def]
        options.setdefault("model", self.model())
        return ReActAgent(tools=self.tools(), trace=workspace, name="shop", **options)


@pytest.fixture
def original(tmp_path):
    """A finished run of the shop agent: it looked O-1 up and emailed "shipped"."""
    shop = Shop()
    result = shop.agent(tmp_path / "ws").run_sync("Tell me about O-1")
    assert result.output == "Told the customer: shipped." and shop.emails == [
        "Your order is shipped."
    ]
    return result.run_id, shop, tmp_path / "ws"


def test_an_unchanged_replay_repeats_nothing_and_every_step_is_the_same(original):
    run_id, _, ws = original
    again = Shop()
    diff = replay_sync(again.agent(ws), run_id)
    assert (again.model_calls, again.lookups, again.emails) == (0, [], [])
    assert [s.change for s in diff.steps] == ["same", "same", "same"]
    assert not diff.changed and diff.first_change is None
    assert diff.replay.output == "Told the customer: shipped."
    assert all(s.replay is not None and s.replay.replayed for s in diff.steps)
    assert [s.replayed_calls for s in diff.steps] == [1, 1, 0]


def test_a_changed_tool_runs_for_real_and_the_model_is_asked_from_the_first_difference(
    original,
):
    run_id, shop, ws = original
    changed = Shop(status="delayed")
    diff = replay_sync(changed.agent(ws), run_id, live_tools=["lookup"])
    assert changed.lookups == ["O-1"], "the changed tool is called"
    assert changed.model_calls == 2, "step 1's reply is replayed; steps 2 and 3 are asked"
    assert changed.emails == [], "an email the original never sent is not sent by a replay"
    assert shop.emails == ["Your order is shipped."]
    assert [s.change for s in diff.steps] == ["changed", "changed", "changed"]
    assert diff.first_change == 1
    step1, step2, _ = diff.steps
    assert step1.original is not None and step1.replay is not None
    assert step1.original.tools[0][3] == "shipped" and step1.replay.tools[0][3] == "delayed"
    assert step1.replay.replayed and not step2.replay.replayed  # type: ignore[union-attr]
    assert step2.refused_calls == 1
    assert "Not made: this is a replay" in step2.replay.tools[0][3]  # type: ignore[union-attr]
    assert diff.replay.output == "Told the customer: delayed."
    assert diff.to_dict()["outcome"]["output"] == [
        "Told the customer: shipped.",
        "Told the customer: delayed.",
    ]


def test_side_effects_run_when_allowed(original):
    run_id, _, ws = original
    changed = Shop(status="delayed")
    replay_sync(changed.agent(ws), run_id, live_tools=["lookup"], allow_side_effects=True)
    assert changed.emails == ["Your order is delayed."]


def test_a_changed_prompt_or_model_asks_the_model_but_replays_the_same_tool_calls(original):
    run_id, _, ws = original
    prompted = Shop()
    diff = replay_sync(prompted.agent(ws, instructions="Be terse."), run_id)
    assert prompted.model_calls == 3 and prompted.lookups == [] and prompted.emails == []
    assert [s.replayed_calls for s in diff.steps] == [1, 1, 0]
    assert not any(s.replay.replayed for s in diff.steps)  # type: ignore[union-attr]
    assert [s.change for s in diff.steps] == ["same", "same", "same"], "same replies"

    other = Shop()
    replay_sync(other.agent(ws, model=other.model(name="other")), run_id)
    assert other.model_calls == 3 and other.emails == []
    live = Shop()
    replay_sync(live.agent(ws), run_id, live_model=True)
    assert live.model_calls == 3


def test_the_replay_is_a_traced_run_that_names_its_original(original):
    run_id, _, ws = original
    diff = replay_sync(Shop(status="delayed").agent(ws), run_id, live_tools=["lookup"])
    store = TraceStore(ws)
    row = store.run(diff.replay.run_id)
    assert row is not None and row["metadata"]["replay_of"] == run_id
    served = store.sql(
        "SELECT tool, served_by FROM tool_calls WHERE run_id = ? ORDER BY step",
        [diff.replay.run_id],
    )
    assert served == [("lookup", None), ("notify", None)]
    routes = store.sql(
        "SELECT step, route FROM model_calls WHERE run_id = ? ORDER BY step", [diff.replay.run_id]
    )
    assert routes[0] == (1, f"replayed: step 1 of run {run_id}")
    unchanged = replay_sync(Shop().agent(ws), run_id)
    served = store.sql(
        "SELECT DISTINCT served_by FROM tool_calls WHERE run_id = ?", [unchanged.replay.run_id]
    )
    assert served == [(f"replay of run {run_id}",)]


def test_the_diff_reads_in_text_and_html(original):
    run_id, _, ws = original
    diff = replay_sync(Shop(status="delayed").agent(ws), run_id, live_tools=["lookup"])
    text = str(diff)
    assert text.startswith(f"Replay {diff.replay.run_id[:8]} of run {run_id[:8]}:")
    assert "* output: Told the customer: shipped. -> Told the customer: delayed." in text
    assert "step 1: changed (reply replayed)" in text
    assert "step 2: changed (model asked, 1 side-effecting call(s) not made)" in text
    html = diff._repr_html_()
    assert '<span class="warn">changed</span>' in html and "delayed" in html


def test_bad_requests_say_what_to_fix(original, tmp_path):
    run_id, _, ws = original
    with pytest.raises(UserError, match=r"live_tools names \['search'\].*lookup"):
        replay_sync(Shop().agent(ws), run_id, live_tools=["search"])
    with pytest.raises(UserError, match="No run 'nope'"):
        replay_sync(Shop().agent(ws), "nope")
