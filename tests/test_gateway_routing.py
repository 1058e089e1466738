"""A/B routing between agent versions: sticky weighted assignment, runtime weights
shared by every worker (SQLite and Redis), breakers per version with fallbacks, and
the per-version comparison from the trace store."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _event_loop import ticks_while
from _redis import RedisServer
from fastapi.testclient import TestClient

from agentlab.agents import ReActAgent
from agentlab.errors import UserError
from agentlab.evals import compare_evals
from agentlab.messages import Message
from agentlab.models import FunctionModel
from agentlab.serve.gateway.ab import Router, bucket, compare_versions, pick
from agentlab.serve.gateway.app import create_gateway_app
from agentlab.serve.gateway.config import AgentConfig, GatewayConfig
from agentlab.serve.gateway.keys import ApiKey, SQLiteKeyStore
from agentlab.serve.gateway.shared_state import RedisState, SharedState, SQLiteState
from agentlab.serve.gateway.version_breakers import VersionBreakers, VersionBreakerSettings
from agentlab.serve.gateway.version_evals import version_report
from agentlab.tracing import TraceStore

pytestmark = pytest.mark.timeout(60)

ECHO = "gateway_fixtures.agents:echo"
ECHO_V2 = "gateway_fixtures.agents:echo_v2"
BROKEN = {"on": False}


def flaky() -> ReActAgent:
    """Answers `flaky: <input>`, or fails while BROKEN["on"] (no retries, no run-loop
    breaker: the version breaker is what is under test)."""

    def reply(messages: Sequence[Message], tools: Any) -> str:
        if BROKEN["on"]:
            raise RuntimeError("the model is down")
        return f"flaky: {messages[-1].content}"

    return ReActAgent(
        FunctionModel(reply, name="flaky"), name="flaky", max_retries=0, retry=None, breaker=None
    )


def key(owner: str = "acme", groups: tuple[str, ...] = ()) -> ApiKey:
    return ApiKey(
        id="0" * 16, owner=owner, scopes=("agents:*",), groups=groups, created_at=datetime.now(UTC)
    )


def agent_config(*versions: dict[str, Any]) -> AgentConfig:
    return AgentConfig.model_validate({"versions": list(versions)})


TWO = agent_config(
    {"version": "1", "factory": ECHO, "weight": 70},
    {"version": "2", "factory": ECHO_V2, "weight": 30, "fallback": "1"},
)


def router(state: SharedState, **kwargs: Any) -> Router:
    return Router({"echo": TWO}, state, **kwargs)


# -- assignment ------------------------------------------------------------------------


def test_bucket_is_stable_and_uniform() -> None:
    assert bucket("echo", "alice") == bucket("echo", "alice")
    assert bucket("echo", "alice") != bucket("other", "alice")
    points = [bucket("echo", f"user-{i}") for i in range(10_000)]
    assert all(0 <= p < 1 for p in points)
    assert sum(p < 0.5 for p in points) == pytest.approx(5_000, abs=200)


def test_pick_walks_the_cumulative_weights() -> None:
    weights = {"1": 1.0, "off": 0.0, "2": 3.0}
    assert [pick(weights, p) for p in (0.0, 0.24, 0.25, 0.99)] == ["1", "1", "2", "2"]
    assert pick({"1": 0.0}, 0.5) is None


def test_the_same_user_always_gets_the_same_version(tmp_path) -> None:
    r = router(SQLiteState(tmp_path / "gateway.sqlite"))
    for user in ("alice", "bob", "carol"):
        chosen = {r.choose("echo", key=key(), user=user).version for _ in range(1_000)}
        assert len(chosen) == 1
    # without a user id, the key's owner is the user
    owners = {r.choose("echo", key=key("globex"), user=None).version for _ in range(100)}
    assert owners == {r.choose("echo", key=key(), user="globex").version}


def test_the_split_follows_the_weights(tmp_path) -> None:
    r = router(SQLiteState(tmp_path / "gateway.sqlite"))
    split = Counter(r.choose("echo", key=key(), user=f"u{i}").version for i in range(10_000))
    assert split["1"] == pytest.approx(7_000, abs=250)
    assert split["2"] == pytest.approx(3_000, abs=250)


def test_a_weight_change_moves_only_the_users_it_must(tmp_path) -> None:
    r = router(SQLiteState(tmp_path / "gateway.sqlite"))
    users = [f"u{i}" for i in range(2_000)]
    before = {u: r.choose("echo", key=key(), user=u).version for u in users}
    r.set_weights("echo", {"1": 50, "2": 50}, who="ops")
    after = {u: r.choose("echo", key=key(), user=u).version for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert all(before[u] == "1" and after[u] == "2" for u in moved)  # 70/30 -> 50/50
    assert len(moved) == pytest.approx(400, abs=80)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"1": 1}, "give a weight for each"),
        ({"1": 1, "2": 1, "3": 1}, "unknown: ['3']"),
        ({"1": 0, "2": 0}, "at least one above 0"),
        ({"1": -1, "2": 1}, "finite numbers >= 0"),
        ({"1": float("nan"), "2": 1}, "finite numbers >= 0"),
    ],
)
def test_bad_weights_are_refused(tmp_path, weights, expected) -> None:
    with pytest.raises(UserError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        router(SQLiteState(tmp_path / "gateway.sqlite")).set_weights("echo", weights, who="ops")


# -- weights shared by workers ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def two_states(request, tmp_path) -> Iterator[tuple[SharedState, SharedState]]:
    """Two workers' views of one shared state (separate objects and connections)."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.sqlite"
        yield SQLiteState(path, ttl_s=0.2), SQLiteState(path, ttl_s=0.2)
        return
    with RedisServer() as server:
        yield RedisState(server.url, ttl_s=0.2), RedisState(server.url, ttl_s=0.2)


def test_a_weight_change_through_one_worker_reaches_the_other(two_states) -> None:
    first, second = (router(s) for s in two_states)
    assert second.weights("echo") == {"1": 70.0, "2": 30.0}
    entry = first.set_weights("echo", {"1": 0, "2": 100}, who="ops")
    assert (entry.who, entry.before, entry.after) == ("ops", None, {"1": 0.0, "2": 100.0})
    assert first.weights("echo") == {"1": 0.0, "2": 100.0}  # its own change: at once
    deadline = time.monotonic() + 2
    while second.weights("echo") != {"1": 0.0, "2": 100.0}:  # the other: within the TTL
        assert time.monotonic() < deadline, "the second worker never saw the new weights"
        time.sleep(0.05)
    assert {second.choose("echo", key=key(), user=f"u{i}").version for i in range(200)} == {"2"}
    audit = two_states[1].audit()
    assert [(a.action, a.name, a.who) for a in audit] == [("weights.put", "weights/echo", "ops")]


# -- breakers per version ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_version_is_taken_out_then_probed_back(tmp_path) -> None:
    from agentlab.resilience import InProcessBreakerStore

    clock = Clock()
    settings = VersionBreakerSettings(failures=3, window_s=60, cooldown_s=30)
    breakers = VersionBreakers(settings, InProcessBreakerStore(clock))
    r = Router(
        {
            "echo": agent_config(
                {"version": "1", "factory": ECHO, "weight": 0},
                {"version": "2", "factory": ECHO_V2, "weight": 1, "fallback": "1"},
            )
        },
        SQLiteState(tmp_path / "gateway.sqlite"),
        breakers=breakers,
    )
    for _ in range(3):
        choice = r.choose("echo", key=key(), user="alice")
        assert choice.version == "2" and choice.ticket is not None
        breakers.record("echo", "2", choice.ticket, failed=True)
    out = r.choose("echo", key=key(), user="alice")
    assert (out.version, out.assigned) == ("1", "2")
    assert "version 2's breaker is open" in out.reason
    clock.now += 31  # the cool-down: one probe goes to version 2
    probe = r.choose("echo", key=key(), user="alice")
    assert probe.version == "2" and probe.ticket is not None and probe.ticket.probe
    assert r.choose("echo", key=key(), user="bob").version == "1"  # the probe is out
    breakers.record("echo", "2", probe.ticket, failed=False)
    assert {r.choose("echo", key=key(), user=f"u{i}").version for i in range(50)} == {"2"}


def test_version_breakers_on_redis_are_shared_by_workers() -> None:
    settings = VersionBreakerSettings(failures=2, window_s=60, cooldown_s=30)
    with RedisServer() as server:
        one, two = (VersionBreakers.open(settings, server.url) for _ in range(2))
        assert VersionBreakers.open(settings, None).store is not one.store
        for _ in range(2):
            ticket = one.acquire("echo", "2")
            assert ticket is not None
            one.record("echo", "2", ticket, failed=True)
        assert two.acquire("echo", "2") is None  # the other worker sees it open
        assert two.acquire("echo", "1") is not None  # other versions are untouched
        assert two.snapshot()["echo"]["2"]["state"] == "open"


def test_a_worker_takes_a_closed_version_as_closed_for_the_ttl_only() -> None:
    settings = VersionBreakerSettings(failures=2, window_s=60, cooldown_s=30)
    with RedisServer() as server:
        one = VersionBreakers.open(settings, server.url, closed_ttl_s=0.3)
        two = VersionBreakers.open(settings, server.url, closed_ttl_s=0.3)
        assert two.acquire("echo", "2") is not None  # seen closed: remembered
        for _ in range(2):
            ticket = one.acquire("echo", "2")
            assert ticket is not None
            one.record("echo", "2", ticket, failed=True)
        assert one.acquire("echo", "2") is None  # the worker that failed knows at once
        assert two.acquire("echo", "2") is not None  # the other within the interval
        time.sleep(0.35)
        assert two.acquire("echo", "2") is None


def test_without_a_fallback_the_rest_share_the_traffic(tmp_path) -> None:
    breakers = VersionBreakers(VersionBreakerSettings(failures=1))
    three = agent_config(
        {"version": "a", "factory": ECHO, "weight": 1},
        {"version": "b", "factory": ECHO, "weight": 1},
        {"version": "c", "factory": ECHO, "weight": 1},
    )
    r = Router({"echo": three}, SQLiteState(tmp_path / "s.sqlite"), breakers=breakers)
    ticket = breakers.acquire("echo", "b")
    assert ticket is not None
    breakers.record("echo", "b", ticket, failed=True)
    split = Counter(r.choose("echo", key=key(), user=f"u{i}").version for i in range(3_000))
    assert set(split) == {"a", "c"} and split["a"] == pytest.approx(1_500, abs=150)


# -- through the app ---------------------------------------------------------------------


def gateway_config(workspace: Path, agents: dict[str, Any], **extra: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "workspace": str(workspace),
            "agents": agents,
            "default_key_limits": {"requests": "10000/second"},
            **extra,
        }
    )


@pytest.fixture()
def keys(tmp_path) -> dict[str, str]:
    store = SQLiteKeyStore(tmp_path / "ws" / "gateway.sqlite")
    return {
        "admin": store.create("ops", ["admin"])[1],
        "user": store.create("acme", ["agents:*"])[1],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_weights_change_at_runtime_across_two_app_instances(tmp_path, keys) -> None:
    cfg = gateway_config(
        tmp_path / "ws",
        {
            "echo": {
                "versions": [
                    {"version": "1", "factory": ECHO, "weight": 1},
                    {"version": "2", "factory": ECHO_V2, "weight": 0},
                ]
            }
        },
        shared_state_ttl_s=0.2,
    )
    with TestClient(create_gateway_app(cfg)) as one, TestClient(create_gateway_app(cfg)) as two:

        def versions(client: TestClient) -> set[str]:
            return {
                client.post(
                    "/v1/agents/echo/runs",
                    json={"input": "hi", "user": f"u{i}"},
                    headers=bearer(keys["user"]),
                ).json()["version"]
                for i in range(10)
            }

        assert versions(two) == {"1"}
        got = two.get("/v1/admin/agents/echo/weights", headers=bearer(keys["admin"])).json()
        assert got == {"agent": "echo", "weights": {"1": 1.0, "2": 0.0}, "overridden": False}
        changed = one.put(
            "/v1/admin/agents/echo/weights",
            json={"weights": {"1": 0, "2": 1}},
            headers=bearer(keys["admin"]),
        )
        assert changed.status_code == 200 and changed.json()["overridden"] is True
        time.sleep(0.25)
        assert versions(two) == {"2"}
        # refused changes: the one envelope, nothing changed
        bad = one.put(
            "/v1/admin/agents/echo/weights",
            json={"weights": {"1": 1, "9": 1}},
            headers=bearer(keys["admin"]),
        )
        assert bad.status_code == 422 and "unknown: ['9']" in bad.json()["error"]["message"]
        assert (
            one.put(
                "/v1/admin/agents/echo/weights", json={"weights": {}}, headers=bearer(keys["admin"])
            ).status_code
            == 422
        )
        assert (
            one.get("/v1/admin/agents/nope/weights", headers=bearer(keys["admin"])).status_code
            == 404
        )
        forbidden = one.put(
            "/v1/admin/agents/echo/weights",
            json={"weights": {"1": 1, "2": 0}},
            headers=bearer(keys["user"]),
        )
        assert forbidden.status_code == 403 and forbidden.json()["error"]["type"] == "forbidden"
        audit = one.get("/v1/admin/audit", headers=bearer(keys["admin"])).json()
        assert [(a["who"], a["before"], a["after"]) for a in audit] == [
            ("ops", None, {"1": 0.0, "2": 1.0})
        ]


def test_a_failing_version_falls_back_and_returns_after_the_cooldown(tmp_path, keys) -> None:
    cfg = gateway_config(
        tmp_path / "ws",
        {
            "svc": {
                "versions": [
                    {"version": "stable", "factory": ECHO, "weight": 0},
                    {
                        "version": "new",
                        "factory": f"{__name__}:flaky",
                        "weight": 1,
                        "fallback": "stable",
                    },
                ]
            }
        },
        version_breaker={"failures": 3, "window_s": 60, "cooldown_s": 0.5},
    )

    def run(client: TestClient, text: str) -> dict[str, Any]:
        answer = client.post(
            "/v1/agents/svc/runs", json={"input": text}, headers=bearer(keys["user"])
        )
        assert answer.status_code == 200
        return answer.json()

    BROKEN["on"] = True
    try:
        with TestClient(create_gateway_app(cfg)) as client:
            failed = [run(client, f"try {i}") for i in range(3)]
            assert [(f["version"], f["status"]) for f in failed] == [("new", "failed")] * 3
            fallback = run(client, "now")
            assert (fallback["version"], fallback["output"]) == ("stable", "echo: now")
            BROKEN["on"] = False
            time.sleep(0.6)  # the cool-down: the next request probes "new"
            probe = run(client, "probe")
            assert (probe["version"], probe["output"]) == ("new", "flaky: probe")
            assert {run(client, f"again {i}")["version"] for i in range(3)} == {"new"}
    finally:
        BROKEN["on"] = False
    store = TraceStore(tmp_path / "ws")
    row = store.run(fallback["run_id"])
    assert row is not None
    assert row["metadata"]["gateway"].items() >= {"version": "stable", "assigned": "new"}.items()
    table = compare_versions(store, "svc", "new", "stable", "none")
    new, stable, none = (table.rows[v] for v in ("new", "stable", "none"))
    assert (new["runs"], new["failed"], new["completion_rate"]) == (7, 3, pytest.approx(4 / 7))
    assert (stable["runs"], stable["failed"], stable["completion_rate"]) == (1, 0, 1.0)
    assert none["runs"] == 0 and none["p50_latency_ms"] is None
    assert new["p50_latency_ms"] <= new["p95_latency_ms"]
    assert "completion_rate" in str(table) and "stable" in str(table)
    later = compare_versions(store, "svc", "new", since=datetime.now(UTC) + timedelta(hours=1))
    assert later.rows["new"]["runs"] == 0
    with pytest.raises(UserError, match="name the versions"):
        compare_versions(store, "svc")


def picky() -> ReActAgent:
    """Answers `picky: <input>`, but fails on any input about a refund."""

    def reply(messages: Sequence[Message], tools: Any) -> str:
        text = str(messages[-1].content)
        if "refund" in text:
            raise RuntimeError("no refunds here")
        return f"picky: {text}"

    return ReActAgent(
        FunctionModel(reply, name="picky"), name="picky", max_retries=0, retry=None, breaker=None
    )


def test_versions_compare_through_the_eval_comparison(tmp_path, keys) -> None:
    cfg = gateway_config(
        tmp_path / "ws",
        {
            "svc": {
                "versions": [
                    {"version": "1", "factory": ECHO, "weight": 1},
                    {"version": "2", "factory": f"{__name__}:picky", "weight": 0},
                ]
            }
        },
        shared_state_ttl_s=0,
    )
    with TestClient(create_gateway_app(cfg)) as client:

        def ask(*texts: str) -> set[str]:
            versions = set()
            for text in texts:
                answer = client.post(
                    "/v1/agents/svc/runs", json={"input": text}, headers=bearer(keys["user"])
                )
                assert answer.status_code == 200, answer.text
                versions.add(answer.json()["version"])
            return versions

        assert ask("hello", "Hello  ", "refund please", "only one") == {"1"}
        moved = client.put(
            "/v1/admin/agents/svc/weights",
            json={"weights": {"1": 0, "2": 1}},
            headers=bearer(keys["admin"]),
        )
        assert moved.status_code == 200, moved.text
        assert ask("hello", "refund please", "new") == {"2"}
    store = TraceStore(tmp_path / "ws")
    one, two = version_report(store, "svc", "1"), version_report(store, "svc", "2")
    # "hello" and "Hello  " are one input: one case, its latest run.
    assert (one.metadata["runs"], len(one.results)) == (4, 3)
    assert one.metrics.task_completion_rate == 1.0
    assert two.metrics.task_completion_rate == pytest.approx(2 / 3)
    comparison = compare_evals(one, two, n_resamples=200)
    changes = {c.a.output if c.a else c.b.output: c.change for c in comparison.cases}  # type: ignore[union-attr]
    assert changes == {
        "echo: Hello  ": "passing",
        "echo: refund please": "regressed",
        "echo: only one": "only_a",
        "picky: new": "only_b",
    }
    assert (comparison.flips.regressed, comparison.flips.improved) == (1, 0)
    assert comparison.completion is not None and comparison.completion.cases == 2
    assert (comparison.completion.a, comparison.completion.b) == (1.0, 0.5)
    assert "regressed" in str(comparison)
    assert version_report(store, "svc", "3").results == []


async def test_a_slow_state_store_is_read_off_the_event_loop(tmp_path) -> None:
    state = SQLiteState(tmp_path / "s.sqlite", ttl_s=60)
    state.put("weights/echo", {"1": 1}, who="ops", action="set")
    read = state._read_all

    def slow() -> dict[str, str]:
        time.sleep(0.5)  # a stalled Redis
        return read()

    state._read_all = slow  # type: ignore[method-assign]
    _, ticks = await ticks_while(state.fresh())
    assert ticks >= 20  # the event loop went on while the state was read
    began = time.monotonic()
    assert state.get("weights/echo") == {"1": 1}  # from the cache: no read
    assert time.monotonic() - began < 0.1
    await state.fresh()  # still fresh: nothing to do
