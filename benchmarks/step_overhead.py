"""Per-step overhead of the run loop: the 10-step scripted tool loop.

The scripted model calls ``add(a, b)`` ten times (3 tools offered), then answers:
11 model calls, 10 tool calls per run. Prints µs per step (one model call and the
tool calls it asked for) with tracing off (no production layers), with durable
tracing on, and in production: retry, circuit breaker, budget and redaction
layers on with durable tracing; then the time `import agentlab` takes. The last
line is JSON. With ``--repeat N`` the three set-ups are measured N times in turn and
the medians printed (a shared machine is noisy).

    python benchmarks/step_overhead.py [--runs 2000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from agentlab.agents import ReActAgent
from agentlab.budgets import Budget
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool

TOOL_CALLS = 10


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a * b


@tool
def negate(a: int) -> int:
    """Negate an integer.

    Args:
        a: The number.
    """
    return -a


CALLS = [
    AssistantMessage(
        tool_calls=(ToolCall(id=f"call_{i}", name="add", arguments=f'{{"a": {i}, "b": 1}}'),)
    )
    for i in range(TOOL_CALLS)
]
ANSWER = AssistantMessage(content="The sum is 10.")


def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    """Call add ten times, then answer (the count is read from the last call's id)."""
    last = messages[-1]
    done = int(last.tool_call_id.rsplit("_", 1)[1]) + 1 if isinstance(last, ToolMessage) else 0
    return CALLS[done] if done < TOOL_CALLS else ANSWER


async def _measure(agent: ReActAgent, runs: int) -> float:
    for _ in range(max(10, runs // 10)):  # warm up
        await agent.run("Add up the numbers.")
    steps = 0
    t0 = time.perf_counter()
    for _ in range(runs):
        result = await agent.run("Add up the numbers.")
        steps += result.steps
    elapsed = time.perf_counter() - t0
    assert result.ok and result.steps == TOOL_CALLS + 1, result
    return elapsed / steps * 1e6


def _import_seconds(statement: str) -> float:
    """Best of five cold imports in a fresh interpreter."""
    code = f"import time; t=time.perf_counter(); {statement}; print(time.perf_counter()-t)"
    return min(
        float(subprocess.check_output([sys.executable, "-c", code]).decode()) for _ in range(5)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are printed")
    args = parser.parse_args()
    model = FunctionModel(script)
    tools = [add, multiply, negate]
    bare = {"retry": None, "breaker": None, "alerts": None, "max_steps": 20}
    with tempfile.TemporaryDirectory() as workspace:
        from agentlab.tracing import TraceStore

        store = TraceStore(workspace)
        writer = store.writer(durable=True)
        agents = {
            "off": ReActAgent(model, tools, trace=False, **bare),
            "on": ReActAgent(model, tools, trace=writer, **bare),
            "prod": ReActAgent(
                model,
                tools,
                trace=writer,
                max_steps=20,
                budget=Budget(tokens=1_000_000, tool_calls=1000, wall_time=60),
            ),  # retries, breakers, loop alerts and redaction are on by default
        }
        measured: dict[str, list[float]] = {name: [] for name in agents}
        for _ in range(max(1, args.repeat)):
            for name, agent in agents.items():
                measured[name].append(asyncio.run(_measure(agent, args.runs)))
        off, on, prod = (statistics.median(measured[name]) for name in ("off", "on", "prod"))
        recorded = store.sql("select count(*) from tool_calls")[0][0]
    import_s = _import_seconds("import agentlab")
    api_s = _import_seconds("from agentlab import ReActAgent, tool")
    print(
        f"tracing off: {off:.1f} us/step; tracing on (durable): {on:.1f} us/step; "
        f"production (all layers, durable tracing): {prod:.1f} us/step; "
        f"{recorded} tool calls recorded; import agentlab: {import_s:.3f} s "
        f"(with ReActAgent and tool: {api_s:.3f} s)"
    )
    print(
        json.dumps(
            {
                "us_per_step_tracing_off": round(off, 1),
                "us_per_step_tracing_on": round(on, 1),
                "us_per_step_production": round(prod, 1),
                "import_agentlab_s": round(import_s, 3),
                "import_agent_api_s": round(api_s, 3),
                "steps_per_run": TOOL_CALLS + 1,
                "runs": args.runs,
                "repeat": max(1, args.repeat),
            }
        )
    )


if __name__ == "__main__":
    main()
