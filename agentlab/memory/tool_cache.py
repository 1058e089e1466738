"""The tool-result cache as a layer of a tool's call chain.

A tool marked ``cache_ttl`` serves a second call with the same validated
arguments in the same session from short-term memory (see
:meth:`~agentlab.memory.session.RunMemory.cached`); failed calls are not cached.
"""

from __future__ import annotations

import time

from agentlab.tools.calls import ToolHandler, ToolInvocation, ToolOutcome

__all__ = ["cache_layer"]


async def cache_layer(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
    """Serve the call from the run's cache, or make it and keep a good result."""
    run = invocation.run
    memory = run.memory if run is not None else None
    tool, args = invocation.tool, invocation.args
    if memory is None or args is None:
        return await rest(invocation)
    hit = memory.cached(tool, args)
    if hit is not None:
        return ToolOutcome(
            "ok",
            str(hit["result"]),
            cache="hit",
            saved_cost=tool.cost,
            saved_latency_ms=hit.get("latency_ms"),
        )
    t0 = time.perf_counter()
    outcome = await rest(invocation)
    outcome.cache = "miss"
    if outcome.status == "ok":
        memory.cache(tool, args, outcome.content, (time.perf_counter() - t0) * 1000)
    return outcome
