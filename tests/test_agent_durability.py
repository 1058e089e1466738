"""A real agent run killed with SIGKILL keeps every step it completed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from agentlab.tracing import TraceStore

AGENT = textwrap.dedent("""
    import sys, time
    from agentlab import FunctionModel, ReActAgent, tool
    from agentlab.messages import AssistantMessage, ToolCall, ToolMessage

    @tool
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: The first number.
            b: The second number.
        '''
        if a == 4:  # step 4 hangs: the parent kills us here
            print("3 steps done", flush=True)
            time.sleep(600)
        return a + b

    def script(messages, tools):
        last = messages[-1]
        n = int(last.tool_call_id.split("_")[1]) + 1 if isinstance(last, ToolMessage) else 1
        return AssistantMessage(tool_calls=(
            ToolCall(id=f"call_{n}", name="add", arguments=f'{{"a": {n}, "b": 1}}'),))

    ReActAgent(FunctionModel(script), [add], trace=sys.argv[1], max_steps=10).run_sync("go")
""")


@pytest.mark.timeout(60)
def test_sigkilled_agent_run_keeps_completed_steps(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "3 steps done"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    store = TraceStore(tmp_path)
    tools = store.sql("select step, status, result from tool_calls order by step")
    assert tools == [(1, "ok", "2"), (2, "ok", "3"), (3, "ok", "4")]
    models = store.sql("select step, status from model_calls order by step")
    assert models == [(1, "ok"), (2, "ok"), (3, "ok"), (4, "ok")]  # step 4's call was made
    ((status, explanation),) = store.sql("select status, explanation from runs")
    assert status == "interrupted" and "stopped before it finished" in explanation
