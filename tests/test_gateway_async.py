"""Async runs through the gateway: 202 at once, the run in the background (its slot,
quota, timeout and crash handling), its status and server-sent events from the trace
store, paused runs resumed, runs stopped at shutdown; and for real on `agentlab serve`
with 2 uvicorn workers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from _http import free_port, running_process
from fastapi.testclient import TestClient
from gateway_fixtures.agents import SECRET_TEXT

from agentlab.agents import ReActAgent
from agentlab.models import FunctionModel
from agentlab.serve.gateway.app import create_gateway_app
from agentlab.serve.gateway.async_runs import (
    ASYNC_END_ROUTE,
    SHUTDOWN_EXPLANATION,
    BackgroundRuns,
)
from agentlab.serve.gateway.config import GatewayConfig
from agentlab.serve.gateway.keys import ApiKey, SQLiteKeyStore
from agentlab.serve.gateway.usage import usage_by
from agentlab.tracing import TraceStore

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).parent
FIXTURES = "gateway_fixtures.agents"
AGENTS = {
    name: {"versions": [{"version": "1", "factory": f"{FIXTURES}:{factory}"}]}
    for name, factory in {
        "echo": "echo",
        "slow": "slow",
        "refunds": "refunds",
        "crashing": "crashing",
    }.items()
}


def config(workspace: Path, **hygiene: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "workspace": str(workspace),
            "agents": AGENTS,
            "default_key_limits": {"requests": "10000/second"},
            "hygiene": {"run_timeout_s": 3.0, "max_concurrent_runs": 4, **hygiene},
        }
    )


@pytest.fixture()
def keys(tmp_path) -> dict[str, dict[str, str]]:
    store = SQLiteKeyStore(tmp_path / "ws" / "gateway.sqlite")
    return {
        "user": bearer(store.create("acme", ["agents:*"])[1]),
        "other": bearer(store.create("globex", ["agents:*"])[1]),
        "reader": bearer(store.create("support", ["runs:read"])[1]),
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sse(text: str) -> list[tuple[str, Any]]:
    """The (event, data) pairs of a server-sent event stream; comments dropped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and ": " in line[1:]
        )
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def start(client: TestClient, agent: str, text: str, headers: dict[str, str]) -> httpx.Response:
    return client.post(
        f"/v1/agents/{agent}/runs", json={"input": text, "async": True}, headers=headers
    )


def wait_for(client: TestClient, run_id: str, headers: dict[str, str], *statuses: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 15
    while True:
        state = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if state["status"] in statuses or time.monotonic() > deadline:
            return state  # type: ignore[no-any-return]
        time.sleep(0.05)


def test_an_async_run_answers_202_at_once_and_runs_in_the_background(tmp_path, keys) -> None:
    with TestClient(create_gateway_app(config(tmp_path / "ws"))) as client:
        began = time.perf_counter()
        accepted = start(client, "slow", "1.0", keys["user"])
        answered_s = time.perf_counter() - began
        assert accepted.status_code == 202, accepted.text
        assert answered_s < 0.8, "answered before the run's 1 s model call"
        body = accepted.json()
        run_id = body["run_id"]
        assert body == {
            "run_id": run_id,
            "status": "running",
            "agent": "slow",
            "version": "1",
            "links": {"self": f"/v1/runs/{run_id}", "events": f"/v1/runs/{run_id}/events"},
        }
        assert accepted.headers["location"] == f"/v1/runs/{run_id}"
        assert "x-ratelimit-limit" in {h.lower() for h in accepted.headers}
        running = client.get(f"/v1/runs/{run_id}", headers=keys["user"]).json()
        assert running["status"] == "running" and running["output"] is None
        # the stream opened while the run runs: its step, then the end
        events = sse(client.get(f"/v1/runs/{run_id}/events", headers=keys["user"]).text)
        assert [e for e, _ in events] == ["step", "end"]
        step, end = events[0][1], events[1][1]
        assert step["step"] == 1 and step["reply"]["text"] == "slept 1.0"
        assert step["reply"]["tool_calls"] == [] and step["tool_calls"] == []
        assert end["status"] == "completed" and end["output"] == "slept 1.0"
        assert end["steps"] == 1
        done = client.get(f"/v1/runs/{run_id}", headers=keys["user"]).json()
        assert done["status"] == "completed" and done["output"] == "slept 1.0"
    rows = TraceStore(tmp_path / "ws").sql(
        "SELECT route, status_code, run_id, latency_ms FROM gateway_requests "
        "WHERE run_id = ? ORDER BY route",
        [run_id],
    )
    routes = {route: (status, latency) for route, status, _, latency in rows}
    assert routes["/v1/agents/{agent}/runs"][0] == 202
    assert routes[ASYNC_END_ROUTE][0] == 200 and routes[ASYNC_END_ROUTE][1] >= 1000
    streams = TraceStore(tmp_path / "ws").sql(
        "SELECT status_code FROM gateway_requests WHERE route = '/v1/runs/{run_id}/events'"
    )
    assert streams == [(200,)]


def test_an_async_run_counts_once_in_the_usage_report(tmp_path, keys) -> None:
    store = TraceStore(tmp_path / "ws")
    with TestClient(create_gateway_app(config(tmp_path / "ws"))) as client:
        sync = client.post("/v1/agents/echo/runs", json={"input": "hi"}, headers=keys["user"])
        assert sync.status_code == 200, sync.text
        run_id = start(client, "echo", "hello there", keys["user"]).json()["run_id"]
        wait_for(client, run_id, keys["user"], "completed")
        deadline = time.monotonic() + 10
        while not store.sql("SELECT 1 FROM gateway_requests WHERE route = ?", [ASYNC_END_ROUTE]):
            assert time.monotonic() < deadline, "the async run's end was not recorded"
            time.sleep(0.05)
    runs = [store.run(sync.json()["run_id"]), store.run(run_id)]
    tokens = sum(r["input_tokens"] + r["output_tokens"] for r in runs if r is not None)
    assert tokens > 0
    rows = usage_by(store, ["client", "route"])  # the end's record folds into its route
    (route,) = [r for r in rows if r["route"] == "/v1/agents/{agent}/runs"]
    assert (route["client"], route["requests"], route["errors"], route["tokens"]) == (
        "acme",
        2,
        0,
        tokens,
    )
    assert {r["route"] for r in rows} == {"/v1/agents/{agent}/runs", "/v1/runs/{run_id}"}
    assert route["latency_p95_ms"] < 1000  # the answers' times, not the runs'


def test_a_paused_async_run_streams_paused_then_resumes_to_completion(tmp_path, keys) -> None:
    with TestClient(create_gateway_app(config(tmp_path / "ws"))) as client:
        run_id = start(client, "refunds", "Refund O-1", keys["user"]).json()["run_id"]
        events = sse(client.get(f"/v1/runs/{run_id}/events", headers=keys["user"]).text)
        assert [e for e, _ in events] == ["step", "step", "paused"]
        lookup, refund, paused = (data for _, data in events)
        assert lookup["reply"] == {
            "text": "Looking it up.",
            "tool_calls": [{"name": "lookup", "arguments": '{"order_id": "O-1"}'}],
        }
        assert [(c["name"], c["status"]) for c in lookup["tool_calls"]] == [("lookup", "ok")]
        assert refund["reply"]["tool_calls"][0]["name"] == "refund"
        assert refund["tool_calls"] == [], "not made before a person approves it"
        assert paused["status"] == "paused" and paused["pending"]["tool"] == "refund"
        # another client cannot see or resume it; the owner resumes it
        other = client.post(
            f"/v1/runs/{run_id}/resume", json={"approve": True}, headers=keys["other"]
        )
        assert other.status_code == 404
        resumed = client.post(
            f"/v1/runs/{run_id}/resume", json={"approve": True}, headers=keys["user"]
        )
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "completed"
        assert resumed.json()["output"] == "Outcome: refunded 42.0 on O-1"
        # a finished run replays every step, then its end (runs:read sees any run)
        replay = sse(client.get(f"/v1/runs/{run_id}/events", headers=keys["reader"]).text)
        assert [e for e, _ in replay] == ["step", "step", "step", "end"]
        assert [(c["name"], c["status"]) for c in replay[1][1]["tool_calls"]] == [("refund", "ok")]
        assert replay[-1][1]["output"] == "Outcome: refunded 42.0 on O-1"


def test_events_need_the_runs_owner_or_runs_read(tmp_path, keys) -> None:
    with TestClient(create_gateway_app(config(tmp_path / "ws"))) as client:
        run_id = start(client, "echo", "hi", keys["user"]).json()["run_id"]
        wait_for(client, run_id, keys["user"], "completed")
        for headers, status in ((keys["other"], 404), ({}, 401), (keys["reader"], 200)):
            got = client.get(f"/v1/runs/{run_id}/events", headers=headers)
            assert got.status_code == status, got.text
        unknown = client.get("/v1/runs/nope/events", headers=keys["user"])
        assert unknown.status_code == 404 and set(unknown.json()) == {"error"}


def test_a_bad_async_field_is_a_422(tmp_path, keys) -> None:
    with TestClient(create_gateway_app(config(tmp_path / "ws"))) as client:
        for body in ({"input": "hi", "async": "soon"}, {"input": "hi", "async_": True}):
            got = client.post("/v1/agents/echo/runs", json=body, headers=keys["user"])
            assert got.status_code == 422 and set(got.json()) == {"error"}, got.text
        sync = client.post(
            "/v1/agents/echo/runs", json={"input": "hi", "async": False}, headers=keys["user"]
        )
        assert sync.status_code == 200 and sync.json()["output"] == "echo: hi"


def test_an_async_run_holds_its_slot_until_it_ends(tmp_path, keys) -> None:
    with TestClient(create_gateway_app(config(tmp_path / "ws", max_concurrent_runs=1))) as client:
        first = start(client, "slow", "0.6", keys["user"])
        assert first.status_code == 202
        full = start(client, "echo", "hi", keys["user"])
        assert full.status_code == 503 and full.headers["retry-after"] == "1"
        assert "max_concurrent_runs" in full.json()["error"]["message"]
        wait_for(client, first.json()["run_id"], keys["user"], "completed")
        time.sleep(0.1)
        assert start(client, "echo", "hi", keys["user"]).status_code == 202


def test_async_runs_that_crash_or_time_out_are_marked_failed(tmp_path, keys) -> None:
    with TestClient(create_gateway_app(config(tmp_path / "ws", run_timeout_s=0.5))) as client:
        crashed = start(client, "crashing", "hi", keys["user"]).json()["run_id"]
        slow = start(client, "slow", "5", keys["user"]).json()["run_id"]
        state = wait_for(client, crashed, keys["user"], "failed")
        assert state["status"] == "failed" and state["error_id"]
        end = sse(client.get(f"/v1/runs/{crashed}/events", headers=keys["user"]).text)[-1]
        assert end[0] == "end" and end[1]["error_id"] == state["error_id"]
        assert SECRET_TEXT not in json.dumps(end) and "Traceback" not in json.dumps(end)
        timed_out = wait_for(client, slow, keys["user"], "failed")
        assert timed_out["status"] == "failed" and "run_timeout_s" in timed_out["explanation"]


def test_shutdown_stops_background_runs_and_marks_them_failed(tmp_path, keys) -> None:
    app = create_gateway_app(config(tmp_path / "ws", run_timeout_s=30))
    with TestClient(app) as client:
        run_id = start(client, "slow", "20", keys["user"]).json()["run_id"]
        began = time.perf_counter()
    assert time.perf_counter() - began < 5, "shutdown did not wait for the run"
    store = TraceStore(tmp_path / "ws")
    row = store.run(run_id)
    assert row is not None and row["status"] == "failed"
    assert row["explanation"] == SHUTDOWN_EXPLANATION
    ended = store.sql(
        "SELECT status_code FROM gateway_requests WHERE run_id = ? AND route = ?",
        [run_id, ASYNC_END_ROUTE],
    )
    assert ended == [(503,)]


# -- for real: `agentlab serve` with 2 workers ---------------------------------------------

SERVE_CONFIG = """
workspace: ws
workers: 2
default_key_limits: {requests: "1000/second"}
hygiene: {run_timeout_s: 10}
agents:
  slow: {versions: [{version: "1", factory: "gateway_fixtures.agents:slow"}]}
  refunds: {versions: [{version: "1", factory: "gateway_fixtures.agents:refunds"}]}
"""


@pytest.fixture()
def served(tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    (tmp_path / "gw.yaml").write_text(SERVE_CONFIG)
    headers = bearer(
        SQLiteKeyStore(tmp_path / "ws" / "gateway.sqlite").create("acme", ["agents:*"])[1]
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "AGENTLAB_WORKSPACE": str(tmp_path / "other")}
    command = [sys.executable, "-m", "agentlab.cli", "serve", "gw.yaml", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running_process(command, url + "/healthz", env=env, cwd=tmp_path):
        yield url, headers


@pytest.mark.slow
def test_async_runs_on_two_uvicorn_workers(served) -> None:
    url, headers = served
    with httpx.Client(base_url=url, headers=headers, timeout=20) as client:
        accepted = client.post("/v1/agents/slow/runs", json={"input": "1.5", "async": True})
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]
        states = []
        deadline = time.monotonic() + 20
        while not states or states[-1] != "completed":
            assert time.monotonic() < deadline, states
            states.append(client.get(f"/v1/runs/{run_id}").json()["status"])
            time.sleep(0.1)
        assert states[0] == "running"
        # every new connection may land on either worker: all of them see the run
        for _ in range(4):
            with httpx.Client(base_url=url, headers=headers, timeout=20) as fresh:
                events = sse(fresh.get(f"/v1/runs/{run_id}/events").text)
            assert [e for e, _ in events] == ["step", "end"]
            assert events[-1][1]["output"] == "slept 1.5"
        # a paused run streams live up to `paused`, then resumes through the gateway
        paused_id = client.post(
            "/v1/agents/refunds/runs", json={"input": "Refund O-1", "async": True}
        ).json()["run_id"]
        with client.stream("GET", f"/v1/runs/{paused_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            live = sse(stream.read().decode())
        assert [e for e, _ in live] == ["step", "step", "paused"]
        resumed = client.post(f"/v1/runs/{paused_id}/resume", json={"approve": True})
        assert resumed.json()["output"] == "Outcome: refunded 42.0 on O-1"
        assert client.get(f"/v1/runs/{paused_id}").json()["status"] == "completed"


async def test_shutdown_keeps_the_end_of_a_run_that_finished_while_settling(tmp_path) -> None:
    """Cancelled at shutdown after its run completed (its quota still settling), a
    background task leaves the run completed and records its usage as served."""
    workspace = tmp_path / "ws"
    background = BackgroundRuns(workspace)
    settling = asyncio.Event()  # never set: the settlement outlives the shutdown
    agent = ReActAgent(FunctionModel(lambda m, t: "done", name="quick"), trace=workspace)

    async def execute(on_start: Any) -> tuple[Any, Any]:
        run = agent.start("hi")
        on_start(run, {})
        await run.finish()
        await settling.wait()
        raise AssertionError("never settles")

    key = ApiKey(id="k1", owner="acme", scopes=("agents:*",), created_at=datetime.now(UTC))
    request = SimpleNamespace(state=SimpleNamespace())
    accepted = await background.launch(execute, request=request, key=key, agent="a", version="1")
    run_id = json.loads(accepted.body)["run_id"]
    for _ in range(100):  # until the run completed and the task waits on its settlement
        if TraceStore(workspace).run(run_id)["status"] == "completed":  # type: ignore[index]
            break
        await asyncio.sleep(0.02)
    await background.aclose()
    store = TraceStore(workspace)
    assert store.run(run_id)["status"] == "completed"  # type: ignore[index]
    ended = store.sql(
        "SELECT status_code FROM gateway_requests WHERE run_id = ? AND route = ?",
        [run_id, ASYNC_END_ROUTE],
    )
    assert ended == [(200,)]
