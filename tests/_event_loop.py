"""For tests that check slow work stays off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

TICK_S = 0.01


async def ticks_while(work: Awaitable[T]) -> tuple[T, int]:
    """Await `work` while another task counts how often it gets the event loop (every
    :data:`TICK_S` if nothing blocks the loop): `work`'s result and that count."""
    ticks = 0

    async def other_requests() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(TICK_S)

    ticker = asyncio.create_task(other_requests())
    try:
        return await work, ticks
    finally:
        ticker.cancel()
