"""The gateway for real: `agentlab serve CONFIG --workers 2` on 127.0.0.1 (uvicorn),
scripted-model agents, API keys, the one error envelope, body and input limits,
strict JSON, crashes, timeouts and the per-worker run cap."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from _http import free_port, running_process
from gateway_fixtures.agents import SECRET_TEXT

from agentlab.serve.gateway.keys import SQLiteKeyStore
from agentlab.serve.gateway.quotas import Limits
from agentlab.tracing import TraceStore

pytestmark = pytest.mark.timeout(180)

TESTS = Path(__file__).parent
CONFIG = """
workspace: ws
workers: 2
shared_state_ttl_s: 0.3
default_key_limits: {requests: "1000/second"}
hygiene: {max_body_bytes: 65536, max_input_chars: 1000, run_timeout_s: 1.5,
          max_concurrent_runs: 2}
agents:
  echo:
    versions:
      - {version: "1", factory: "gateway_fixtures.agents:echo", weight: 1}
      - {version: "2", factory: "gateway_fixtures.agents:echo_v2", weight: 5}
  failing: {versions: [{version: "1", factory: "gateway_fixtures.agents:failing_model"}]}
  crashing: {versions: [{version: "1", factory: "gateway_fixtures.agents:crashing"}]}
  slow: {versions: [{version: "1", factory: "gateway_fixtures.agents:slow"}]}
"""
INTERNALS = ("/home/alice", "sk-abc", "Traceback", "RuntimeError", "ValueError", ".py")


class Gateway:
    def __init__(self, url: str, workspace: Path, keys: dict[str, str], pid: int) -> None:
        self.url, self.workspace, self.keys, self.pid = url, workspace, keys, pid

    def post(self, path: str, key: str | None = "user", **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.post(self.url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, key: str | None = "user") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.get(self.url + path, headers=headers, timeout=30)

    def run(self, agent: str, text: str, key: str = "user") -> httpx.Response:
        return self.post(f"/v1/agents/{agent}/runs", key, json={"input": text})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway")
    (folder / "gw.yaml").write_text(CONFIG)
    store = SQLiteKeyStore(folder / "ws" / "gateway.sqlite")
    keys = {
        "admin": store.create("ops", ["admin"])[1],
        "user": store.create(
            "acme", ["agents:echo", "agents:failing", "agents:crashing", "agents:slow"]
        )[1],
        "other": store.create("globex", ["agents:failing"])[1],
        "limited": store.create("tiny", ["agents:echo"], limits=Limits(requests="2/minute"))[1],
    }
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "AGENTLAB_WORKSPACE": str(folder / "other")}
    args = [sys.executable, "-m", "agentlab.cli", "serve", str(folder / "gw.yaml")]
    url = f"http://127.0.0.1:{port}"
    with running_process(
        [*args, "--port", str(port)], url + "/healthz", env=env, cwd=folder
    ) as process:
        yield Gateway(url, folder / "ws", keys, process.pid)


def assert_envelope(response: httpx.Response, status: int, kind: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "error_id"}
    assert body["error"]["type"] == kind and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_a_run_through_the_gateway(gateway: Gateway) -> None:
    response = gateway.run("echo", "hello")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["output"], body["agent"], body["version"]) == (
        "completed",
        "v2: hello",
        "echo",
        "2",  # the heaviest version
    )
    assert response.headers["X-RateLimit-Remaining"]
    state = gateway.get(f"/v1/runs/{body['run_id']}").json()
    assert state["status"] == "completed" and state["output"] == "v2: hello"
    assert gateway.get("/healthz", key=None).json()["agents"]["echo"] == ["1", "2"]


def test_auth_matrix(gateway: Gateway) -> None:
    secret = gateway.keys["user"].rsplit("_", 1)[1]
    user_id = gateway.keys["user"].split("_")[1]
    bad = [
        {},  # missing
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer agl_{user_id}_{'x' * 43}"},  # a real id, a wrong secret
        {"Authorization": f"Bearer agl_0123456789abcdef_{secret}"},  # an unknown id
        {"X-API-Key": "agl_nope"},
    ]
    bodies = set()
    for headers in bad:
        response = httpx.post(
            gateway.url + "/v1/agents/echo/runs", json={"input": "hi"}, headers=headers
        )
        assert_envelope(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        bodies.add(response.content)
    assert len(bodies) == 1  # nothing tells whether a key id exists
    ok = httpx.post(
        gateway.url + "/v1/agents/echo/runs",
        json={"input": "hi"},
        headers={"X-API-Key": gateway.keys["user"]},
    )
    assert ok.status_code == 200
    forbidden = gateway.run("echo", "hi", key="other")
    assert "agents:echo" in assert_envelope(forbidden, 403, "forbidden")["message"]
    # a scoped key asking for an agent it may not use: 403 whether or not it exists
    assert gateway.run("no_such_agent", "hi", key="other").status_code == 403
    assert_envelope(gateway.run("no_such_agent", "hi", key="admin"), 404, "not_found")
    # another client's run is as unknown as a made-up id
    run_id = ok.json()["run_id"]
    assert_envelope(gateway.get(f"/v1/runs/{run_id}", key="other"), 404, "not_found")
    assert gateway.get(f"/v1/runs/{run_id}", key="admin").status_code == 200


def test_admin_keys_routes_need_admin(gateway: Gateway) -> None:
    assert_envelope(gateway.get("/v1/admin/keys"), 403, "forbidden")
    created = gateway.post(
        "/v1/admin/keys", "admin", json={"owner": "new", "scopes": ["agents:echo"]}
    )
    assert created.status_code == 201, created.text
    new_key, record = created.json()["key"], created.json()["record"]
    listed = gateway.get("/v1/admin/keys", key="admin").json()
    assert record["id"] in [k["id"] for k in listed]
    assert new_key.rsplit("_", 1)[1] not in json.dumps(listed)
    gateway.keys["new"] = new_key
    assert gateway.run("echo", "hi", key="new").status_code == 200
    revoked = httpx.delete(
        f"{gateway.url}/v1/admin/keys/{record['id']}",
        headers={"Authorization": f"Bearer {gateway.keys['admin']}"},
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    # The worker that revoked it refuses it at once, the other within shared_state_ttl_s.
    time.sleep(0.4)
    for _ in range(6):  # both workers answer some
        assert_envelope(gateway.run("echo", "hi", key="new"), 401, "unauthorized")
    bad_scope = gateway.post("/v1/admin/keys", "admin", json={"owner": "x", "scopes": ["root"]})
    assert "unknown scope 'root'" in assert_envelope(bad_scope, 422, "invalid_request")["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind"),
    [
        (
            "POST",
            "/v1/agents/echo/runs",
            b'{"input": "hi", "metadata": {"x": NaN}}',
            422,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/agents/echo/runs",
            b'{"input": "hi", "metadata": {"x": -Infinity}}',
            422,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/agents/echo/runs",
            b'{"input": "hi", "input": "again"}',
            422,
            "invalid_request",
        ),
        ("POST", "/v1/agents/echo/runs", b'{"input": ', 422, "invalid_request"),
        ("POST", "/v1/agents/echo/runs", b"\xff\xfe", 422, "invalid_request"),
        ("POST", "/v1/agents/echo/runs", b"[1, 2]", 422, "invalid_request"),
        ("POST", "/v1/agents/echo/runs", b'{"input": ""}', 422, "invalid_request"),
        ("POST", "/v1/agents/echo/runs", b'{"input": "hi", "extra": 1}', 422, "invalid_request"),
        (
            "POST",
            "/v1/agents/echo/runs",
            b'{"input": "hi", "metadata": {"gateway": 1}}',
            422,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/agents/echo/runs",
            json.dumps({"input": "x" * 1001}).encode(),
            413,
            "payload_too_large",
        ),
        ("GET", "/v1/nowhere", None, 404, "not_found"),
        ("GET", "/v1/runs/0000", None, 404, "not_found"),
        ("PUT", "/v1/agents/echo/runs", b"{}", 405, "method_not_allowed"),
        ("POST", "/v1/runs/0000/resume", b"{}", 404, "not_found"),
    ],
)
def test_every_rejection_has_the_one_envelope(
    gateway: Gateway, method: str, path: str, body: bytes | None, status: int, kind: str
) -> None:
    response = httpx.request(
        method,
        gateway.url + path,
        content=body,
        headers={
            "Authorization": f"Bearer {gateway.keys['user']}",
            "Content-Type": "application/json",
        },
    )
    error = assert_envelope(response, status, kind)
    assert error["error_id"] is None
    if b"NaN" in (body or b""):
        assert "NaN" in error["message"]
    if status == 413:
        assert "1,000" in error["message"]


def test_rate_limit_is_429_in_the_envelope(gateway: Gateway) -> None:
    # memory:// counters are per worker: 2 workers take at most 2 x 2 (Redis: exactly 2)
    responses = [gateway.run("echo", "hi", key="limited") for _ in range(6)]
    refused = [r for r in responses if r.status_code == 429]
    assert 2 <= len(responses) - len(refused) <= 4 and refused
    for response in refused:
        assert_envelope(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["X-RateLimit-Remaining"] == "0"


def _worker_rss(pid: int) -> int:
    parent = psutil.Process(pid)
    return max(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def _raw_post(gateway: Gateway, head: str, chunks: Iterator[bytes]) -> bytes:
    """Send a request head and body chunks until the server answers or hangs up."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode())
        conn.settimeout(0.05)
        answer = b""
        for chunk in chunks:
            try:
                conn.sendall(chunk)
            except OSError:  # the server answered and closed
                break
            try:
                answer += conn.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        conn.settimeout(10)
        while b"}}" not in answer:
            data = conn.recv(65536)
            if not data:
                break
            answer += data
    return answer


def test_a_20_mb_body_is_refused_without_being_read(gateway: Gateway) -> None:
    before = _worker_rss(gateway.pid)
    auth = f"Authorization: Bearer {gateway.keys['user']}\r\n"
    megabyte = b"x" * (1 << 20)
    declared = _raw_post(
        gateway,
        "POST /v1/agents/echo/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {20 << 20}\r\n\r\n",
        iter([megabyte] * 20),
    )
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    assert b"65,536 bytes (max_body_bytes)" in declared
    chunked = _raw_post(
        gateway,
        "POST /v1/agents/echo/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{auth}Transfer-Encoding: chunked\r\n\r\n",
        iter([b"%x\r\n%s\r\n" % (len(megabyte), megabyte)] * 20),
    )
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
    assert _worker_rss(gateway.pid) - before < 15 << 20  # no worker buffered 20 MB
    assert gateway.get("/healthz", key=None).status_code == 200


def _stored(gateway: Gateway, run_id: str) -> dict:  # type: ignore[type-arg]
    run = TraceStore(gateway.workspace).run(run_id)
    assert run is not None
    return run


def _error_record(gateway: Gateway, error_id: str) -> dict:  # type: ignore[type-arg]
    rows = TraceStore(gateway.workspace).sql(
        "SELECT run_id, detail FROM alerts WHERE id = ?", [error_id]
    )
    assert rows, f"no error record {error_id}"
    return {"run_id": rows[0][0], **json.loads(rows[0][1])}


def test_a_failing_model_leaks_nothing(gateway: Gateway) -> None:
    response = gateway.run("failing", "hi")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed" and body["error_id"] in body["explanation"]
    assert not any(s in response.text for s in INTERNALS), response.text
    record = _error_record(gateway, body["error_id"])
    assert record["run_id"] == body["run_id"] and "/home/alice/.ssh" in record["message"]
    state = gateway.get(f"/v1/runs/{body['run_id']}")
    assert not any(s in state.text for s in INTERNALS), state.text
    assert state.json()["error_id"] == body["error_id"]


def test_a_crashed_run_has_its_real_id_and_is_failed_in_the_store(gateway: Gateway) -> None:
    response = gateway.run("crashing", "hi")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed" and body["error_id"]
    assert not any(s in response.text for s in INTERNALS), response.text
    stored = _stored(gateway, body["run_id"])  # the real run, not a made-up id
    assert stored["status"] == "failed" and body["error_id"] in stored["explanation"]
    record = _error_record(gateway, body["error_id"])
    assert record["type"] == "ValueError" and "Traceback" in record["traceback"]
    assert SECRET_TEXT.split(" with")[0] in record["message"]


def test_a_run_over_the_timeout_is_stopped_and_failed(gateway: Gateway) -> None:
    started = time.monotonic()
    response = gateway.run("slow", "10")
    assert time.monotonic() - started < 5
    body = response.json()
    assert body["status"] == "failed" and "1.5 s per run (run_timeout_s)" in body["explanation"]
    stored = _stored(gateway, body["run_id"])
    assert stored["status"] == "failed" and "run_timeout_s" in stored["explanation"]


def test_the_run_cap_answers_503_with_retry_after(gateway: Gateway) -> None:
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: gateway.run("slow", "0.8"), range(12)))
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 503]
    assert len(accepted) + len(refused) == 12
    assert 2 <= len(accepted) <= 4 and refused  # 2 workers x 2 slots
    for response in refused:
        assert_envelope(response, 503, "unavailable")
        assert response.headers["Retry-After"] == "1"
    assert gateway.run("slow", "0.01").status_code == 200  # slots come back


def test_malformed_payloads_leave_the_server_up(gateway: Gateway) -> None:
    payloads = [
        b"",
        b"{",
        b"null",
        b"[]",
        b'{"input": 5}',
        b"\x00" * 100,
        b'{"input": "\\ud800"}',
        b'{"input": "a"' + b', "metadata": {"a": 1e999}}',
        b"{" * 10000,
    ]
    for payload in payloads:
        response = httpx.post(
            gateway.url + "/v1/agents/echo/runs",
            content=payload,
            headers={
                "Authorization": f"Bearer {gateway.keys['user']}",
                "Content-Type": "application/json",
            },
        )
        assert response.status_code in (413, 422), (payload[:20], response.text)
        assert_envelope(response, response.status_code, response.json()["error"]["type"])
    assert gateway.run("echo", "still up").json()["output"] == "v2: still up"


def test_every_request_is_recorded_for_usage(gateway: Gateway) -> None:
    gateway.run("echo", "counted")
    rows = TraceStore(gateway.workspace).sql(
        "SELECT owner, agent, version, status_code FROM gateway_requests "
        "WHERE route = '/v1/agents/{agent}/runs'"
    )
    assert ("acme", "echo", "2", 200) in rows
    assert any(owner is None and status == 401 for owner, _, _, status in rows)
