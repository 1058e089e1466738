"""Run coroutines from synchronous code, including inside a running event loop.

A Jupyter cell already runs inside an event loop, so ``asyncio.run`` fails there.
Instead of patching the loop (nest_asyncio), every sync entry point submits its
coroutine to one private event loop in a daemon thread and waits for it. The same
loop serves every sync call, so objects bound to a loop (HTTP clients) stay valid
between calls.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="agentlab-sync-loop", daemon=True
            ).start()
            _loop = loop
        return _loop


def _after_fork_in_child() -> None:
    """A forked child has no copy of the loop's thread: start a new loop on first use
    (else its first sync call would wait forever for a loop that does not run)."""
    global _lock, _loop
    _lock = threading.Lock()
    _loop = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion and return its result, from any thread.

    Works both outside an event loop and inside one (a notebook cell). Must not be
    called from a coroutine already running on agentlab's own sync loop.
    """
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("run_sync() called from agentlab's sync loop; use `await` instead.")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise
