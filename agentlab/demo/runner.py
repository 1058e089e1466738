"""``agentlab demo``: run the support agent on the demo questions and report.

Per run: the answer, steps, tool calls, tokens, cost, latency and whether it matched
the expectations; then a summary and a SQL query over the recorded traces. With
``json_output=True`` stdout gets exactly one JSON object and progress goes to stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from agentlab.agents import ReActAgent
from agentlab.demo.database import create_demo_database, demo_database_path
from agentlab.demo.questions import QUESTIONS, DemoQuestion
from agentlab.demo.support import build_support_agent
from agentlab.errors import AgentlabError
from agentlab.messages import AssistantMessage, Message, ToolMessage
from agentlab.models import Model
from agentlab.tracing import TraceStore
from agentlab.workspace import resolve_workspace

__all__ = ["TOOL_CALLS_SQL", "run_demo", "score_run", "tool_calls"]

TOOL_CALLS_SQL = """\
SELECT t.tool,
       count(*) AS calls,
       count(*) FILTER (WHERE t.status <> 'ok') AS errors,
       round(avg(t.latency_ms), 2) AS avg_latency_ms
FROM tool_calls AS t
JOIN runs AS r USING (run_id)
WHERE r.metadata->>'demo_session' = $session
GROUP BY t.tool
ORDER BY calls DESC, t.tool"""

_SQL_COLUMNS = ("tool", "calls", "errors", "avg_latency_ms")

# Every question needs at most two tool calls and an answer; one spare step lets
# the model correct a call, and the bound keeps the demo within minutes on a CPU.
MAX_STEPS = 4


def run_demo(
    *,
    model: Model | str = "local:smollm2",
    workspace: str | os.PathLike[str] | None = None,
    json_output: bool = False,
    questions: Sequence[DemoQuestion] | None = None,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Run the support agent on each question and print a report to `out`.

    The shop database is (re)created in the workspace (`workspace`, else the
    project's: :func:`~agentlab.workspace.resolve_workspace`) and every run is traced there.
    Returns the report: ``{"runs": [...], "summary": {...}, "sql": {...}}``, which is
    also what ``json_output=True`` prints. A run that fails is reported with its
    plain-language explanation; nothing here raises for a failed run.
    """
    out = out if out is not None else sys.stdout
    progress = sys.stderr if json_output else out
    questions = QUESTIONS if questions is None else tuple(questions)
    ws = resolve_workspace(workspace)
    db_path = create_demo_database(demo_database_path(ws))
    store = TraceStore(ws)
    agent = build_support_agent(model, db_path=db_path, trace=store, max_steps=MAX_STEPS)
    session = uuid.uuid4().hex
    if not json_output:
        print(
            f"agentlab demo: support agent on {agent.model.name}, {len(questions)} "
            f"questions\n  database: {db_path}\n  traces:   {ws}\n",
            file=out,
        )

    runs = []
    for i, question in enumerate(questions, 1):
        if json_output:
            print(f"[{i}/{len(questions)}] {question.question}", file=progress, flush=True)
        record = _run_one(agent, question, session)
        runs.append(record)
        if json_output:
            verdict = "correct" if record["correct"] else f"not correct ({record['status']})"
            print(f"    {verdict}, {record['latency_ms'] / 1000:.1f} s", file=progress, flush=True)
        else:
            _print_run(i, len(questions), question, record, out)

    report: dict[str, Any] = {
        "runs": runs,
        "summary": _summary(runs, agent.model.name, ws, db_path),
        "sql": _query_traces(store, session),
    }
    if json_output:
        print(json.dumps(report, indent=2), file=out, flush=True)
    else:
        _print_summary(report["summary"], out)
        _print_sql(report["sql"], out)
    return report


def _run_one(agent: ReActAgent, question: DemoQuestion, session: str) -> dict[str, Any]:
    try:
        result = agent.run_sync(question.question, metadata={"demo_session": session})
    except Exception as exc:  # e.g. the trace store cannot be written: report, go on
        return {
            "question": question.question,
            "answer": None,
            "status": "failed",
            "explanation": "What went wrong: the run could not be carried out: "
            f"{type(exc).__name__}: {exc}\n"
            "What to do next: fix the problem above and run the demo again.",
            "steps": 0,
            "tools_called": [],
            "tokens_in": 0,
            "tokens_out": 0,
            "cost": None,
            "latency_ms": 0.0,
            "tool_calls_correct": False,
            "answer_correct": False,
            "correct": False,
        }
    calls = tool_calls(result.messages)
    tools_ok, answer_ok = score_run(question, calls, result.output if result.ok else None)
    return {
        "question": question.question,
        "answer": result.output,
        "status": result.status,
        "explanation": result.explanation,
        "steps": result.steps,
        "tools_called": calls,
        "tokens_in": result.usage.input_tokens,
        "tokens_out": result.usage.output_tokens,
        "cost": result.cost,
        "latency_ms": round(result.latency_ms, 1),
        "tool_calls_correct": tools_ok,
        "answer_correct": answer_ok,
        "correct": tools_ok and answer_ok,
    }


def tool_calls(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The tool calls in a run's messages: tool, parsed arguments and whether it
    succeeded."""
    failed = {m.tool_call_id: m.is_error for m in messages if isinstance(m, ToolMessage)}
    calls = []
    for message in messages:
        if isinstance(message, AssistantMessage):
            for call in message.tool_calls:
                try:
                    arguments = json.loads(call.arguments)
                except ValueError:
                    arguments = call.arguments
                calls.append(
                    {"tool": call.name, "arguments": arguments, "ok": failed.get(call.id) is False}
                )
    return calls


def score_run(
    question: DemoQuestion, calls: Sequence[dict[str, Any]], answer: str | None
) -> tuple[bool, bool]:
    """(every expected tool call was made, the answer contains the expected text)."""
    made = {(c["tool"], json.dumps(c["arguments"], sort_keys=True)) for c in calls}
    tools_ok = all(
        (e.tool, json.dumps(dict(e.arguments), sort_keys=True)) in made
        for e in question.expected_calls
    )
    answer_ok = question.answer_matches(answer)
    return tools_ok, answer_ok


def _summary(
    runs: list[dict[str, Any]], model: str, workspace: Path, db_path: Path
) -> dict[str, Any]:
    n = len(runs)
    latencies = sorted(r["latency_ms"] for r in runs)
    costs = [r["cost"] for r in runs]
    return {
        "model": model,
        "runs": n,
        "completed": sum(r["status"] == "completed" for r in runs),
        "correct": sum(r["correct"] for r in runs),
        "accuracy": round(sum(r["correct"] for r in runs) / n, 3) if n else 0.0,
        "tool_call_accuracy": round(sum(r["tool_calls_correct"] for r in runs) / n, 3)
        if n
        else 0.0,
        "tokens_in": sum(r["tokens_in"] for r in runs),
        "tokens_out": sum(r["tokens_out"] for r in runs),
        "cost": None if None in costs else sum(costs),
        "latency_ms_mean": round(sum(latencies) / n, 1) if n else 0.0,
        "latency_ms_p95": latencies[math.ceil(0.95 * n) - 1] if n else 0.0,
        "workspace": str(workspace),
        "database": str(db_path),
    }


def _query_traces(store: TraceStore, session: str) -> dict[str, Any]:
    try:
        rows = store.sql(TOOL_CALLS_SQL, {"session": session})
    except AgentlabError as exc:
        return {
            "query": TOOL_CALLS_SQL,
            "params": {"session": session},
            "columns": list(_SQL_COLUMNS),
            "rows": [],
            "error": str(exc),
        }
    return {
        "query": TOOL_CALLS_SQL,
        "params": {"session": session},
        "columns": list(_SQL_COLUMNS),
        "rows": [list(row) for row in rows],
    }


# -- text output ------------------------------------------------------------------------


def _call_text(call: dict[str, Any]) -> str:
    args = call["arguments"]
    inner = (
        ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())
        if isinstance(args, dict)
        else str(args)
    )
    return f"{call['tool']}({inner})" + ("" if call["ok"] else " [failed]")


def _expected_text(question: DemoQuestion) -> str:
    calls = ", ".join(
        _call_text({"tool": e.tool, "arguments": dict(e.arguments), "ok": True})
        for e in question.expected_calls
    )
    return f"{calls}; answer contains {question.answer_contains!r}"


def _cost_text(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.6f}"


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if i else line for i, line in enumerate(text.splitlines()))


def _print_run(i: int, n: int, question: DemoQuestion, run: dict[str, Any], out: TextIO) -> None:
    pad = " " * 13
    if run["status"] == "completed":
        outcome = _indent(run["answer"] or "", pad)
    else:
        outcome = _indent(f"(run {run['status']})\n{run['explanation'] or ''}", pad)
    tools = ", ".join(_call_text(c) for c in run["tools_called"]) or "(none)"
    verdict = (
        "CORRECT"
        if run["correct"]
        else "WRONG ("
        + ", ".join(
            what
            for what, ok in (
                ("expected tool calls not made", run["tool_calls_correct"]),
                ("answer lacks the expected text", run["answer_correct"]),
            )
            if not ok
        )
        + ")"
    )
    print(
        f"[{i}/{n}] {question.question}\n"
        f"  answer:    {outcome}\n"
        f"  tools:     {tools}\n"
        f"  steps:     {run['steps']}   tokens: {run['tokens_in']} in / "
        f"{run['tokens_out']} out   cost: {_cost_text(run['cost'])}   "
        f"latency: {run['latency_ms'] / 1000:.2f} s\n"
        f"  expected:  {_expected_text(question)}\n"
        f"  result:    {verdict}\n",
        file=out,
        flush=True,
    )


def _percent(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "0/0"


def _print_summary(summary: dict[str, Any], out: TextIO) -> None:
    n = summary["runs"]
    rows = [
        ("model", summary["model"]),
        ("runs", str(n)),
        ("completed", _percent(summary["completed"], n)),
        (
            "accuracy",
            _percent(summary["correct"], n)
            + "  (expected tool calls made and answer contains the expected text)",
        ),
        ("tool-call accuracy", _percent(round(summary["tool_call_accuracy"] * n), n)),
        ("tokens", f"{summary['tokens_in']} in / {summary['tokens_out']} out"),
        ("cost", _cost_text(summary["cost"])),
        (
            "latency",
            f"mean {summary['latency_ms_mean'] / 1000:.2f} s, "
            f"p95 {summary['latency_ms_p95'] / 1000:.2f} s",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print("Summary", file=out)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}", file=out)
    print(file=out)


def _print_sql(sql: dict[str, Any], out: TextIO) -> None:
    print(
        "Tool calls of these runs, from the trace store "
        f"($session = {sql['params']['session']!r}):",
        file=out,
    )
    print(_indent("  " + sql["query"], "  "), file=out)
    print(file=out)
    if "error" in sql:
        print(f"  The trace store could not be queried: {sql['error']}", file=out)
    else:
        print(_indent("  " + _format_table(sql["columns"], sql["rows"]), "  "), file=out)
    out.flush()


def _format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as plain aligned text: text columns left-aligned, numbers right-aligned."""
    if not rows:
        return "  ".join(columns) + "\n(no rows)"
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(columns))]
    widths = [max(len(columns[i]), *(len(r[i]) for r in cells)) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])
