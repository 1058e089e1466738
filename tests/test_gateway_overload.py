"""The gateway under overload and bad payloads, over real HTTP: `agentlab serve` with 2
uvicorn workers sharing a real redis-server (tests/_redis.py) on 127.0.0.1.

* 2x overload: a key limited to N requests per minute gets 2N concurrent requests;
  exactly N are accepted (the issue's bar: within 1%) across both workers, the rest
  are 429s in the envelope with ``Retry-After``.
* Oversized bodies (20 MB, declared and chunked with no ``Content-Length``) and
  malformed payloads (bad JSON, NaN, wrong types, huge nesting, invalid UTF-8, huge
  numbers) are refused in the envelope, no worker dies, and a normal request
  succeeds after.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from _http import load_benchmark
from _redis import RedisServer

pytestmark = pytest.mark.timeout(300)

bench = load_benchmark("gateway")  # serve_gateway, AGENT

LIMIT = 200  # requests per minute for the limited key
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    config = {
        "default_key_limits": {"requests": "100000/minute"},
        "hygiene": {
            "max_body_bytes": MAX_BODY,
            "max_input_chars": 1000,
            "run_timeout_s": 10,
            "max_concurrent_runs": 4 * LIMIT,  # only the rate limit refuses
        },
        "agents": {"echo": {"versions": [{"version": "1", "factory": bench.AGENT}]}},
    }
    keys = {
        "user": {"owner": "acme", "scopes": ["agents:echo"]},
        "limited": {
            "owner": "tiny",
            "scopes": ["agents:echo"],
            "limits": {"requests": f"{LIMIT}/minute"},
        },
    }
    with RedisServer() as redis:
        config["redis_url"] = redis.url
        with bench.serve_gateway(
            tmp_path_factory.mktemp("overload"), config, keys, workers=2
        ) as server:
            yield server


def assert_envelope(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "error_id"}
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


async def _burst(url: str, headers: dict[str, str], n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.post(url, json={"input": f"hi {i}"}, headers=headers) for i in range(n))
            )
        )


def test_rate_limit_is_exact_under_2x_overload_across_two_workers(gateway: Any) -> None:
    workers = gateway.workers()
    assert len(workers) == 2
    responses = asyncio.run(
        _burst(gateway.url + "/v1/agents/echo/runs", gateway.headers("limited"), 2 * LIMIT)
    )
    by_status: dict[int, int] = {}
    for response in responses:
        by_status[response.status_code] = by_status.get(response.status_code, 0) + 1
    accepted = by_status.get(200, 0)
    print(f"\n2x overload: {2 * LIMIT} requests, limit {LIMIT}/minute: {by_status}")
    assert LIMIT * 0.99 <= accepted <= LIMIT * 1.01, by_status
    assert accepted == LIMIT, by_status  # a moving window on Redis: exact
    assert by_status.get(429, 0) == 2 * LIMIT - accepted, by_status
    for response in responses:
        if response.status_code == 429:
            assert assert_envelope(response)["type"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["X-RateLimit-Remaining"] == "0"
    # another key is not held back by it
    ok = httpx.post(
        gateway.url + "/v1/agents/echo/runs", json={"input": "hi"}, headers=gateway.headers("user")
    )
    assert ok.status_code == 200, ok.text
    assert gateway.workers() == workers  # no worker died or was replaced


def _raw(gateway: Any, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send a request head, then body chunks until the server answers or hangs up;
    the answer's bytes."""
    port = int(gateway.url.rsplit(":", 1)[1])
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        conn.settimeout(0.05)
        for chunk in chunks:
            try:
                conn.sendall(chunk)
                answer += conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # the server answered and closed
                break
            if answer:
                break
        conn.settimeout(10)
        while b"}}" not in answer:
            try:
                data = conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
    return answer


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_20_mb_body_is_refused_in_the_envelope(gateway: Any, framing: str) -> None:
    megabyte = b"x" * (1 << 20)
    auth = f"Authorization: Bearer {gateway.keys['user']}\r\n".encode()
    head = b"POST /v1/agents/echo/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if framing == "chunked":
        head += auth + b"Transfer-Encoding: chunked\r\n\r\n"
        chunks = iter([b"%x\r\n%s\r\n" % (len(megabyte), megabyte)] * 20 + [b"0\r\n\r\n"])
    else:
        head += auth + b"Content-Length: %d\r\n\r\n" % (20 << 20)
        chunks = iter([megabyte] * 20)
    answer = _raw(gateway, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "payload_too_large"
    assert f"{MAX_BODY:,} bytes" in body["error"]["message"]


MALFORMED = {
    "bad JSON": b'{"input": "hi",}',
    "truncated": b'{"input": "hi"',
    "not an object": b'"hi"',
    "NaN in metadata": b'{"input": "hi", "metadata": {"score": NaN}}',
    "Infinity": b'{"input": "hi", "metadata": {"score": Infinity}}',
    "huge float": b'{"input": "hi", "metadata": {"score": 1e400}}',
    "huge integer": b'{"input": "hi", "metadata": {"n": ' + b"9" * 5000 + b"}}",
    "input a number": b'{"input": 42}',
    "input a list": b'{"input": ["hi"]}',
    "input null": b'{"input": null}',
    "metadata a string": b'{"input": "hi", "metadata": "x"}',
    "user a number": b'{"input": "hi", "user": 7}',
    "unknown field": b'{"input": "hi", "stream": true}',
    "deep nesting": b'{"input": "hi", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    "deep objects": b'{"input": "hi", "metadata": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
    "invalid UTF-8": b'{"input": "caf\xe9"}',
    "lone surrogate": b'{"input": "\\udc00 hi"}',
    "NUL bytes": b"\x00" * 64,
    "UTF-16": '{"input": "hi"}'.encode("utf-16"),
    "input too long": json.dumps({"input": "x" * 5000}).encode(),
}


def test_malformed_payloads_are_refused_in_the_envelope_and_the_server_stays_up(
    gateway: Any,
) -> None:
    workers = gateway.workers()
    headers = {**gateway.headers("user"), "Content-Type": "application/json"}
    answers: dict[str, int] = {}
    with httpx.Client(timeout=30) as client:
        for name, payload in MALFORMED.items():
            response = client.post(
                gateway.url + "/v1/agents/echo/runs", content=payload, headers=headers
            )
            answers[name] = response.status_code
            assert response.status_code in (413, 422), (name, response.status_code, response.text)
            error = assert_envelope(response)
            assert error["error_id"] is None, (name, error)  # refused, not a server error
            assert "Traceback" not in error["message"] and ".py" not in error["message"]
        print(f"\nmalformed payloads: {answers}")
        ok = client.post(
            gateway.url + "/v1/agents/echo/runs", json={"input": "after"}, headers=headers
        )
    assert ok.status_code == 200 and ok.json()["output"] == "echo: after", ok.text
    assert gateway.workers() == workers and all(psutil.pid_exists(p) for p in workers)
