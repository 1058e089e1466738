"""Past one machine: two `agentlab serve` processes on different ports, each with its own
workspace (two machines: two trace stores), sharing one real redis-server.

* Limits are exact across both: a rate limit and a cost budget of one key, hit
  through both gateways at once.
* A run paused through A is resumed through B (sync, and async with its events read
  on B): B claims it from Redis, imports its trace and finishes it; A then answers
  its real end; a second resume gets 409; two concurrent resumes, through one
  gateway or two, let exactly one go on; a resume refused by a quota puts the run
  back; another client's key sees nothing of it anywhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _http import load_benchmark
from _redis import RedisServer
from gateway_fixtures.agents import refunds

from agentlab.serve.agent_app import RunResponse, UsageOut
from agentlab.serve.gateway.errors import ApiError
from agentlab.serve.gateway.paused_runs import PausedRuns, RunView
from agentlab.tracing import TraceStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

bench = load_benchmark("gateway")  # serve_gateway

FIXTURES = "gateway_fixtures.agents"
OUTCOME = "Outcome: refunded 42.0 on O-1"
RATE = 30  # requests per minute of the key "limited"
RESERVE = 0.01  # USD reserved per run
BUDGET_RUNS = 10  # the key "thrifty" can pay for this many runs at once
TIMEOUT = httpx.Timeout(30.0)
KEYS = {
    "user": {"owner": "acme", "scopes": ["agents:*"]},
    "other": {"owner": "globex", "scopes": ["agents:*"]},
    "tight": {"owner": "acme", "scopes": ["agents:refunds"], "limits": {"requests": "2/minute"}},
    "limited": {
        "owner": "tiny",
        "scopes": ["agents:echo"],
        "limits": {"requests": f"{RATE}/minute"},
    },
    "thrifty": {
        "owner": "thrifty",
        "scopes": ["agents:slow"],
        "limits": {"cost_per_day": RESERVE * BUDGET_RUNS},
    },
}


class Gateways:
    """Gateways A and B (`bench.Server`s), both knowing the keys of :data:`KEYS`."""

    def __init__(self, a: Any, b: Any, redis_url: str) -> None:
        self.a, self.b, self.redis_url = a, b, redis_url

    def call(self, server: Any, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, server.url + path, headers=server.headers(key), timeout=TIMEOUT, **kwargs
        )

    def events(self, server: Any, run_id: str, key: str = "user") -> list[tuple[str, Any]]:
        """The run's server-sent events through `server`, read to the end of the stream."""
        url = f"{server.url}/v1/runs/{run_id}/events"
        with httpx.stream("GET", url, headers=server.headers(key), timeout=TIMEOUT) as response:
            assert response.status_code == 200, response.read()
            text = "".join(response.iter_text())
        found = []
        for block in text.replace("\r\n", "\n").split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
            if "event" in lines:
                found.append((lines["event"], json.loads(lines["data"])))
        return found


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    agents = {
        name: {"versions": [{"version": "1", "factory": f"{FIXTURES}:{name}"}]}
        for name in ("echo", "slow", "refunds")
    }
    config: dict[str, Any] = {
        "agents": agents,
        "default_key_limits": {"requests": "100000/minute"},
        "reserve_cost_per_run": RESERVE,
        "hygiene": {"run_timeout_s": 20, "max_concurrent_runs": 100},
    }
    with RedisServer() as redis:
        config["redis_url"] = redis.url
        with (
            bench.serve_gateway(tmp_path_factory.mktemp("a"), config, KEYS) as a,
            # the keys are on Redis: B accepts them without a key store of its own
            bench.serve_gateway(tmp_path_factory.mktemp("b"), config, {}) as b,
        ):
            b.keys = a.keys
            assert a.workspace != b.workspace
            yield Gateways(a, b, redis.url)


async def _post(sent: list[tuple[Any, dict[str, Any]]], path: str, key: str) -> list[Any]:
    """POST every (server, body) at once: (server, response) pairs."""
    limits = httpx.Limits(max_connections=len(sent), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT) as client:
        responses = await asyncio.gather(
            *(client.post(s.url + path, json=body, headers=s.headers(key)) for s, body in sent)
        )
    return [(s, r) for (s, _), r in zip(sent, responses, strict=True)]


async def _spread(gw: Gateways, path: str, key: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """POST each body at once, alternately through A and B: (server, response) pairs."""
    return await _post([(gw.a if i % 2 == 0 else gw.b, b) for i, b in enumerate(bodies)], path, key)


def _statuses(pairs: list[Any]) -> Counter[int]:
    return Counter(r.status_code for _, r in pairs)


def test_a_rate_limit_is_exact_across_both_gateways(gateways: Gateways) -> None:
    path, share = "/v1/agents/echo/runs", RATE // 3
    # A third of the limit through each gateway, then both race for the rest: the last
    # third is all that is left, so each gateway counted what the other admitted.
    for name, gateway in (("a", gateways.a), ("b", gateways.b)):
        sent = [(gateway, {"input": f"{name} {i}"}) for i in range(share)]
        assert _statuses(asyncio.run(_post(sent, path, "limited"))) == {200: share}
    bodies = [{"input": f"hi {i}"} for i in range(3 * RATE - 2 * share)]
    pairs = asyncio.run(_spread(gateways, path, "limited", bodies))
    assert _statuses(pairs) == {200: RATE - 2 * share, 429: 2 * RATE}, _statuses(pairs)
    for _, response in pairs:
        if response.status_code == 429:
            assert response.json()["error"]["type"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1


def test_a_cost_budget_is_exact_across_both_gateways(gateways: Gateways) -> None:
    # each admitted run holds its reservation for 6 s (the slow agent sleeps): 40
    # requests at once through both gateways can reserve the budget only 10 times
    bodies = [{"input": "6"} for _ in range(4 * BUDGET_RUNS)]
    pairs = asyncio.run(_spread(gateways, "/v1/agents/slow/runs", "thrifty", bodies))
    assert _statuses(pairs) == {200: BUDGET_RUNS, 429: 3 * BUDGET_RUNS}, _statuses(pairs)
    for _, response in pairs:
        if response.status_code == 429:
            assert "daily cost budget" in response.json()["error"]["message"]
        else:
            assert response.json()["output"] == "slept 6.0"


def _pause(gw: Gateways, server: Any, key: str = "user") -> str:
    started = gw.call(server, "POST", "/v1/agents/refunds/runs", key, json={"input": "Refund O-1"})
    assert started.status_code == 200, started.text
    run = started.json()
    assert run["status"] == "paused" and run["pending"]["tool"] == "refund", run
    return str(run["run_id"])


def _resume(gw: Gateways, server: Any, run_id: str, key: str = "user") -> httpx.Response:
    return gw.call(server, "POST", f"/v1/runs/{run_id}/resume", key, json={"approve": True})


def _assert_whole_run_on(server: Any, run_id: str) -> None:
    store = TraceStore(server.workspace)
    run = store.run(run_id)
    assert run is not None
    assert (run["status"], run["output"], run["steps"]) == ("completed", OUTCOME, 3)
    assert run["metadata"]["gateway"]["owner"] == "acme"
    calls = store.sql(
        "SELECT step, tool, status FROM tool_calls WHERE run_id = ? ORDER BY step", [run_id]
    )
    assert calls == [(1, "lookup", "ok"), (2, "refund", "ok")]
    assert store.sql("SELECT count(*) FROM model_calls WHERE run_id = ?", [run_id]) == [(3,)]


def _assert_hidden_from_others(gw: Gateways, run_id: str) -> None:
    for server in (gw.a, gw.b):
        for method, path, body in (
            ("GET", f"/v1/runs/{run_id}", None),
            ("GET", f"/v1/runs/{run_id}/events", None),
            ("POST", f"/v1/runs/{run_id}/resume", {"approve": True}),
        ):
            answer = gw.call(server, method, path, "other", json=body)
            assert answer.status_code == 404, (server.url, path, answer.text)


def test_a_run_paused_through_a_is_resumed_through_b(gateways: Gateways) -> None:
    gw = gateways
    run_id = _pause(gw, gw.a)
    # B never saw it: it answers from Redis
    seen = gw.call(gw.b, "GET", f"/v1/runs/{run_id}", "user")
    assert seen.status_code == 200, seen.text
    assert seen.json()["status"] == "paused" and seen.json()["pending"]["tool"] == "refund"
    _assert_hidden_from_others(gw, run_id)

    resumed = _resume(gw, gw.b, run_id)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "completed"
    assert resumed.json()["output"] == OUTCOME
    assert resumed.json()["tools_called"] == ["lookup", "refund"]

    # A's own trace still has it paused; A answers how it really ended
    assert TraceStore(gw.a.workspace).run(run_id)["status"] == "paused"  # type: ignore[index]
    on_a = gw.call(gw.a, "GET", f"/v1/runs/{run_id}", "user").json()
    assert (on_a["status"], on_a["output"], on_a["pending"]) == ("completed", OUTCOME, None)
    _assert_whole_run_on(gw.b, run_id)
    on_b = gw.call(gw.b, "GET", f"/v1/runs/{run_id}", "user").json()
    assert (on_b["status"], on_b["output"], on_b["steps"]) == ("completed", OUTCOME, 3)

    again = _resume(gw, gw.a, run_id)
    assert again.status_code == 409, again.text
    assert again.json()["error"]["type"] == "conflict"
    assert "no longer waiting" in again.json()["error"]["message"]
    assert _resume(gw, gw.b, run_id).status_code == 409
    _assert_hidden_from_others(gw, run_id)


@pytest.mark.parametrize("through", ["a+b", "a+a"])
def test_of_two_concurrent_resumes_exactly_one_goes_on(gateways: Gateways, through: str) -> None:
    gw = gateways
    run_id = _pause(gw, gw.a)
    servers = [gw.a, gw.b] if through == "a+b" else [gw.a, gw.a]

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            f"{s.url}/v1/runs/{run_id}/resume",
                            json={"approve": True},
                            headers=s.headers("user"),
                        )
                        for s in servers
                    )
                )
            )

    answers = asyncio.run(both())
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    [done] = [r for r in answers if r.status_code == 200]
    assert done.json()["output"] == OUTCOME
    # the refund was made once
    refunds = 0
    for server in (gw.a, gw.b):
        store = TraceStore(server.workspace)
        refunds = max(
            refunds,
            store.sql(
                "SELECT count(*) FROM tool_calls WHERE run_id = ? AND tool = 'refund'", [run_id]
            )[0][0],
        )
    assert refunds == 1


def test_a_resume_refused_by_a_quota_puts_the_run_back(gateways: Gateways) -> None:
    gw = gateways
    run_id = _pause(gw, gw.a, key="tight")  # 1 of its 2 requests a minute
    _pause(gw, gw.a, key="tight")  # 2 of 2
    refused = _resume(gw, gw.b, run_id, key="tight")
    assert refused.status_code == 429, refused.text
    assert gw.call(gw.b, "GET", f"/v1/runs/{run_id}", "user").json()["status"] == "paused"
    resumed = _resume(gw, gw.b, run_id, key="user")  # the same client, another key
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["output"] == OUTCOME
    _assert_whole_run_on(gw.b, run_id)


def _wait_known(gw: Gateways, server: Any, run_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        answer = gw.call(server, "GET", f"/v1/runs/{run_id}", "user")
        if answer.status_code == 200 and answer.json()["status"] == status:
            return answer.json()  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)


def test_an_async_run_paused_through_a_streams_and_resumes_through_b(gateways: Gateways) -> None:
    gw = gateways
    accepted = gw.call(
        gw.a, "POST", "/v1/agents/refunds/runs", "user", json={"input": "Refund O-1", "async": True}
    )
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]
    assert [e for e, _ in gw.events(gw.a, run_id)] == ["step", "step", "paused"]
    _wait_known(gw, gw.b, run_id, "paused")  # shared once its background task ended

    # B has none of its steps: its stream ends at once with what Redis says
    [(event, state)] = gw.events(gw.b, run_id)
    assert event == "paused" and state["pending"]["tool"] == "refund", state
    assert state["run_id"] == run_id and state["input_tokens"] > 0
    _assert_hidden_from_others(gw, run_id)

    resumed = _resume(gw, gw.b, run_id)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["output"] == OUTCOME

    on_b = gw.events(gw.b, run_id)  # the whole run, from B's trace store
    assert [e for e, _ in on_b] == ["step", "step", "step", "end"]
    assert [(c["name"], c["status"]) for c in on_b[1][1]["tool_calls"]] == [("refund", "ok")]
    assert on_b[-1][1]["status"] == "completed" and on_b[-1][1]["output"] == OUTCOME
    on_a = gw.events(gw.a, run_id)  # A's two steps, then the end B shared
    assert [e for e, _ in on_a] == ["step", "step", "end"]
    assert on_a[-1][1]["status"] == "completed" and on_a[-1][1]["output"] == OUTCOME
    assert gw.call(gw.a, "GET", f"/v1/runs/{run_id}", "user").json()["status"] == "completed"
    _assert_whole_run_on(gw.b, run_id)
    assert _resume(gw, gw.a, run_id).status_code == 409


def test_only_paused_and_resumed_runs_go_to_redis(gateways: Gateways) -> None:
    import redis

    paused = _pause(gateways, gateways.a)
    done = gateways.call(gateways.a, "POST", "/v1/agents/echo/runs", "user", json={"input": "hi"})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    client = redis.Redis.from_url(gateways.redis_url, decode_responses=True)
    try:
        shared = set(client.keys("agentlab:gw:*"))
    finally:
        client.close()
    assert {f"agentlab:gw:paused:{paused}", f"agentlab:gw:state:{paused}"} <= shared
    assert not [k for k in shared if k.endswith(done.json()["run_id"])]


def test_a_late_publication_never_brings_back_a_claimed_run(
    gateways: Gateways, tmp_path: Path
) -> None:
    """An async run's background end publishes its pause after a fast resume through
    the same machine already took the run: Redis drops the stale publication."""
    agent = refunds()
    agent.trace = tmp_path / "a"
    gateway = {"key_id": "k", "owner": "acme", "agent": "refunds", "version": "1"}
    result = agent.run_sync("Refund O-1", metadata={"gateway": gateway})
    paused = RunResponse(
        run_id=result.run_id,
        status="paused",
        output=None,
        explanation=None,
        steps=result.steps,
        tools_called=list(result.tools_called),
        usage=UsageOut(input_tokens=5, output_tokens=3, total_tokens=8, requests=2),
        cost=0.0,
        latency_ms=1.0,
        pending=result.pending,
    )
    run_id = result.run_id

    async def scenario() -> None:
        a = PausedRuns(gateways.redis_url, tmp_path / "a", ttl_s=60)
        b = PausedRuns(gateways.redis_url, tmp_path / "b", ttl_s=60)
        local = RunView.of_row(TraceStore(tmp_path / "a").run(run_id) or {}, None)
        assert await a.view(run_id) is None  # not published yet
        first = await a.claim(run_id, local)  # a resume on A, from A's trace store
        assert (first.generation, first.payload) == (1, b"")
        await a.publish(paused, gateway, generation=0)  # the late background end
        view = await a.view(run_id)
        assert view is not None and view.status == "running", view
        with pytest.raises(ApiError) as refused:
            await b.claim(run_id, view)
        assert refused.value.status == 409
        await a.put_back(first)  # say its slot was full: as before the claim
        assert await a.view(run_id) is None
        second = await a.claim(run_id, local)
        assert second.generation == 2
        await a.publish(paused, gateway, generation=1)  # stale again: dropped
        assert (await a.view(run_id)).status == "running"  # type: ignore[union-attr]
        await a.publish(paused, gateway, generation=2)  # its resumption paused again
        shared = await b.view(run_id)
        assert shared is not None and shared.shared and shared.status == "paused"
        assert shared.gateway == gateway and shared.row["input_tokens"] == 5
        third = await b.claim(run_id, shared)  # B takes it with its trace
        assert third.generation == 3 and third.payload
        imported = TraceStore(tmp_path / "b").run(run_id)
        assert imported is not None and imported["status"] == "paused"
        await a.aclose()
        await b.aclose()

    asyncio.run(scenario())
