"""The support demo: seed data, tools, scoring and the runner's text and JSON output."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence

import duckdb
import pytest
from pydantic import ValidationError

from agentlab.demo import QUESTIONS, create_demo_database, run_demo, support_tools
from agentlab.demo.runner import score_run
from agentlab.errors import ToolRetry
from agentlab.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from agentlab.models import FunctionModel


@pytest.fixture
def db(tmp_path):
    return create_demo_database(tmp_path / "shop.duckdb")


@pytest.fixture
def tools(db):
    return {t.name: t for t in support_tools(db)}


def _counts(path) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), "
            "(SELECT count(*) FROM shipments), (SELECT count(*) FROM orders "
            "WHERE total_usd IS NULL)"
        ).fetchall()
    finally:
        con.close()


def test_seed_is_idempotent(db):
    assert _counts(db) == [(8, 20, 13, 0)]
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM shipments; DELETE FROM order_items; DELETE FROM orders")
    con.close()
    assert _counts(db)[0][1] == 0
    assert create_demo_database(db) == db
    assert _counts(db) == [(8, 20, 13, 0)]
    assert sorted(p.name for p in db.parent.iterdir()) == ["shop.duckdb"]


def test_tools_return_the_rows(tools):
    assert tools["find_customer"]("Grace.Kim@example.com") == {
        "customer_id": "C-007",
        "name": "Grace Kim",
        "email": "grace.kim@example.com",
        "tier": "standard",
    }
    order = tools["get_order"]("O-1007")
    assert order["status"] == "shipped"
    assert order["total_usd"] == "93.50"  # 89.00 + 4.50, computed from the items
    assert order["items"] == ["1 x Mechanical keyboard", "1 x Keycap puller"]
    assert (order["carrier"], order["delivery_status"], order["eta"]) == (
        "DHL",
        "in transit",
        "2026-11-27",
    )
    pending = tools["get_order"]("O-1016")
    assert (pending["carrier"], pending["delivery_status"]) == (None, "not shipped yet")
    assert tools["get_order"]("O-1010")["delivery_status"] == "nothing to ship"
    assert [o["order_id"] for o in tools["list_orders"]("C-004")] == ["O-1015", "O-1004"]


def test_not_found_tells_the_model_how_to_fix_the_call(tools):
    with pytest.raises(ToolRetry, match=r"No order O-9999\. Order ids look like O-1001"):
        tools["get_order"]("O-9999")
    with pytest.raises(ToolRetry, match=r"No customer C-999\. .*find_customer"):
        tools["list_orders"]("C-999")
    with pytest.raises(ToolRetry, match=r"No customer has the email zed@example\.com"):
        tools["find_customer"]("zed@example.com")


def test_argument_formats_are_part_of_the_schema(tools):
    schema = tools["get_order"].definition.parameters["properties"]["order_id"]
    assert schema["pattern"] == "^O-[0-9]{4}$"
    assert "like O-1001" in schema["description"]
    with pytest.raises(ValidationError):
        tools["get_order"].validate('{"order_id": "1007"}')
    with pytest.raises(ValidationError):
        tools["list_orders"].validate('{"customer_id": "eve@example.com"}')


# -- the runner, with a scripted model ------------------------------------------------------

Reply = AssistantMessage | str
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _call(messages: Sequence[Message], name: str, **arguments: str) -> AssistantMessage:
    n = sum(len(m.tool_calls) for m in messages if isinstance(m, AssistantMessage))
    return AssistantMessage(
        tool_calls=(ToolCall(id=f"call_{n + 1}", name=name, arguments=json.dumps(arguments)),)
    )


def support_script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Reply:
    """A competent support agent: picks the tool from what the question names,
    chains find_customer -> list_orders, and answers with the last tool result."""
    question = next(m.content for m in messages if isinstance(m, UserMessage))
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        if email := _EMAIL.search(question):
            return _call(messages, "find_customer", email=email.group())
        if customer := re.search(r"C-\d{3}", question):
            return _call(messages, "list_orders", customer_id=customer.group())
        order = re.search(r"O-\d{4}", question)
        assert order, question
        return _call(messages, "get_order", order_id=order.group())
    last = results[-1]
    if last.name == "find_customer" and "orders" in question:
        return _call(messages, "list_orders", customer_id=json.loads(last.content)["customer_id"])
    return f"Here is what I found: {last.content}"


def wrong_about_o1003(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Reply:
    """Like support_script, but misreports the status of order O-1003."""
    reply = support_script(messages, tools)
    if isinstance(reply, str) and '"O-1003"' in reply:
        return "Order O-1003 was cancelled."
    return reply


def test_run_demo_text_report(workspace):
    out = io.StringIO()
    report = run_demo(model=FunctionModel(support_script, name="support"), out=out)
    text = out.getvalue()
    n = len(QUESTIONS)
    assert report["summary"]["accuracy"] == 1.0
    assert text.count("result:    CORRECT") == n
    assert f"[{n}/{n}] {QUESTIONS[-1].question}" in text
    assert 'find_customer(email="eve@example.com"), list_orders(customer_id="C-005")' in text
    assert re.search(r"accuracy +7/7 \(100%\)", text)
    assert "FROM tool_calls AS t" in text
    assert re.search(r"get_order +4 +0 ", text)
    assert (workspace / "demo" / "shop.duckdb").is_file()


def test_run_demo_json_report(workspace, capsys):
    report = run_demo(model=FunctionModel(support_script, name="support"), json_output=True)
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # exactly one JSON object on stdout
    assert data == json.loads(json.dumps(report))
    assert "[1/7]" in captured.err and "[1/7]" not in captured.out
    assert set(data) == {"runs", "summary", "sql"}
    assert len(data["runs"]) == len(QUESTIONS)
    first = data["runs"][0]
    assert first["tools_called"] == [
        {"tool": "get_order", "arguments": {"order_id": "O-1003"}, "ok": True}
    ]
    assert first["status"] == "completed" and first["correct"] is True
    assert first["steps"] == 2 and first["tokens_in"] > 0 and first["cost"] == 0.0
    summary = data["summary"]
    assert (summary["runs"], summary["completed"], summary["correct"]) == (7, 7, 7)
    assert summary["tool_call_accuracy"] == 1.0
    assert summary["tokens_in"] == sum(r["tokens_in"] for r in data["runs"])
    assert summary["latency_ms_p95"] == max(r["latency_ms"] for r in data["runs"])
    calls = {row[0]: row[1:3] for row in data["sql"]["rows"]}
    assert calls == {"get_order": [4, 0], "find_customer": [2, 0], "list_orders": [2, 0]}


def test_a_wrong_answer_lowers_accuracy(workspace):
    report = run_demo(model=FunctionModel(wrong_about_o1003, name="wrong"), out=io.StringIO())
    summary = report["summary"]
    assert summary["correct"] == 6
    assert summary["accuracy"] == round(6 / 7, 3)
    assert summary["tool_call_accuracy"] == 1.0
    wrong = report["runs"][0]
    assert (wrong["tool_calls_correct"], wrong["answer_correct"], wrong["correct"]) == (
        True,
        False,
        False,
    )


def test_a_failed_run_is_explained_not_raised(workspace):
    def broken(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Reply:
        raise ConnectionError("model server unreachable")

    out = io.StringIO()
    report = run_demo(model=FunctionModel(broken), questions=QUESTIONS[:2], out=out)
    assert [r["status"] for r in report["runs"]] == ["failed", "failed"]
    assert report["summary"]["accuracy"] == 0.0
    assert "What went wrong: the model scripted:function failed" in out.getvalue()
    assert "model server unreachable" in out.getvalue()
    assert "Traceback" not in out.getvalue()


def test_scoring_needs_every_expected_call_and_the_fact():
    two_step = QUESTIONS[-1]
    find = {"tool": "find_customer", "arguments": {"email": "eve@example.com"}, "ok": True}
    orders = {"tool": "list_orders", "arguments": {"customer_id": "C-005"}, "ok": True}
    assert score_run(two_step, [find, orders], "Your latest is o-1019.") == (True, True)
    assert score_run(two_step, [find], "O-1019") == (False, True)
    assert score_run(two_step, [find, orders], None) == (True, False)
    wrong_id = {**orders, "arguments": {"customer_id": "C-001"}}
    assert score_run(two_step, [find, wrong_id], "O-1019") == (False, True)


# -- the real local model -------------------------------------------------------------------


@pytest.mark.local_model
@pytest.mark.timeout(300)
def test_demo_on_the_local_model(workspace, allow_real_models, capsys):
    try:
        from agentlab.models.local import smollm2_path

        smollm2_path()
        import xllamacpp  # noqa: F401
    except Exception as exc:  # the module, its runtime or its weights are missing
        pytest.skip(f"the local model is not available: {exc}")
    report = run_demo(json_output=True)
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"runs", "summary", "sql"}
    assert data["summary"]["runs"] == len(QUESTIONS) == len(data["runs"])
    for run in data["runs"]:
        assert run["answer"] if run["status"] == "completed" else run["explanation"]
    assert report["summary"]["accuracy"] <= report["summary"]["tool_call_accuracy"]
