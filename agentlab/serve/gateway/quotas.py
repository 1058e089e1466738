"""Rate limits and daily budgets per API key and per agent.

Request rates are counted in moving windows (exact: no burst at a window boundary),
in memory for one worker or on Redis for several workers and machines
(:mod:`~agentlab.serve.gateway.quota_stores`).
Daily token and cost budgets are *reserved* before a run (the gateway reserves the
agent's per-run ceiling) and *settled* after it with what the run really used, so
concurrent requests can never spend more than the budget: an admission counts the
request and checks and books every counter it touches in one atomic step (one Lua
script on Redis, so one round trip; a lock in memory). Days are UTC days; a
settlement goes to the day its reservation was booked on.

Checks run in this order: the key's request rates, the agent's, then the budgets.
A request refused by a later check still counts against the rates it passed (it was
made). No key, admin keys included, bypasses anything: there is no flag for it.

Headers: ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (the rate limit with the
fewest requests left; ``Reset`` in epoch seconds, when a request is next allowed),
``X-Quota-Cost-Limit``/``-Remaining`` (USD) and ``X-Quota-Tokens-Limit``/
``-Remaining`` (the tighter of the key's and the agent's budgets), ``X-Quota-Reset``
(the next UTC midnight, epoch seconds); a refusal adds ``Retry-After`` (seconds).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time

from limits import RateLimitItem, parse_many
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentlab.errors import AgentlabError, UserError
from agentlab.serve.gateway.quota_stores import (
    Budget,
    MemoryQuotaStore,
    QuotaStore,
    RateWindow,
    RedisQuotaStore,
    budget_counter,
)

__all__ = ["Admission", "Limits", "QuotaExceeded", "Quotas"]

_NANO = 1_000_000_000  # costs are counted in integer nano-dollars: exact sums, no float drift


class Limits(BaseModel):
    """Limits of one API key or one agent; None: no limit of that kind.

    `requests` is in the `limits` notation, several separated by ``;``
    (``"10/second;600/minute"``); `tokens_per_day` counts input plus output tokens;
    `cost_per_day` is in US dollars. Days are UTC days.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: str | None = None
    tokens_per_day: int | None = Field(default=None, ge=0)
    cost_per_day: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @field_validator("requests")
    @classmethod
    def _valid_rates(cls, value: str | None) -> str | None:
        if value is not None:
            _rate_items(value)
        return value


class QuotaExceeded(AgentlabError):
    """A rate limit or a daily budget refused the request: answer 429.

    `message` says which limit and what to do, `retry_after_s` is the ``Retry-After``
    value, `headers` holds it too, with the remaining quota.
    """

    def __init__(self, message: str, retry_after_s: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers = {**headers, "Retry-After": str(retry_after_s)}


@dataclass
class Admission:
    """What :meth:`Quotas.admit` granted: the headers for the response, and the
    reservation :meth:`Quotas.settle` settles (once)."""

    headers: dict[str, str]
    key_id: str
    agent: str
    day: str  # the UTC day the reservation was booked on
    reserved_cost: float
    reserved_tokens: int
    settled: bool = field(default=False, repr=False)


class Quotas:
    """Request rates and daily budgets, in memory (``"memory://"``, one worker) or on
    Redis (``"redis://host:port/0"``, shared by every worker that names it).

    One instance per process and event loop (its Redis connections belong to the
    loop that first uses them); close it with :meth:`aclose`. `clock` gives the
    time that decides the UTC day (tests move it).
    """

    def __init__(
        self, storage_uri: str = "memory://", *, clock: Callable[[], float] = time.time
    ) -> None:
        self.storage_uri = storage_uri
        self._clock = clock
        scheme, sep, _ = storage_uri.partition("://")
        if not sep:
            raise UserError(
                f"quota storage {storage_uri!r} is not a URI: write 'memory://' (one worker) "
                "or 'redis://host:6379/0' (several workers)"
            )
        self._store: QuotaStore
        if scheme == "memory":
            self._store = MemoryQuotaStore()
        elif scheme in ("redis", "rediss"):
            self._store = RedisQuotaStore(storage_uri)
        else:
            raise UserError(
                f"quota storage {storage_uri!r}: only memory:// and redis:// (or rediss://) "
                "keep both rate limits and budgets; use one of them"
            )

    def __repr__(self) -> str:
        return f"Quotas({self.storage_uri!r})"

    async def admit(
        self,
        *,
        key_id: str,
        agent: str,
        key_limits: Limits,
        agent_limits: Limits,
        reserve_cost: float,
        reserve_tokens: int,
    ) -> Admission:
        """Count one request against the rates of `key_id` and `agent` and reserve
        `reserve_cost` USD and `reserve_tokens` tokens of their daily budgets; raise
        :class:`QuotaExceeded` when any limit refuses (nothing is reserved then)."""
        _check_admit(key_id, agent, key_limits, agent_limits, reserve_cost, reserve_tokens)
        now = self._clock()
        day = _day(now)
        amounts = _amounts(reserve_cost, reserve_tokens)
        budgets = [
            dataclasses.replace(b, amount=amounts[b.measure])
            for b in _budgets(day, key_id, agent, key_limits, agent_limits)
        ]
        for budget in budgets:
            if budget.limit is not None and budget.amount > budget.limit:
                raise QuotaExceeded(
                    f"this run reserves {_shown(budget.measure, budget.amount)} but the whole "
                    f"daily {budget.measure} budget of {budget.owner} is "
                    f"{_shown(budget.measure, budget.limit)}: it can never be admitted; lower "
                    f"the agent's per-run budget or raise {budget.measure}_per_day",
                    _until_midnight(now),
                    _budget_headers(budgets, None, now),
                )
        windows = _windows("key", key_id, key_limits) + _windows("agent", agent, agent_limits)
        verdict = await self._store.admit(windows, budgets)
        if verdict.refused_window is not None:
            window = windows[verdict.refused_window]
            remaining, reset = verdict.windows[-1]
            wait = max(1, math.ceil(reset - time.time()))
            raise QuotaExceeded(
                f"rate limit of {window.owner} reached: {window.item.amount} requests per "
                f"{_window(window.item)}; retry in {wait} s, or ask for a higher limit",
                wait,
                _rate_headers(window.item.amount, remaining, reset),
            )
        headers: dict[str, str] = {}
        if windows:  # the window with the fewest requests left
            (remaining, reset), window = min(
                zip(verdict.windows, windows, strict=True), key=lambda pair: pair[0][0]
            )
            headers = _rate_headers(window.item.amount, remaining, reset)
        headers.update(_budget_headers(budgets, verdict.used, now))
        if verdict.refused_budget is not None:
            budget, used = budgets[verdict.refused_budget], verdict.used or []
            left = max(0, (budget.limit or 0) - used[verdict.refused_budget])
            wait = _until_midnight(now)
            raise QuotaExceeded(
                f"the daily {budget.measure} budget of {budget.owner} cannot cover this run: "
                f"{_shown(budget.measure, left)} of {_shown(budget.measure, budget.limit or 0)} "
                f"is left (the rest spent or reserved by runs in progress) and this run "
                f"reserves {_shown(budget.measure, budget.amount)}; it resets at 00:00 UTC "
                f"(in {wait} s), or ask for a higher {budget.measure}_per_day",
                wait,
                headers,
            )
        return Admission(headers, key_id, agent, day, reserve_cost, reserve_tokens)

    async def settle(self, admission: Admission, *, cost: float, tokens: int) -> None:
        """Replace the admission's reservation by what the run used (`cost` USD, `tokens`
        tokens; a crashed run passes what it used before it crashed): the unused part
        returns to the budgets, an overrun is charged. Settle each admission once."""
        if not isinstance(admission, Admission):
            raise UserError(f"settle() takes the Admission admit() returned, not {admission!r}")
        if admission.settled:
            raise UserError("this admission was already settled: settle each one once")
        _check_amounts("cost", cost, "tokens", tokens)
        reserved = _amounts(admission.reserved_cost, admission.reserved_tokens)
        used = _amounts(cost, tokens)
        budgets = _budgets(admission.day, admission.key_id, admission.agent, None, None)
        deltas = [(b.counter, used[b.measure] - reserved[b.measure]) for b in budgets]
        admission.settled = True
        await self._store.adjust([(c, d) for c, d in deltas if d])

    async def aclose(self) -> None:
        """Close the Redis connections (nothing to do in memory)."""
        await self._store.aclose()


def _budgets(
    day: str, key_id: str, agent: str, key_limits: Limits | None, agent_limits: Limits | None
) -> list[Budget]:
    """The four daily counters of a request (cost and tokens of its key and its agent),
    with their limits (None where `*_limits` is None: settling checks nothing)."""
    budgets = []
    for scope, name, limits in (("key", key_id, key_limits), ("agent", agent, agent_limits)):
        owner = f"{scope} {name!r}"
        cost = None if limits is None else _units_or_none(limits.cost_per_day)
        tokens = None if limits is None else limits.tokens_per_day
        for measure, limit in (("cost", cost), ("tokens", tokens)):
            counter = budget_counter(day, scope, name, measure)
            budgets.append(Budget(counter, owner, measure, limit, 0))
    return budgets


def _units_or_none(cost: float | None) -> int | None:
    return None if cost is None else round(cost * _NANO)


def _amounts(cost: float, tokens: int) -> dict[str, int]:
    return {"cost": round(cost * _NANO), "tokens": tokens}


def _shown(measure: str, units: int) -> str:
    return f"${units / _NANO:.4f}" if measure == "cost" else f"{units:,} tokens"


def _budget_headers(budgets: list[Budget], used: list[int] | None, now: float) -> dict[str, str]:
    """Per measure, the limit with the least left (before booking when `used` is None)."""
    headers: dict[str, str] = {}
    for measure, name in (("cost", "Cost"), ("tokens", "Tokens")):
        left = [
            (b.limit - (used[i] if used is not None else 0), b.limit)
            for i, b in enumerate(budgets)
            if b.measure == measure and b.limit is not None
        ]
        if not left:
            continue
        remaining, limit = min(left)
        headers[f"X-Quota-{name}-Limit"] = _header_value(measure, limit)
        headers[f"X-Quota-{name}-Remaining"] = _header_value(measure, max(0, remaining))
    if headers:
        headers["X-Quota-Reset"] = str(_next_midnight(now))
    return headers


def _header_value(measure: str, units: int) -> str:
    return f"{units / _NANO:.6f}" if measure == "cost" else str(units)


def _rate_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(math.ceil(reset)),
    }


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).date().isoformat()


def _next_midnight(now: float) -> int:
    """The next 00:00 UTC after `now`, in epoch seconds."""
    moment = datetime.fromtimestamp(now, UTC)
    return int(datetime.combine(moment.date() + timedelta(days=1), dt_time(), UTC).timestamp())


def _until_midnight(now: float) -> int:
    """Whole seconds (at least 1) from `now` to the next 00:00 UTC."""
    return max(1, math.ceil(_next_midnight(now) - now))


@functools.lru_cache(maxsize=256)
def _rate_items(text: str) -> tuple[RateLimitItem, ...]:
    try:
        items = tuple(parse_many(text))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a rate limit: write '<count>/<second|minute|hour|day>', "
            "several separated by ';', e.g. '10/second;600/minute'"
        ) from None
    if not items:
        raise ValueError(f"{text!r} holds no rate limit: write e.g. '10/second;600/minute'")
    return items


def _windows(scope: str, name: str, limits: Limits) -> list[RateWindow]:
    items = () if limits.requests is None else _rate_items(limits.requests)
    return [RateWindow(item, scope, name, f"{scope} {name!r}") for item in items]


def _check_admit(
    key_id: str,
    agent: str,
    key_limits: Limits,
    agent_limits: Limits,
    reserve_cost: float,
    reserve_tokens: int,
) -> None:
    for name, value in (("key_id", key_id), ("agent", agent)):
        if not isinstance(value, str) or not value:
            raise UserError(f"admit({name}={value!r}): give a non-empty string")
    for name, limits in (("key_limits", key_limits), ("agent_limits", agent_limits)):
        if not isinstance(limits, Limits):
            raise UserError(f"admit({name}=...): give a quotas.Limits, not {limits!r}")
    _check_amounts("reserve_cost", reserve_cost, "reserve_tokens", reserve_tokens)


def _check_amounts(cost_name: str, cost: float, tokens_name: str, tokens: int) -> None:
    if (
        isinstance(cost, bool)
        or not isinstance(cost, int | float)
        or not math.isfinite(cost)
        or cost < 0
    ):
        raise UserError(f"{cost_name}={cost!r}: give a dollar amount of 0 or more")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise UserError(f"{tokens_name}={tokens!r}: give a whole number of tokens, 0 or more")
