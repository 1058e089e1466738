"""The one error envelope and error records, in the bare agent app too: strict JSON,
a 500 with only an error id, a crashed run with its real id, failed in the store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway_fixtures.agents import SECRET_TEXT, crashing, echo, failing_model, refunds

from agentlab.agents import Agent
from agentlab.serve.agent_app import create_agent_app
from agentlab.serve.gateway.hygiene import strict_json_loads
from agentlab.tracing import TraceStore

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

INTERNALS = ("/home/alice", "sk-abc", "Traceback", "RuntimeError", "ValueError", ".py")


def envelope(response, status: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "error_id"}
    return body["error"]  # type: ignore[no-any-return]


def record(workspace, error_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    [(run_id, detail)] = TraceStore(workspace).sql(
        "SELECT run_id, detail FROM alerts WHERE id = ? AND alert = 'server_error'", [error_id]
    )
    return {"run_id": run_id, **json.loads(detail)}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": [Infinity]}', "Infinity is not a JSON number"),
        ('{"a": 1e400}', "too large"),
        ('{"a": 1, "b": {"c": 1, "c": 2}}', "the key 'c' appears twice"),
    ],
)
def test_strict_json(text: str, reason: str) -> None:
    with pytest.raises(json.JSONDecodeError, match=reason):
        strict_json_loads(text)


def test_strict_json_takes_valid_json() -> None:
    assert strict_json_loads(b'{"a": [1, 2.5, null, "x"], "b": {"c": -0.0}}') == {
        "a": [1, 2.5, None, "x"],
        "b": {"c": -0.0},
    }


def test_bare_app_rejections_share_the_envelope(workspace) -> None:
    client = TestClient(create_agent_app(echo))
    nan = client.post(
        "/v1/runs",
        content=b'{"input": "hi", "metadata": {"x": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert "NaN" in envelope(nan, 422)["message"]
    assert envelope(client.get("/nowhere"), 404)["type"] == "not_found"
    assert envelope(client.delete("/v1/runs"), 405)["type"] == "method_not_allowed"
    assert envelope(client.get("/v1/runs/nope"), 404)["type"] == "not_found"
    assert envelope(client.post("/v1/runs", json={}), 422)["type"] == "invalid_request"
    done = client.post("/v1/runs", json={"input": "hi"}).json()
    conflict = client.post(f"/v1/runs/{done['run_id']}/resume", json={"approve": True})
    assert "not paused" in envelope(conflict, 409)["message"]


def test_bare_app_failing_model_answers_with_an_error_id(workspace) -> None:
    client = TestClient(create_agent_app(failing_model))
    response = client.post("/v1/runs", json={"input": "hi"})
    body = response.json()
    assert body["status"] == "failed" and body["error_id"]
    assert not any(s in response.text for s in INTERNALS), response.text
    detail = record(workspace, body["error_id"])
    assert detail["run_id"] == body["run_id"] and "/home/alice/.ssh" in detail["message"]


def _escalating() -> Agent:
    agent = failing_model()
    agent.escalate = True  # a person decides instead of the run failing
    return agent


def test_an_escalated_run_waits_for_a_person_without_showing_the_error(workspace) -> None:
    client = TestClient(create_agent_app(_escalating))
    response = client.post("/v1/runs", json={"input": "hi"})
    body = response.json()
    assert body["status"] == "paused" and body["error_id"], response.text
    assert not any(s in response.text for s in INTERNALS), response.text
    pending = body["pending"]
    assert pending["kind"] == "escalation" and "failure" not in pending
    assert pending["question"] == (
        "The model could not answer (its retries and fallbacks were tried). Answer for the "
        f"user, retry, or let the run fail? (the details are recorded under error id "
        f"{body['error_id']}.)"
    )
    assert "/home/alice/.ssh" in record(workspace, body["error_id"])["message"]
    state = client.get(f"/v1/runs/{body['run_id']}")
    assert state.json()["pending"]["kind"] == "escalation"
    assert not any(s in state.text for s in INTERNALS), state.text
    # The person's answer still reaches the run: the real pending call is in the trace.
    answered = client.post(f"/v1/runs/{body['run_id']}/resume", json={"answer": "Sorry!"})
    assert answered.json()["status"] == "completed" and answered.json()["output"] == "Sorry!"


class _CrashAfterPause:
    """Raises on the first model call after the run resumed: a crashed resumption."""

    def emit(self, event: Any) -> None:
        if getattr(event, "kind", "") == "model_call" and event.step >= 3:
            raise ValueError(SECRET_TEXT)


def _refunds_crashing_on_resume() -> Agent:
    agent = refunds()
    agent.observers = (*agent.observers, _CrashAfterPause())
    return agent


def test_a_crashed_resumption_keeps_what_the_run_did(workspace) -> None:
    client = TestClient(create_agent_app(_refunds_crashing_on_resume))
    paused = client.post("/v1/runs", json={"input": "refund O-1"}).json()
    assert paused["status"] == "paused" and paused["steps"] == 2
    response = client.post(f"/v1/runs/{paused['run_id']}/resume", json={"approve": True})
    body = response.json()
    assert body["status"] == "failed" and body["error_id"], response.text
    assert not any(s in response.text for s in INTERNALS), response.text
    # The steps before the pause and after it, the tools and the tokens: none lost.
    assert body["steps"] == 3 and body["tools_called"] == ["lookup", "refund"]
    assert body["usage"]["total_tokens"] > paused["usage"]["total_tokens"] > 0
    row = TraceStore(workspace).run(paused["run_id"])
    assert row is not None and row["status"] == "failed" and row["steps"] == 3
    assert row["input_tokens"] + row["output_tokens"] == body["usage"]["total_tokens"]


def test_bare_app_crashed_run_keeps_its_id_and_is_failed(workspace, caplog) -> None:
    client = TestClient(create_agent_app(crashing))
    with caplog.at_level("ERROR", logger="agentlab.serve"):
        response = client.post("/v1/runs", json={"input": "hi"})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "failed"
    assert not any(s in response.text for s in INTERNALS), response.text
    run = TraceStore(workspace).run(body["run_id"])
    assert run is not None and run["status"] == "failed"  # not left `running`
    detail = record(workspace, body["error_id"])
    assert detail["type"] == "ValueError" and SECRET_TEXT[:20] in detail["message"]
    assert "Traceback" in detail["traceback"]
    lines = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert len(lines) == 1 and "/home/alice" not in lines[0].getMessage()
    state = client.get(f"/v1/runs/{body['run_id']}").json()
    assert state["status"] == "failed" and state["error_id"] == body["error_id"]


def test_an_unexpected_server_error_is_a_500_with_only_an_id(workspace, caplog) -> None:
    app = create_agent_app(echo)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError(SECRET_TEXT)

    with caplog.at_level("ERROR"):
        response = TestClient(app, raise_server_exceptions=False).get("/boom")
    error = envelope(response, 500)
    assert error["type"] == "internal_error" and error["error_id"] in error["message"]
    assert not any(s in response.text for s in INTERNALS)
    assert record(workspace, error["error_id"])["type"] == "KeyError"
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
