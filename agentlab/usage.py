"""Token usage, per-model prices and cost."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "Usage"]


@dataclass(slots=True)
class Usage:
    """Tokens used by one or more model requests (a value: add, don't mutate)."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            requests=self.requests + other.requests,
        )


@dataclass(frozen=True)
class Price:
    """US dollars per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok
        ) / 1_000_000


FREE = Price(0.0, 0.0)

# Public list prices (USD per 1M tokens) for common hosted models; patterns use
# shell-style wildcards and the first match wins. Override with PriceTable.
DEFAULT_PRICES: Mapping[str, Price] = {
    "local:*": FREE,
    "scripted:*": FREE,
    "openai:gpt-4.1-mini*": Price(0.40, 1.60),
    "openai:gpt-4.1-nano*": Price(0.10, 0.40),
    "openai:gpt-4.1*": Price(2.00, 8.00),
    "openai:gpt-4o-mini*": Price(0.15, 0.60),
    "openai:gpt-4o*": Price(2.50, 10.00),
    "openai:o4-mini*": Price(1.10, 4.40),
}


class PriceTable:
    """Maps model names (``provider:name``) to prices.

    Entries given by the user take precedence over :data:`DEFAULT_PRICES`.
    A model with no known price has cost ``None`` (unknown), never a made-up 0.
    """

    def __init__(
        self, prices: Mapping[str, Price] | None = None, *, include_defaults: bool = True
    ) -> None:
        self._prices: dict[str, Price] = dict(prices or {})
        self._resolved: dict[str, Price | None] = {}
        if include_defaults:
            for pattern, price in DEFAULT_PRICES.items():
                self._prices.setdefault(pattern, price)

    def set(self, pattern: str, price: Price) -> None:
        """Add or replace the price for models matching `pattern`."""
        self._prices = {pattern: price, **{k: v for k, v in self._prices.items() if k != pattern}}
        self._resolved.clear()

    def price(self, model: str) -> Price | None:
        """The price for `model`, or ``None`` when unknown."""
        if model not in self._resolved:
            self._resolved[model] = self._prices.get(model) or next(
                (p for pattern, p in self._prices.items() if fnmatch.fnmatchcase(model, pattern)),
                None,
            )
        return self._resolved[model]

    def cost(self, model: str, usage: Usage) -> float | None:
        """Cost in USD of `usage` on `model`, ``None`` when the price is unknown."""
        price = self.price(model)
        return None if price is None else price.cost(usage)
