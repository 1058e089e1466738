"""Replaying a whole eval with a changed tool: every case's run is a replay (no side
effect repeats), scored and recorded as a new eval run, with per-case diffs and the
comparison against the original."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agentlab.agents import ReActAgent
from agentlab.errors import UserError
from agentlab.evals import Case, Dataset, ExpectedOutcome, evaluate_sync
from agentlab.evals.replay import replay_eval_sync
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore

STATUS = {"O-1": "shipped", "O-2": "delivered", "O-3": "lost"}


def shop_agent(workspace, statuses: dict[str, str], emails: list[str]) -> ReActAgent:
    @tool
    def order_status(order_id: str) -> str:
        """Look up the delivery status of a customer's order.

        Args:
            order_id: The order id, like "O-1".
        """
        return statuses[order_id]

    @tool(side_effects=True)
    def email_customer(order_id: str) -> str:
        """Email the customer that their order was looked into.

        Args:
            order_id: The order id, like "O-1".
        """
        emails.append(order_id)
        return "sent"

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        order = str(messages[1].content).split()[-1]
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            arguments = f'{{"order_id": "{order}"}}'
            return AssistantMessage(
                tool_calls=(ToolCall(id="c1", name="order_status", arguments=arguments),)
            )
        if len(results) == 1:
            arguments = f'{{"order_id": "{order}"}}'
            return AssistantMessage(
                tool_calls=(ToolCall(id="c2", name="email_customer", arguments=arguments),)
            )
        return AssistantMessage(content=f"{order} is {results[0].content}.")

    return ReActAgent(
        FunctionModel(reply, name="shop"),
        [order_status, email_customer],
        trace=workspace,
        name="shop",
    )


def dataset() -> Dataset:
    return Dataset(
        [
            Case(
                id=order,
                input=f"Where is {order}",
                expected_outcome=ExpectedOutcome(kind="contains", value=STATUS[order]),
            )
            for order in STATUS
        ],
        name="orders",
    )


@pytest.fixture
def original(tmp_path):
    emails: list[str] = []
    report = evaluate_sync(shop_agent(tmp_path / "ws", STATUS, emails), dataset())
    assert report.metrics.passed == 3 and emails == ["O-1", "O-2", "O-3"]
    return report, tmp_path / "ws"


def test_a_changed_tool_replays_every_case_without_repeating_side_effects(original):
    report, ws = original
    emails: list[str] = []
    changed = {**STATUS, "O-3": "found"}  # the order service now says something else
    agent = shop_agent(ws, changed, emails)
    replayed = replay_eval_sync(agent, report.eval_id[:8], dataset(), live_tools=["order_status"])
    assert emails == [], "every email was sent in the original: none is sent again"
    assert replayed.changed == ["O-3"]
    assert replayed.diffs["O-3"].first_change == 1
    assert not replayed.diffs["O-1"].changed
    assert [r.passed for r in replayed.report.results] == [True, True, False]
    assert replayed.report.metadata["replay_of"] == report.eval_id
    assert replayed.comparison.ids("regressed") == ["O-3"]
    store = TraceStore(ws)
    assert store.sql("SELECT count(*) FROM eval_runs")[0][0] == 2, "a new eval run"
    joined = store.sql(
        "SELECT count(*) FROM eval_results e JOIN runs r USING (run_id) "
        "WHERE e.eval_id = ? AND json_extract_string(r.metadata, '$.replay_of') IS NOT NULL",
        [replayed.report.eval_id],
    )
    assert joined[0][0] == 3, "each case's run is a replay, joined to the new eval"
    text = str(replayed)
    assert "3 cases replayed, 1 changed" in text and "O-3: from step 1" in text
    assert "O-3" in replayed._repr_html_()


def test_cases_the_original_never_ran_are_listed_and_a_wrong_dataset_is_refused(original):
    report, ws = original
    bigger = Dataset(
        [
            *dataset().cases,
            Case(
                id="O-9",
                input="Where is O-9",
                expected_outcome=ExpectedOutcome(kind="contains", value="x"),
            ),
        ],
        name="orders",
    )
    replayed = replay_eval_sync(shop_agent(ws, STATUS, []), report, bigger)
    assert replayed.not_replayed == ["O-9"] and replayed.changed == []
    other = Dataset(
        [Case(id="nope", input="hi", expected_outcome=ExpectedOutcome(kind="contains", value="x"))]
    )
    with pytest.raises(UserError, match="none of the 1 cases of dataset 'dataset' is in eval"):
        replay_eval_sync(shop_agent(ws, STATUS, []), report, other)
