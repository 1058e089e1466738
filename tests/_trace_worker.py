"""Subprocess entry points for the trace store tests.

python tests/_trace_worker.py steps WORKSPACE RUN_ID     # steps until killed
python tests/_trace_worker.py bulk WORKSPACE PREFIX RUNS STEPS [SECONDS_PER_RUN]
python tests/_trace_worker.py query WORKSPACE STOP_FILE  # "ready", counts until STOP_FILE
python tests/_trace_worker.py ingest WORKSPACE
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from agentlab.events import ModelCallEvent, RunFinished, RunStarted, ToolCallEvent
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from agentlab.tracing import TraceStore, TraceWriter


def emit_step(writer: TraceWriter, run_id: str, step: int) -> None:
    """The model call and tool call of one step."""
    call = ToolCall(id=f"{run_id}-c{step}", name="add", arguments=f'{{"a": {step}, "b": 1}}')
    messages = (
        [UserMessage(content="add things")]
        if step == 1
        else [ToolMessage(tool_call_id=f"{run_id}-c{step - 1}", name="add", content=str(step))]
    )
    writer.emit(
        ModelCallEvent(
            id=f"{run_id}-m{step}",
            run_id=run_id,
            step=step,
            model="scripted",
            messages=messages,
            context_messages=step * 2 - 1,
            tools=["add"],
            response=AssistantMessage(tool_calls=(call,)),
            input_tokens=10 * step,
            output_tokens=step,
            cost=0.001,
            latency_ms=1.5,
            started_at=time.time(),
        )
    )
    writer.emit(
        ToolCallEvent(
            id=f"{run_id}-t{step}",
            run_id=run_id,
            step=step,
            tool="add",
            arguments=call.arguments,
            result=str(step + 1),
            latency_ms=0.1,
            started_at=time.time(),
        )
    )


def start(writer: TraceWriter, run_id: str) -> None:
    """The RunStarted event of a test run."""
    writer.emit(
        RunStarted(
            run_id=run_id, agent="adder", model="scripted", input="add", started_at=time.time()
        )
    )


def steps(workspace: str, run_id: str) -> None:
    writer = TraceStore(workspace).writer()
    start(writer, run_id)
    for step in range(1, 1000):
        emit_step(writer, run_id, step)
        print(f"step {step} done", flush=True)
        time.sleep(0.05)
    time.sleep(3600)


def bulk(workspace: str, prefix: str, runs: int, n_steps: int, pace: float) -> None:
    writer = TraceStore(workspace).writer()
    for i in range(runs):
        time.sleep(pace)
        run_id = f"{prefix}-{i}"
        start(writer, run_id)
        for step in range(1, n_steps + 1):
            emit_step(writer, run_id, step)
        writer.emit(
            RunFinished(
                run_id=run_id,
                status="completed",
                output="done",
                steps=n_steps,
                input_tokens=0,
                output_tokens=0,
                latency_ms=1.0,
                ended_at=time.time(),
            )
        )
    print("bulk done", flush=True)


def query(workspace: str, stop_file: str) -> None:
    store = TraceStore(workspace, lock_timeout=60)
    seen = []
    print("ready", flush=True)
    while not Path(stop_file).exists():
        rows = store.sql(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM model_calls),"
            " (SELECT count(*) FROM tool_calls)"
        )
        seen.append(list(rows[0]))
    print(json.dumps(seen), flush=True)


def ingest(workspace: str) -> None:
    print(TraceStore(workspace).ingest(), flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "steps":
        steps(args[0], args[1])
    elif command == "bulk":
        bulk(args[0], args[1], int(args[2]), int(args[3]), float(args[4]) if args[4:] else 0.0)
    elif command == "query":
        query(args[0], args[1])
    elif command == "ingest":
        ingest(args[0])
    else:
        raise SystemExit(f"unknown command {command!r}")
