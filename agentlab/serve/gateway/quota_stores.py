"""Where the gateway's quota counters live: one process's memory, or Redis.

A store answers one question per request, :meth:`QuotaStore.admit`: count the
request against its rate windows, in order, stopping at the first that is full;
then, if every window had room, book the request's budget reservations if each stays
within its limit. Both parts happen in one atomic step: a lock in memory; one Lua
script, so one round trip, on Redis.

On Redis a rate window is a sorted set of the request times within it (the exact
moving window of the `limits` library, which the memory store uses): old times are
trimmed, the rest counted in O(log n) however high the limit is, and the time comes
from the Redis server, so every machine counts on one clock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from limits import RateLimitItem
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from agentlab.serve.gateway.redis_clients import async_redis

__all__ = ["Budget", "MemoryQuotaStore", "QuotaStore", "RateWindow", "RedisQuotaStore", "Verdict"]

DAY_TTL_S = 2 * 86_400 + 3_600  # a day's counters outlive the day a settlement may arrive on


@dataclass(frozen=True)
class RateWindow:
    """One request-rate limit of a key or an agent."""

    item: RateLimitItem
    scope: str  # "key" | "agent"
    name: str  # the key id or the agent's name
    owner: str  # "key 'k1'", "agent 'support'"

    @property
    def counter(self) -> str:
        """The window's name in the store."""
        return f"agentlab:rate:{self.scope}:{self.name}:{self.item.amount}/{self.seconds}"

    @property
    def seconds(self) -> int:
        """The window's length."""
        return int(self.item.get_expiry())


@dataclass(frozen=True)
class Budget:
    """One daily counter a request is checked against."""

    counter: str
    owner: str  # "key 'k1'", "agent 'support'"
    measure: str  # "cost" | "tokens"
    limit: int | None  # in counter units (nano-dollars, tokens)
    amount: int  # what this request reserves, in counter units


@dataclass
class Verdict:
    """What :meth:`QuotaStore.admit` decided.

    `windows` holds ``(remaining, reset)`` of each rate window that was checked
    (``reset``: epoch seconds when its oldest request leaves it); `refused_window`
    is the index of the full window (then nothing was booked). Otherwise
    `refused_budget` is the index of the budget that could not cover its amount
    (None: every amount was booked) and `used` every budget counter's value, after
    booking or as found on refusal."""

    windows: list[tuple[int, float]]
    refused_window: int | None = None
    refused_budget: int | None = None
    used: list[int] | None = None


class QuotaStore(Protocol):
    async def admit(self, windows: Sequence[RateWindow], budgets: Sequence[Budget]) -> Verdict:
        """Count the request against `windows` and book `budgets` (see the module)."""
        ...

    async def adjust(self, deltas: Sequence[tuple[str, int]]) -> None:
        """Add each delta to its budget counter."""
        ...

    async def aclose(self) -> None:
        """Let go of connections."""
        ...


class MemoryQuotaStore:
    """Counters of one process: the `limits` library's moving windows, and budget
    counters under a lock (not an asyncio one: nothing inside awaits, and it also
    guards threads)."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string("async+memory://"))
        self._lock = threading.Lock()
        self._days: dict[str, dict[str, int]] = {}

    async def admit(self, windows: Sequence[RateWindow], budgets: Sequence[Budget]) -> Verdict:
        stats: list[tuple[int, float]] = []
        for index, window in enumerate(windows):
            allowed = await self._limiter.hit(window.item, window.scope, window.name)
            reset, remaining = await self._limiter.get_window_stats(
                window.item, window.scope, window.name
            )
            stats.append((remaining, reset))
            if not allowed:
                return Verdict(stats, refused_window=index)
        with self._lock:
            values = [self._get(b.counter) for b in budgets]
            for index, (budget, value) in enumerate(zip(budgets, values, strict=True)):
                if budget.limit is not None and value + budget.amount > budget.limit:
                    return Verdict(stats, refused_budget=index, used=values)
            for budget in budgets:
                self._add(budget.counter, budget.amount)
            return Verdict(stats, used=[self._get(b.counter) for b in budgets])

    async def adjust(self, deltas: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            for counter, delta in deltas:
                self._add(counter, delta)

    async def aclose(self) -> None:
        pass

    def _get(self, counter: str) -> int:
        return self._days.get(_counter_day(counter), {}).get(counter, 0)

    def _add(self, counter: str, delta: int) -> None:
        day = _counter_day(counter)
        if day not in self._days:  # a new day: forget all but the last two
            self._days[day] = {}
            for old in sorted(self._days)[:-2]:
                del self._days[old]
        values = self._days[day]
        values[counter] = values.get(counter, 0) + delta


# KEYS: the rate windows, then the budget counters. ARGV: how many windows, the
# budgets' TTL (s); then each window's limit and length (s); then each budget's
# limit (-1: none) and amount. Times are microseconds of the server's clock; a
# window's members are "<time>:<count>", unique even within one microsecond.
# Returns {refused window, refused budget (0: none), then per window checked
# remaining and reset, then per budget its value}.
_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nwindows = tonumber(ARGV[1])
local out = {0, 0}
for i = 1, nwindows do
    local key = KEYS[i]
    local limit = tonumber(ARGV[1 + 2 * i])
    local span = tonumber(ARGV[2 + 2 * i]) * 1000000
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
    local count = redis.call('ZCARD', key)
    local full = count >= limit
    if not full then
        redis.call('ZADD', key, now, now .. ':' .. count)
        redis.call('PEXPIRE', key, math.ceil(span / 1000) + 1000)
        count = count + 1
    end
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    out[#out + 1] = limit - count
    out[#out + 1] = tonumber(oldest[2]) + span
    if full then
        out[1] = i
        return out
    end
end
local first = 3 + 2 * nwindows
local values = {}
for j = nwindows + 1, #KEYS do
    values[#values + 1] = tonumber(redis.call('GET', KEYS[j]) or '0')
end
for b = 1, #values do
    local limit = tonumber(ARGV[first + 2 * (b - 1)])
    if limit >= 0 and values[b] + tonumber(ARGV[first + 2 * b - 1]) > limit then
        out[2] = b
    end
    if out[2] ~= 0 then break end
end
if out[2] == 0 then
    for b = 1, #values do
        local key = KEYS[nwindows + b]
        values[b] = redis.call('INCRBY', key, ARGV[first + 2 * b - 1])
        redis.call('EXPIRE', key, ARGV[2])
    end
end
for b = 1, #values do
    out[#out + 1] = values[b]
end
return out
"""


class RedisQuotaStore:
    """Counters shared through Redis by every worker and machine that names it: one
    Lua script admits a request (one round trip), one pipeline settles it."""

    def __init__(self, uri: str) -> None:
        self._client = async_redis(uri, max_connections=64)
        self._admit = self._client.register_script(_ADMIT_LUA)

    async def admit(self, windows: Sequence[RateWindow], budgets: Sequence[Budget]) -> Verdict:
        args: list[Any] = [len(windows), DAY_TTL_S]
        for window in windows:
            args += [window.item.amount, window.seconds]
        for budget in budgets:
            args += [-1 if budget.limit is None else budget.limit, budget.amount]
        keys = [w.counter for w in windows] + [b.counter for b in budgets]
        out = [int(v) for v in await self._admit(keys=keys, args=args)]
        refused_window, refused_budget = out[0], out[1]
        checked = refused_window or len(windows)
        stats = [(out[2 + 2 * i], out[3 + 2 * i] / 1e6) for i in range(checked)]
        if refused_window:
            return Verdict(stats, refused_window=refused_window - 1)
        used = out[2 + 2 * checked :]
        return Verdict(
            stats, refused_budget=refused_budget - 1 if refused_budget else None, used=used
        )

    async def adjust(self, deltas: Sequence[tuple[str, int]]) -> None:
        if not deltas:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for counter, delta in deltas:
                pipe.incrby(counter, delta)
            await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()


def budget_counter(day: str, scope: str, name: str, measure: str) -> str:
    """The name of one daily budget counter."""
    return f"agentlab:quota:{day}:{scope}:{measure}:{name}"


def _counter_day(counter: str) -> str:
    return counter.split(":", 3)[2]
