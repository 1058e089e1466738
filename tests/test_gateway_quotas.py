"""Gateway quotas: request rates (the `limits` library) and daily budgets reserved and
settled, in memory and on a real Redis, in one process and across two."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from _redis import RedisServer
from pydantic import ValidationError

from agentlab.errors import UserError
from agentlab.serve.gateway.quotas import Admission, Limits, QuotaExceeded, Quotas

NONE = Limits()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
async def quotas(request: pytest.FixtureRequest) -> AsyncIterator[Quotas]:
    uri = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    q = Quotas(uri)
    yield q
    await q.aclose()


def _key() -> str:
    """A key id of its own per test (the Redis server is shared by the module)."""
    return f"k-{uuid.uuid4().hex[:8]}"


async def _admit_many(
    q: Quotas, n: int, *, key: str, agent: str = "support", **kwargs: object
) -> list[Admission | QuotaExceeded]:
    params: dict[str, object] = {
        "key_limits": NONE,
        "agent_limits": NONE,
        "reserve_cost": 0.0,
        "reserve_tokens": 0,
        **kwargs,
    }

    async def one() -> Admission | QuotaExceeded:
        try:
            return await q.admit(key_id=key, agent=agent, **params)  # type: ignore[arg-type]
        except QuotaExceeded as exc:
            return exc

    return list(await asyncio.gather(*(one() for _ in range(n))))


def _split(results: list[Admission | QuotaExceeded]) -> tuple[list[Admission], list[QuotaExceeded]]:
    return (
        [r for r in results if isinstance(r, Admission)],
        [r for r in results if isinstance(r, QuotaExceeded)],
    )


async def test_100_concurrent_admits_never_overspend_a_budget(quotas: Quotas) -> None:
    key = _key()
    limits = Limits(cost_per_day=1.0, tokens_per_day=100_000)
    admitted, refused = _split(
        await _admit_many(quotas, 100, key=key, key_limits=limits, reserve_cost=0.1)
    )
    assert len(admitted) == 10 and len(refused) == 90
    exc = refused[0]
    assert "daily cost budget of key" in exc.message and "$0.0000 of $1.0000" in exc.message
    assert exc.headers["X-Quota-Cost-Remaining"] == "0.000000"
    assert exc.headers["X-Quota-Cost-Limit"] == "1.000000"
    # Settling returns what the runs did not use: 10 x 0.02 spent, 0.8 free again.
    for admission in admitted:
        await quotas.settle(admission, cost=0.02, tokens=50)
    admitted, _ = _split(
        await _admit_many(quotas, 100, key=key, key_limits=limits, reserve_cost=0.1)
    )
    assert len(admitted) == 8
    assert admitted[-1].headers["X-Quota-Tokens-Remaining"] == str(100_000 - 500)


async def test_tokens_budget_and_agent_budget_hold_across_keys(quotas: Quotas) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    agent_limits = Limits(tokens_per_day=1_000)
    results = []
    for _ in range(3):  # three clients share the agent's budget
        results += await _admit_many(
            quotas, 10, key=_key(), agent=agent, agent_limits=agent_limits, reserve_tokens=100
        )
    admitted, refused = _split(results)
    assert len(admitted) == 10
    assert f"daily tokens budget of agent {agent!r}" in refused[0].message
    assert refused[0].headers["X-Quota-Tokens-Remaining"] == "0"


async def test_rate_limit_is_exact_under_2x_overload(quotas: Quotas) -> None:
    key = _key()
    started = time.time()
    admitted, refused = _split(
        await _admit_many(quotas, 100, key=key, key_limits=Limits(requests="50/minute"))
    )
    assert len(admitted) == 50 and len(refused) == 50
    exc = refused[0]
    assert exc.message.startswith(f"rate limit of key {key!r} reached: 50 requests per minute")
    assert 1 <= exc.retry_after_s <= 60
    assert exc.headers["Retry-After"] == str(exc.retry_after_s)
    assert exc.headers["X-RateLimit-Limit"] == "50"
    assert exc.headers["X-RateLimit-Remaining"] == "0"
    assert started + 59 <= int(exc.headers["X-RateLimit-Reset"]) <= time.time() + 61


async def test_agent_rate_limit_counts_every_key(quotas: Quotas) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    results = []
    for _ in range(4):
        results += await _admit_many(
            quotas, 5, key=_key(), agent=agent, agent_limits=Limits(requests="6/minute")
        )
    admitted, refused = _split(results)
    assert len(admitted) == 6
    assert f"rate limit of agent {agent!r}" in refused[0].message


async def test_admission_headers_show_the_tightest_limits(quotas: Quotas) -> None:
    key = _key()
    key_limits = Limits(requests="10/minute;100/hour", cost_per_day=2.0, tokens_per_day=5_000)
    agent_limits = Limits(requests="1000/minute", cost_per_day=1.5)
    for _ in range(3):
        admission = await quotas.admit(
            key_id=key,
            agent=f"a-{key}",
            key_limits=key_limits,
            agent_limits=agent_limits,
            reserve_cost=0.25,
            reserve_tokens=400,
        )
    headers = admission.headers
    assert headers["X-RateLimit-Limit"] == "10" and headers["X-RateLimit-Remaining"] == "7"
    # The agent's budget has less left than the key's: $1.50 - 0.75 against $2.00 - 0.75.
    assert headers["X-Quota-Cost-Limit"] == "1.500000"
    assert headers["X-Quota-Cost-Remaining"] == "0.750000"
    assert headers["X-Quota-Tokens-Limit"] == "5000"
    assert headers["X-Quota-Tokens-Remaining"] == "3800"
    midnight = math.ceil(time.time() / 86_400) * 86_400
    assert int(headers["X-Quota-Reset"]) == midnight
    # Without limits there is nothing to show.
    bare = await quotas.admit(
        key_id=_key(),
        agent="x",
        key_limits=NONE,
        agent_limits=NONE,
        reserve_cost=1.0,
        reserve_tokens=10,
    )
    assert bare.headers == {}


async def test_a_reservation_larger_than_the_whole_budget_is_refused_saying_so(
    quotas: Quotas,
) -> None:
    limits = Limits(cost_per_day=0.5)
    admit = functools.partial(
        quotas.admit,
        key_id=_key(),
        agent="a",
        key_limits=limits,
        agent_limits=NONE,
        reserve_tokens=0,
    )
    with pytest.raises(QuotaExceeded) as caught:
        await admit(reserve_cost=0.75)
    assert "this run reserves $0.7500 but the whole daily cost budget of key" in str(caught.value)
    assert "can never be admitted" in caught.value.message
    assert caught.value.headers["X-Quota-Cost-Remaining"] == "0.500000"
    # Nothing was reserved: the whole budget is still there.
    admission = await admit(reserve_cost=0.5)
    assert admission.headers["X-Quota-Cost-Remaining"] == "0.000000"


async def test_settle_charges_what_the_run_used_overrun_and_crash_included(
    quotas: Quotas,
) -> None:
    key = _key()
    limits = Limits(cost_per_day=1.0)

    async def admit(cost: float) -> Admission:
        return await quotas.admit(
            key_id=key,
            agent="a",
            key_limits=limits,
            agent_limits=NONE,
            reserve_cost=cost,
            reserve_tokens=0,
        )

    first = await admit(0.5)
    await quotas.settle(first, cost=0.9, tokens=0)  # it ran over its reservation
    with pytest.raises(QuotaExceeded, match=r"\$0.1000 of \$1.0000 is left"):
        await admit(0.2)
    crashed = await admit(0.1)
    await quotas.settle(crashed, cost=0.03, tokens=0)  # what it used before crashing
    assert (await admit(0.07)).headers["X-Quota-Cost-Remaining"] == "0.000000"
    with pytest.raises(UserError, match="already settled"):
        await quotas.settle(crashed, cost=0.0, tokens=0)


async def test_budgets_reset_at_midnight_utc(redis_url: str) -> None:
    for uri in ("memory://", redis_url):
        now = [datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC).timestamp()]
        quotas = Quotas(uri, clock=lambda now=now: now[0])
        key, limits = _key(), Limits(tokens_per_day=100)
        params = dict(key_id=key, agent="a", key_limits=limits, agent_limits=NONE, reserve_cost=0.0)
        late = await quotas.admit(**params, reserve_tokens=100)  # type: ignore[arg-type]
        with pytest.raises(QuotaExceeded) as caught:
            await quotas.admit(**params, reserve_tokens=1)  # type: ignore[arg-type]
        assert caught.value.retry_after_s == 1  # one second to 00:00 UTC
        assert "resets at 00:00 UTC (in 1 s)" in caught.value.message
        now[0] += 2  # a new UTC day
        today = await quotas.admit(**params, reserve_tokens=60)  # type: ignore[arg-type]
        assert today.day == "2026-12-06"
        # Yesterday's run settles on yesterday: today's budget is not freed by it.
        await quotas.settle(late, cost=0.0, tokens=0)
        with pytest.raises(QuotaExceeded, match="40 tokens of 100 tokens is left"):
            await quotas.admit(**params, reserve_tokens=50)  # type: ignore[arg-type]
        await quotas.aclose()


def test_no_key_can_bypass_its_limits() -> None:
    """There is no flag to skip a budget or a rate: not on admit, not on Limits."""
    parameters = set(inspect.signature(Quotas.admit).parameters)
    assert parameters == {
        "self",
        "key_id",
        "agent",
        "key_limits",
        "agent_limits",
        "reserve_cost",
        "reserve_tokens",
    }
    assert set(Limits.model_fields) == {"requests", "tokens_per_day", "cost_per_day"}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Limits(bypass=True)  # type: ignore[call-arg]


async def test_an_admin_key_is_refused_like_any_other(quotas: Quotas) -> None:
    admitted, refused = _split(
        await _admit_many(
            quotas,
            3,
            key="admin-" + _key(),
            key_limits=Limits(cost_per_day=0.2),
            reserve_cost=0.1,
        )
    )
    assert len(admitted) == 2 and len(refused) == 1


async def test_bad_inputs_say_what_to_write() -> None:
    with pytest.raises(ValidationError, match="is not a rate limit: write"):
        Limits(requests="ten a second")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Limits(cost_per_day=-1)
    with pytest.raises(ValidationError):
        Limits(cost_per_day=float("nan"))
    with pytest.raises(UserError, match="only memory:// and redis://"):
        Quotas("mongodb://localhost")
    with pytest.raises(UserError, match="is not a URI"):
        Quotas("localhost:6379")
    quotas = Quotas()
    base = dict(key_id="k", agent="a", key_limits=NONE, agent_limits=NONE)
    with pytest.raises(UserError, match=r"reserve_cost=-0\.5: give a dollar amount"):
        await quotas.admit(**base, reserve_cost=-0.5, reserve_tokens=0)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"reserve_tokens=1\.5"):
        await quotas.admit(**base, reserve_cost=0.0, reserve_tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="key_limits"):
        await quotas.admit(  # type: ignore[arg-type]
            key_id="k",
            agent="a",
            key_limits={"requests": "1/second"},
            agent_limits=NONE,
            reserve_cost=0.0,
            reserve_tokens=0,
        )
    with pytest.raises(UserError, match="key_id=''"):
        await quotas.admit(**{**base, "key_id": ""}, reserve_cost=0.0, reserve_tokens=0)  # type: ignore[arg-type]
    admission = await quotas.admit(**base, reserve_cost=0.0, reserve_tokens=0)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="cost=nan"):
        await quotas.settle(admission, cost=float("nan"), tokens=0)


def _two_processes(redis_url: str, limits: Limits, attempts: int) -> list[int]:
    """How many of `attempts` concurrent admits (reserving $0.01 each) each of two
    processes got, on one key, both let go at the same moment once both are ready."""
    args = [__file__, redis_url, _key(), limits.model_dump_json(), str(attempts)]
    procs = [
        subprocess.Popen(
            [sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=5)
    assert [p.returncode for p in procs] == [0, 0]
    return [json.loads(o)["admitted"] for o in outputs]


def test_two_processes_sharing_redis_keep_rates_and_budgets_exact(redis_url: str) -> None:
    # 120 attempts against 50 requests a minute (2.4x overload).
    admitted = _two_processes(redis_url, Limits(requests="50/minute"), 60)
    assert sum(admitted) == 50  # exact whichever process wins the race
    # 120 runs reserving $0.01 against $0.30 a day.
    admitted = _two_processes(redis_url, Limits(cost_per_day=0.3), 60)
    assert sum(admitted) == 30


async def _compete(uri: str, key: str, limits: Limits, attempts: int) -> None:
    """One process of the two-process test: ready, then `attempts` concurrent admits on
    "go" (from stdin)."""
    quotas = Quotas(uri)
    await quotas.admit(
        key_id="warm-up",
        agent="warm-up",
        key_limits=NONE,
        agent_limits=NONE,
        reserve_cost=0.0,
        reserve_tokens=0,
    )
    print("ready", flush=True)
    sys.stdin.readline()
    results = await _admit_many(quotas, attempts, key=key, key_limits=limits, reserve_cost=0.01)
    admitted, _ = _split(results)
    print(json.dumps({"admitted": len(admitted)}))
    await quotas.aclose()


if __name__ == "__main__":
    url, key_id, limits_json, count = sys.argv[1:]
    asyncio.run(_compete(url, key_id, Limits.model_validate_json(limits_json), int(count)))
