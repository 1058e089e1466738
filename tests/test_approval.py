"""Approval: a tool with side effects pauses the run before it runs; a person's
decision resumes it, in the same process or in another one after a restart."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agentlab.errors import UserError
from agentlab.tracing import TraceStore

AGENT_MODULE = '''
"""A refund agent whose refund needs approval (imported by the test's processes)."""
import json, os
from pathlib import Path

from agentlab import ReActAgent, tool
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage
from agentlab.models import FunctionModel

LEDGER = Path(os.environ["REFUND_LEDGER"])


@tool
def lookup(order_id: str) -> dict:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "total_usd": 42.0}


@tool(requires_approval=True)
def refund(order_id: str, amount_usd: float) -> str:
    """Refund an order (money leaves the shop: a person approves it first).

    Args:
        order_id: The order id.
        amount_usd: How much to refund.
    """
    with LEDGER.open("a") as ledger:
        ledger.write(json.dumps([order_id, amount_usd]) + "\\n")
    return f"refunded {amount_usd} on {order_id}"


def reply(messages, tools):
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        return AssistantMessage(tool_calls=(
            ToolCall(id="c1", name="lookup", arguments='{"order_id": "O-1"}'),))
    if len(results) == 1:
        return AssistantMessage(tool_calls=(
            ToolCall(id="c2", name="refund", arguments='{"order_id": "O-1", "amount_usd": 42}'),))
    return AssistantMessage(content="Outcome: " + results[-1].content)


def build_agent():
    return ReActAgent(FunctionModel(reply), [lookup, refund], name="refunds",
                      trace=os.environ["AGENTLAB_WORKSPACE"])
'''


@pytest.fixture
def refunds(tmp_path, workspace, monkeypatch):
    (tmp_path / "refund_agent.py").write_text(AGENT_MODULE)
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("REFUND_LEDGER", str(ledger))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("refund_agent", None)
    import refund_agent

    return refund_agent, ledger


def test_a_call_needing_approval_pauses_then_runs_once_approved(refunds) -> None:
    module, ledger = refunds
    run = module.build_agent().start("Refund O-1")
    result = run.finish_sync()
    assert result.status == "paused" and not ledger.exists(), "nothing refunded yet"
    assert result.pending["tool"] == "refund"
    assert "Approve the call to 'refund'" in result.pending["question"]
    done = run.resume_sync(approve=True)
    assert done.ok and done.output == "Outcome: refunded 42.0 on O-1"
    assert ledger.read_text().splitlines() == ['["O-1", 42.0]']
    with pytest.raises(UserError, match="not paused"):
        run.resume_sync(approve=True)


def test_a_declined_call_is_not_made_and_the_model_is_told(refunds) -> None:
    module, ledger = refunds
    run = module.build_agent().start("Refund O-1")
    run.finish_sync()
    done = run.resume_sync(approve=False, note="over the refund limit")
    assert done.ok and not ledger.exists()
    assert "A person declined this call to 'refund'" in done.output
    assert "over the refund limit" in done.output
    assert run.steps[-2].tool_calls[-1].status == "denied"


def test_a_paused_run_is_resumed_by_another_process(refunds, tmp_path, workspace) -> None:
    _, ledger = refunds
    start = textwrap.dedent(
        """
        import refund_agent
        print(refund_agent.build_agent().run_sync("Refund O-1").run_id)
        """
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    run_id = subprocess.run(
        [sys.executable, "-c", start],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout.strip()
    store = TraceStore(workspace)
    row = store.run(run_id)
    assert row["status"] == "paused" and row["pending"]["tool"] == "refund"
    cli = [sys.executable, "-m", "agentlab.cli", "runs"]
    paused = subprocess.run(
        [*cli, "paused", "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert run_id in paused.stdout and "Approve the call to 'refund'" in paused.stdout
    out = subprocess.run(
        [
            *cli,
            "resume",
            run_id,
            "--agent",
            "refund_agent:build_agent",
            "--approve",
            "--workspace",
            str(workspace),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert f"run {run_id}: completed" in out.stdout
    assert ledger.read_text().splitlines() == ['["O-1", 42.0]']
    row = store.run(run_id)
    assert row["status"] == "completed" and row["output"] == "Outcome: refunded 42.0 on O-1"
    statuses = store.sql(
        "select tool, status from tool_calls where run_id = ? order by step, started_at", [run_id]
    )
    assert statuses == [("lookup", "ok"), ("refund", "ok")]
    assert row["pending"] is None, "a finished run waits for nothing"


def test_the_served_app_shows_and_resumes_a_paused_run(refunds) -> None:
    from fastapi.testclient import TestClient

    from agentlab.serve.agent_app import create_agent_app

    module, ledger = refunds
    client = TestClient(create_agent_app(module.build_agent))
    started = client.post("/v1/runs", json={"input": "Refund O-1"}).json()
    assert started["status"] == "paused" and started["pending"]["tool"] == "refund"
    run_id = started["run_id"]
    state = client.get(f"/v1/runs/{run_id}").json()
    assert state["status"] == "paused" and state["pending"]["tool"] == "refund"
    done = client.post(f"/v1/runs/{run_id}/resume", json={"approve": True}).json()
    assert done["status"] == "completed" and ledger.read_text().count("O-1") == 1
    assert client.get(f"/v1/runs/{run_id}").json()["status"] == "completed"
    again = client.post(f"/v1/runs/{run_id}/resume", json={"approve": True})
    assert again.status_code == 409 and "not paused" in again.json()["error"]["message"]
    assert client.get("/v1/runs/nope").status_code == 404


def test_an_escalated_run_pauses_for_a_person_instead_of_failing(workspace) -> None:
    from agentlab import ReActAgent
    from agentlab.errors import ModelUnavailableError
    from agentlab.models import FunctionModel

    up = {"now": False}

    def flaky(messages, tools):  # type: ignore[no-untyped-def]
        if not up["now"]:
            raise ModelUnavailableError("the model server is down")
        return "the model is back"

    agent = ReActAgent(
        FunctionModel(flaky), trace=TraceStore(workspace), escalate=True, retry=None, breaker=None
    )
    answered = agent.start("Where is my order?")
    result = answered.finish_sync()
    assert result.status == "paused" and result.pending["kind"] == "escalation"
    assert "the model server is down" in result.pending["question"]
    with pytest.raises(UserError, match="approve=True or approve=False, or answer="):
        answered.resume_sync()
    done = answered.resume_sync(answer="A person checked: it ships tomorrow.")
    assert done.ok and done.output == "A person checked: it ships tomorrow."

    retried = agent.start("Where is my order?")
    retried.finish_sync()
    up["now"] = True
    assert retried.resume_sync(approve=True).output == "the model is back"

    up["now"] = False
    failed = agent.start("Where is my order?")
    failed.finish_sync()
    final = failed.resume_sync(approve=False)
    assert final.status == "failed" and "the model server is down" in final.explanation
    rows = TraceStore(workspace).sql("select status from runs order by started_at")
    assert [r[0] for r in rows] == ["completed", "completed", "failed"]
