"""Real agent runs in several processes: a killed run keeps its completed steps, and
concurrent writers lose nothing while another process queries."""

from __future__ import annotations

import itertools
import json
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


WRITER = textwrap.dedent("""
    import sys
    from agentlab import FunctionModel, ReActAgent, tool
    from agentlab.messages import AssistantMessage, ToolCall, ToolMessage

    @tool
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: The first number.
            b: The second number.
        '''
        return a + b

    def script(messages, tools):
        last = messages[-1]
        n = int(last.tool_call_id.split("_")[1]) + 1 if isinstance(last, ToolMessage) else 1
        if n > 3:
            return "done"
        return AssistantMessage(tool_calls=(
            ToolCall(id=f"call_{n}", name="add", arguments=f'{{"a": {n}, "b": 1}}'),))

    agent = ReActAgent(FunctionModel(script), [add], trace=sys.argv[1], name=sys.argv[2])
    for _ in range(int(sys.argv[3])):
        assert agent.run_sync("go").ok
    print("ok", flush=True)
""")

READER = textwrap.dedent("""
    import json, pathlib, sys
    from agentlab.tracing import TraceStore

    store, stop, seen = TraceStore(sys.argv[1], lock_timeout=60), pathlib.Path(sys.argv[2]), []
    print("ready", flush=True)
    while not stop.exists():
        seen.append(store.sql("select (select count(*) from runs where status = 'completed'),"
                              " (select count(*) from model_calls),"
                              " (select count(*) from tool_calls)")[0])
    print(json.dumps(seen), flush=True)
""")


@pytest.mark.timeout(120)
def test_four_agent_processes_and_a_reader(tmp_path):
    writers, runs = 4, 150
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs = []
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(tmp_path), f"w{i}", str(runs)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(writers)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert (proc.returncode, out.strip()) == (0, "ok"), err
        stop.touch()
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
    finally:
        for proc in [*procs, reader]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    seen = json.loads(out)
    assert len(seen) >= 3, "the reader queried while the agents ran"
    for before, after in itertools.pairwise(seen):
        assert all(a >= b for a, b in zip(after, before, strict=True))
    total = writers * runs
    assert TraceStore(tmp_path).sql(
        "select (select count(*) from runs where status = 'completed'),"
        " (select count(*) from model_calls), (select count(*) from tool_calls),"
        " (select count(distinct agent) from runs)"
    ) == [(total, total * 4, total * 3, writers)]


def test_a_forked_child_can_run_agents_after_its_parent_did() -> None:
    """The sync entry points share a background loop thread, which a fork does not
    copy: a child (a preforking server's worker, a fork pool) starts its own."""
    import os
    import time

    from agentlab import FunctionModel, ReActAgent

    agent = ReActAgent(FunctionModel(lambda messages, tools: "hi"), trace=False)
    assert agent.run_sync("hello").output == "hi"  # the parent's loop thread is running
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if agent.run_sync("hello again").output == "hi" else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's run_sync hung")
        time.sleep(0.01)
    assert os.WIFEXITED(done[1]) and os.WEXITSTATUS(done[1]) == 0
