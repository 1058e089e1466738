"""Recovery of a run whose process died, idempotency keys, and the records that make
them possible (the start of a side-effecting call, the call's id, decisions).

The whole kill matrix (every point, then every point of the recovery) is in
test_kill_recovery.py; these tests pin single behaviours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agentlab import ReActAgent, tool
from agentlab.errors import UserError
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage
from agentlab.models import FunctionModel
from agentlab.serve.agent_app import create_agent_app
from agentlab.tools import IdempotencyKey
from agentlab.tracing import TraceStore

sys.path.insert(0, str(Path(__file__).parent))
import _kill_agent as kill_agent

INPUT = "Refund O-1 and O-2 and email both customers."


def _killed_run(workspace: Path, state: Path, kill_at: int, tool_calls: int = 0) -> str:
    """Run the kill agent in a new process SIGKILLed at point `kill_at`; its run id.
    (A new process, not a fork: this one has used DuckDB, whose threads a fork
    would copy in the middle of their work.)"""
    state.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, _kill_agent as k; from agentlab import Budget; "
        "k.arm(sys.argv[1], int(sys.argv[2])); limit = int(sys.argv[5]) or None; "
        "k.build_agent(sys.argv[3]).run_sync(sys.argv[4], budget=Budget(tool_calls=limit))"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(state),
            str(kill_at),
            str(workspace),
            INPUT,
            str(tool_calls),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    kill_agent.arm(state, 0)  # this process reads the state files
    [(run_id,)] = TraceStore(workspace).sql("SELECT run_id FROM runs")
    return run_id


def _recoverable(tmp_path: Path, kill_at: int) -> tuple[str, ReActAgent, TraceStore]:
    """A run killed at `kill_at`, the agent to resume it and its trace store."""
    ws = tmp_path / "ws"
    run_id = _killed_run(ws, tmp_path / "state", kill_at)
    return run_id, kill_agent.build_agent(ws), TraceStore(ws)


def test_a_key_parameter_is_hidden_from_the_model_and_gets_the_calls_key(workspace) -> None:
    seen: list[str] = []

    @tool
    def pay(order_id: str, key: IdempotencyKey) -> str:
        """Pay an order.

        Args:
            order_id: The order id.
        """
        seen.append(key)
        return "paid"

    assert list(pay.definition.parameters["properties"]) == ["order_id"]
    assert pay.side_effects and pay.key_parameter == "key"

    def script(messages, tools):
        if any(isinstance(m, ToolMessage) for m in messages):
            return AssistantMessage(content="done")
        call = ToolCall(id="c7", name="pay", arguments='{"order_id": "O-1"}')
        return AssistantMessage(tool_calls=(call,))

    result = ReActAgent(FunctionModel(script), [pay], name="payer").run_sync("pay O-1")
    assert result.ok and seen == [f"{result.run_id}-1-c7"]
    store = TraceStore(workspace)
    assert store.sql("SELECT key, tool, call_id, step FROM tool_call_starts") == [
        (seen[0], "pay", "c7", 1)
    ]
    assert store.sql("SELECT call_id FROM tool_calls") == [("c7",)]


def test_key_parameters_are_checked_at_declaration_and_needed_outside_a_run() -> None:
    def two_keys(a: IdempotencyKey, b: IdempotencyKey) -> str:
        """Two keys."""
        return ""

    with pytest.raises(UserError, match="a call has one key"):
        tool(two_keys)

    @tool
    def pay(order_id: str, key: IdempotencyKey) -> str:
        """Pay an order.

        Args:
            order_id: The order id.
        """
        return key

    import asyncio

    with pytest.raises(UserError, match=r"pass key=\.\.\. when calling it outside a run"):
        asyncio.run(pay.call(pay.validate('{"order_id": "O-1"}')))
    assert asyncio.run(pay.call(pay.validate('{"order_id": "O-1"}'), key="k1")) == "k1"


def test_only_side_effecting_calls_record_their_start(workspace) -> None:
    @tool
    def look(order_id: str) -> str:
        """Look at an order.

        Args:
            order_id: The order id.
        """
        return "fine"

    @tool(side_effects=True)
    def note(text: str) -> str:
        """Write a note.

        Args:
            text: The note.
        """
        return "noted"

    def script(messages, tools):
        if any(isinstance(m, ToolMessage) for m in messages):
            return AssistantMessage(content="done")
        return AssistantMessage(
            tool_calls=(
                ToolCall(id="a", name="look", arguments='{"order_id": "O-1"}'),
                ToolCall(id="b", name="note", arguments='{"text": "hi"}'),
            )
        )

    assert not look.side_effects and note.side_effects
    ReActAgent(FunctionModel(script), [look, note], name="n").run_sync("go")
    assert TraceStore(workspace).sql("SELECT tool FROM tool_call_starts") == [("note",)]


def test_a_killed_run_goes_on_from_its_last_step_without_repeating_effects(tmp_path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    run_id = _killed_run(ws, state, 8)  # inside step 2's refund, after the payment
    store = TraceStore(ws)
    row = store.run(run_id)
    assert row is not None and row["status"] == "interrupted"
    assert "stopped before it finished" in row["explanation"]
    assert [r["order_id"] for r in kill_agent.read("ledger.jsonl")] == ["O-1"]

    kill_agent.arm(state, 0)
    result = kill_agent.build_agent(ws).resume_sync(run_id, store=store)
    assert result.ok and result.output == "Refunded O-1 and O-2 and told both customers."
    assert [r["order_id"] for r in kill_agent.read("ledger.jsonl")] == ["O-1", "O-2"]
    assert len(kill_agent.read("outbox.jsonl")) == 2
    steps = store.sql(
        "SELECT step, count(*) FROM model_calls WHERE run_id = ? GROUP BY step ORDER BY step",
        [run_id],
    )
    assert steps == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)], "no step was taken twice"
    refunds = store.sql(
        "SELECT count(*) FROM tool_calls WHERE run_id = ? AND tool = 'refund'", [run_id]
    )
    assert refunds == [(2,)]
    assert store.run(run_id)["status"] == "completed"  # type: ignore[index]


def test_an_email_whose_outcome_is_unknown_waits_for_a_person(tmp_path) -> None:
    run_id, agent, store = _recoverable(tmp_path, 12)  # inside step 3's send_email, before it sent
    paused = agent.resume_sync(run_id, store=store)
    assert paused.status == "paused" and paused.pending is not None
    assert paused.pending["kind"] == "outcome_unknown" and paused.pending["tool"] == "send_email"
    assert "whether it happened is unknown" in paused.pending["question"]
    assert kill_agent.read("outbox.jsonl") == [], "never sent blindly"
    with pytest.raises(UserError, match=r"or answer='\.\.\.'"):
        agent.resume_sync(run_id, store=store)
    done = agent.resume_sync(run_id, approve=True, store=store)  # the person found no email
    assert done.ok
    assert [m["subject"] for m in kill_agent.read("outbox.jsonl")] == ["Refund O-1", "Refund O-2"]


def test_a_person_who_finds_the_email_sent_answers_and_it_is_not_resent(tmp_path) -> None:
    run_id, agent, store = _recoverable(tmp_path, 13)  # inside step 3's send_email, after it sent
    assert agent.resume_sync(run_id, store=store).status == "paused"
    done = agent.resume_sync(run_id, answer="sent at 10:02, see the outbox", store=store)
    assert done.ok and len(kill_agent.read("outbox.jsonl")) == 2
    [told] = [
        m.content
        for m in done.messages
        if isinstance(m, ToolMessage) and "a person checked" in m.content
    ]
    assert "sent at 10:02" in told


def test_a_run_killed_after_its_answer_finishes_with_it_without_asking_the_model(
    tmp_path,
) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    run_id = _killed_run(ws, state, 24)  # after the final model call, before the run's end
    kill_agent.arm(state, 0)
    result = kill_agent.build_agent(ws).resume_sync(run_id, store=TraceStore(ws))
    assert result.ok and result.steps == 5
    assert TraceStore(ws).sql("SELECT count(*) FROM model_calls") == [(5,)]


def test_resuming_needs_a_run_that_stopped_and_no_decision_for_an_interrupted_one(
    tmp_path,
) -> None:
    run_id, agent, store = _recoverable(tmp_path, 3)
    with pytest.raises(UserError, match="nobody was asked anything"):
        agent.resume_sync(run_id, approve=True, store=store)
    assert agent.resume_sync(run_id, store=store).ok
    with pytest.raises(UserError, match="is completed, not paused or interrupted"):
        agent.resume_sync(run_id, store=store)
    with pytest.raises(UserError, match="No run 'nope'"):
        agent.resume_sync("nope", store=store)


def test_the_cli_lists_and_recovers_an_interrupted_run(tmp_path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    run_id = _killed_run(ws, state, 9)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent),
        "AGENTLAB_WORKSPACE": str(ws),
        "KILL_AGENT_STATE": str(state),
    }
    cli = [sys.executable, "-m", "agentlab.cli", "runs"]
    listed = subprocess.run(
        [*cli, "interrupted"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert run_id in listed.stdout and "steps up to" in listed.stdout
    done = subprocess.run(
        [*cli, "resume", run_id, "--agent", "_kill_agent:agent_from_env"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"run {run_id}: completed" in done.stdout
    kill_agent.arm(state, 0)
    assert len(kill_agent.read("ledger.jsonl")) == 2


def test_the_served_app_recovers_an_interrupted_run(tmp_path, monkeypatch) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    run_id = _killed_run(ws, state, 16)  # step 4's refund started, not yet paid
    kill_agent.arm(state, 0)
    client = TestClient(create_agent_app(lambda: kill_agent.build_agent(ws)))
    assert client.get(f"/v1/runs/{run_id}").json()["status"] == "interrupted"
    done = client.post(f"/v1/runs/{run_id}/resume", json={}).json()
    assert done["status"] == "completed", done
    assert json.loads(json.dumps(kill_agent.read("ledger.jsonl")))[0]["order_id"] == "O-1"
    assert len(kill_agent.read("ledger.jsonl")) == 2


def test_the_approval_widget_asks_what_an_unknown_call_did(tmp_path) -> None:
    from agentlab.ui import ApprovalWidget

    run_id, agent, store = _recoverable(tmp_path, 13)  # inside send_email, after it sent
    assert agent.resume_sync(run_id, store=store).status == "paused"
    widget = ApprovalWidget(run_id, agent=agent, store=store)
    assert "outcome unknown" in widget.header.value
    assert widget.answer_button.description == "It happened"
    assert widget.retry_button.description == "Make it again"
    assert widget.approval_controls.layout.display == "none"
    assert "&quot;It happened&quot;" in widget.request_view.value, "the question names the buttons"
    assert "approve=" not in widget.request_view.value
    widget.submit_answer("it was sent")
    assert widget.status == "completed", widget.message.value
    assert "reported what the call to <code>send_email</code> did" in widget.message.value
    assert len(kill_agent.read("outbox.jsonl")) == 2


def test_a_recovered_run_keeps_the_budget_it_was_started_with(tmp_path) -> None:
    ws = tmp_path / "ws"
    run_id = _killed_run(ws, tmp_path / "state", 8, tool_calls=3)  # the agent has no budget
    result = kill_agent.build_agent(ws).resume_sync(run_id, store=TraceStore(ws))
    assert result.status == "budget_exceeded", result.explanation
    assert "budget of 3 tool calls" in (result.explanation or "")
    assert TraceStore(ws).run(run_id)["limits"] == {"tool_calls": 3, "steps": 10}  # type: ignore[index]
