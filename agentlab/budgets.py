"""Per-run limits: tokens, cost, steps, model calls, tool calls and wall time.

A :class:`Budget` is set on the agent (``Agent(..., budget=Budget(cost=0.05))``)
and can be overridden per run (``agent.run(q, budget=Budget(tokens=2000))``).
Each run keeps a :class:`BudgetTracker`. Limits are checked *before* a request is
sent, with the token counter's estimate of the input and the request's maximum
output, so the request that would cross a limit is never sent; and *after*, with
the real usage. Crossing one ends the run with status ``budget_exceeded`` and an
explanation naming the budget, what was spent, and what to change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Any

from agentlab.errors import BudgetExceededError, UserError
from agentlab.usage import Price, Usage

__all__ = ["UNCAPPED_OUTPUT", "Budget", "BudgetTracker"]

UNCAPPED_OUTPUT = 65_536
"""Above this many tokens left, a request's output is not capped by the budget."""


@dataclass(frozen=True)
class Budget:
    """Limits for one run; ``None`` means no limit.

    Args:
        tokens: input plus output tokens of every model request of the run
            (working-memory summaries included).
        cost: US dollars. Every model the run may call needs a price (an
            explicit ``Price(0, 0)`` for free ones): a cost limit cannot be kept
            with an unknown price.
        steps: steps (model calls of the loop, failed ones included); the agent's
            ``max_steps`` is this limit, reported with status ``max_steps``.
        model_calls: requests sent to model endpoints, retries and fallbacks included.
        tool_calls: tool calls, failed ones included.
        wall_time: seconds from the start of the run, waiting for retries included.
    """

    tokens: int | None = None
    cost: float | None = None
    steps: int | None = None
    model_calls: int | None = None
    tool_calls: int | None = None
    wall_time: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value <= 0:
                raise UserError(f"Budget({f.name}={value!r}): a limit must be positive, or None.")

    def merged(self, override: Budget | None) -> Budget:
        """This budget with the limits `override` sets taking precedence."""
        if override is None:
            return self
        changes = {f.name: getattr(override, f.name) for f in fields(override)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def limits(self) -> dict[str, float]:
        """The limits that are set, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    @classmethod
    def from_limits(cls, limits: dict[str, float]) -> Budget:
        """The budget whose :attr:`limits` are `limits` (as read back from JSON, where
        counts may come back as floats)."""
        real = ("cost", "wall_time")
        values: dict[str, Any] = {k: v if k in real else int(v) for k, v in limits.items()}
        return cls(**values)


_HINTS = {
    "tokens": "raise Budget(tokens=...) (on the agent, or per run with budget=), keep "
    "the context smaller (WorkingMemory(max_tokens=...)), or lower max_tokens.",
    "cost": "raise Budget(cost=...) (on the agent, or per run with budget=), route routine "
    "steps to a cheaper model, or lower max_tokens.",
    "model_calls": "raise Budget(model_calls=...), or fix what makes requests fail "
    "(retries and fallbacks count).",
    "tool_calls": "raise Budget(tool_calls=...), or make the tools' results more useful "
    "so the model needs fewer calls.",
    "wall_time": "raise Budget(wall_time=...), use a faster model, or lower the retry "
    "policy's waits.",
}


class BudgetTracker:
    """What one run has spent against its :class:`Budget`."""

    __slots__ = ("budget", "cost", "model_calls", "started", "tokens", "tool_calls")

    def __init__(self, budget: Budget, *, started: float | None = None) -> None:
        self.budget = budget
        self.started = time.monotonic() if started is None else started
        self.tokens = 0
        self.cost: float | None = 0.0
        self.model_calls = 0
        self.tool_calls = 0

    # -- time ----------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """When the wall-time budget runs out (``time.monotonic()`` seconds), if set."""
        limit = self.budget.wall_time
        return None if limit is None else self.started + limit

    def remaining_time(self) -> float | None:
        """Seconds left of the wall-time budget (None: no limit)."""
        deadline = self.deadline
        return None if deadline is None else deadline - time.monotonic()

    def check_time(self, doing: str) -> None:
        """Raise when the wall-time budget is spent (before starting `doing`)."""
        remaining = self.remaining_time()
        if remaining is not None and remaining <= 0:
            elapsed = time.monotonic() - self.started
            self._exceeded(
                "wall_time",
                f"the run's wall-time budget of {self.budget.wall_time:g} s is spent "
                f"({elapsed:.1f} s elapsed) before {doing}",
                elapsed,
            )

    # -- model requests ------------------------------------------------------------

    def before_model_call(
        self, model: str, price: Price | None, input_tokens: int, max_output: int | None
    ) -> int | None:
        """Check a request before it is sent; return the ``max_tokens`` to send.

        With a token or cost limit and no ``max_tokens`` setting, the request's
        output is capped at what the budget still allows once that is under
        :data:`UNCAPPED_OUTPUT` tokens (no model replies with more in one request).
        """
        budget = self.budget
        asked = max_output is not None  # the request's own max_tokens, not a budget's cap
        limit = budget.wall_time
        if limit is not None and self.started + limit - time.monotonic() <= 0:
            self.check_time(f"a request to {model}")  # raises (the text only when needed)
        if budget.model_calls is not None and self.model_calls >= budget.model_calls:
            self._exceeded(
                "model_calls",
                f"the run's budget of {budget.model_calls} model calls is used up "
                f"({self.model_calls} sent) before another request to {model}",
                self.model_calls,
            )
        if budget.tokens is not None:
            left = budget.tokens - self.tokens - input_tokens
            if left <= 0 or (max_output is not None and left < max_output):
                wanted = input_tokens + (max_output or 0)
                self._exceeded(
                    "tokens",
                    f"the next request to {model} could use {wanted:,} tokens "
                    f"({input_tokens:,} input estimated"
                    + (f" + {max_output:,} max output" if max_output else "")
                    + f") and only {budget.tokens - self.tokens:,} of the run's "
                    f"{budget.tokens:,}-token budget are left",
                    self.tokens,
                )
            if max_output is None and left < UNCAPPED_OUTPUT:
                max_output = left
        if budget.cost is not None:
            if price is None:
                raise UserError(
                    f"{model} has no price, so the run's cost budget cannot be kept. Add it "
                    "to the agent's PriceTable (Price(0, 0) for a free model)."
                )
            spent = self.cost or 0.0
            base = price.cost(Usage(input_tokens=input_tokens))
            left_usd = budget.cost - spent - base
            per_output = price.output_per_mtok / 1_000_000
            if not asked and per_output > 0:  # cap the output at what is still paid for
                affordable = int(left_usd / per_output) if left_usd > 0 else 0
                if affordable < UNCAPPED_OUTPUT:
                    max_output = affordable if max_output is None else min(max_output, affordable)
            worst = base + (max_output or 0) * per_output
            over = spent + worst - budget.cost > budget.cost * 1e-9  # not a rounding error
            if left_usd <= 0 or over or max_output == 0:
                self._exceeded(
                    "cost",
                    f"the next request to {model} could cost up to ${worst:.6f} "
                    f"({input_tokens:,} input tokens estimated"
                    + (f" + {max_output:,} max output" if max_output else "")
                    + f") and ${budget.cost - spent:.6f} of the run's ${budget.cost:g} "
                    "budget is left",
                    spent,
                )
        self.model_calls += 1
        return max_output

    def add_usage(self, usage: Usage, cost: float | None) -> None:
        """Count a request's real usage (the run calls this for every request)."""
        self.tokens += usage.input_tokens + usage.output_tokens
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    def check_spent(self) -> None:
        """After a request: raise when the real usage went over a limit."""
        budget = self.budget
        if budget.tokens is not None and self.tokens > budget.tokens:
            self._exceeded(
                "tokens",
                f"the run used {self.tokens:,} tokens, over its {budget.tokens:,}-token budget",
                self.tokens,
            )
        if budget.cost is not None and self.cost is not None and self.cost > budget.cost:
            self._exceeded(
                "cost",
                f"the run cost ${self.cost:.6f}, over its ${budget.cost:g} budget",
                self.cost,
            )

    # -- tools ---------------------------------------------------------------------

    def before_tool_call(self, tool: str) -> None:
        """Check and count a tool call before it runs."""
        budget = self.budget
        wall_time = budget.wall_time
        if wall_time is not None and self.started + wall_time - time.monotonic() <= 0:
            self.check_time(f"calling tool {tool!r}")  # raises (the text only when needed)
        limit = budget.tool_calls
        if limit is not None and self.tool_calls >= limit:
            self._exceeded(
                "tool_calls",
                f"the run's budget of {limit} tool calls is used up before calling {tool!r}",
                self.tool_calls,
            )
        self.tool_calls += 1

    # -- reporting -----------------------------------------------------------------

    def spent(self) -> dict[str, Any]:
        """What the run has spent, by budget (for the failure record)."""
        return {
            "tokens": self.tokens,
            "cost": self.cost,
            "model_calls": self.model_calls,
            "tool_calls": self.tool_calls,
            "wall_time": round(time.monotonic() - self.started, 3),
        }

    def _exceeded(self, name: str, what: str, spent: float) -> None:
        limit = getattr(self.budget, name)
        raise BudgetExceededError(what, budget=name, limit=limit, spent=spent, hint=_HINTS[name])
