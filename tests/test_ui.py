"""HTML views of core objects, the run inspector and the approval widget (Python
level: widget state after calling the buttons' handlers)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Sequence
from html import escape

import pytest

from agentlab.agents import ReActAgent
from agentlab.agents.alerts import LoopAlerts
from agentlab.demo import build_support_agent
from agentlab.errors import MissingExtraError, ModelUnavailableError, UserError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel, RetryPolicy
from agentlab.resilience import BreakerConfig
from agentlab.tools import tool
from agentlab.tracing import TraceStore

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from agentlab.ui import ApprovalWidget, RunInspector


def support_script(
    messages: Sequence[Message], tools: Sequence[ToolDefinition]
) -> AssistantMessage:
    """Look order O-1003 up, then answer with its status."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        call = ToolCall(id="c1", name="get_order", arguments='{"order_id": "O-1003"}')
        return AssistantMessage(content="Let me look <b>that</b> up.", tool_calls=(call,))
    status = json.loads(results[-1].content)["status"]
    return AssistantMessage(content=f"Order O-1003 is {status}.")


@pytest.fixture
def agent(tmp_path):
    return build_support_agent(
        FunctionModel(support_script, name="support"),
        db_path=tmp_path / "shop.duckdb",
        trace=tmp_path / "ws",
    )


@pytest.fixture
def store(tmp_path):
    return TraceStore(tmp_path / "ws")


# -- _repr_html_ -------------------------------------------------------------------------


def test_tool_html_shows_the_schema_and_escapes():
    @tool
    def lookup(query: str) -> str:
        """Find <script>alert(1)</script> things.

        Args:
            query: what to look for, e.g. "a & b".
        """
        return query

    html = lookup._repr_html_()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    schema = json.dumps(lookup.definition.parameters, indent=2)
    assert f'<pre class="whole">{escape(schema)}</pre>' in html, "shown whole, never cut"
    assert "a &amp; b" in html


def test_agent_html_lists_model_tools_and_limits(agent):
    html = agent._repr_html_()
    assert "scripted:support" in html
    for name in ("find_customer", "get_order", "list_orders"):
        assert name in html
    assert "max_steps=6" in html


def test_run_step_and_result_html(agent):
    run = agent.start("Status of O-1003? <img src=x onerror=alert(1)>")
    assert "running" in run._repr_html_()
    step = run.step_sync()
    html = step._repr_html_()
    assert "tool_calls" in html and "get_order" in html
    assert "Let me look &lt;b&gt;that&lt;/b&gt; up." in html
    assert "<b>that</b>" not in html
    run.step_sync()
    assert run.done
    html = run._repr_html_()
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert "completed" in html and "Order O-1003 is delivered." in html
    result_html = run.result._repr_html_()
    assert "completed" in result_html and "get_order" in result_html


def test_failed_result_html_shows_the_explanation(tmp_path):
    agent = ReActAgent(
        FunctionModel(lambda m, t: AssistantMessage(content="")), trace=False, max_retries=0
    )
    result = agent.run_sync("hi")
    assert not result.ok
    html = result._repr_html_()
    assert "Why it stopped" in html and "What went wrong" in html


# -- RunInspector ------------------------------------------------------------------------


def test_inspector_follows_a_live_run_through_the_store(agent, store):
    run = agent.start("What is the status of order O-1003?")
    inspector = RunInspector(live_run=run)
    assert inspector.store.workspace == store.workspace
    assert inspector.rows == [] and not inspector.next_button.disabled
    assert "running" in inspector.summary.value

    inspector.next_button.click()  # step 1: model call + tool call
    assert [(r["kind"], r["name"]) for r in inspector.rows] == [
        ("model_call", "scripted:support"),
        ("tool_call", "get_order"),
    ]
    stored = store.steps(run.id)
    assert list(stored["id"]) == [r["id"] for r in inspector.rows]
    html = inspector.steps_view.value
    assert "model call" in html and "tool call" in html and "O-1003" in html
    assert "Let me look &lt;b&gt;that&lt;/b&gt; up." in html  # the stored reply, escaped
    assert not inspector.next_button.disabled
    assert len(inspector.chart.outputs) == 1
    assert "image/png" in inspector.chart.outputs[0]["data"]

    inspector.next_button.click()  # step 2: the answer
    assert run.done
    assert [r["step"] for r in inspector.rows] == [1, 1, 2]
    assert inspector.next_button.disabled
    assert "completed" in inspector.summary.value
    assert "Order O-1003 is delivered." in inspector.summary.value
    inspector.next_button.click()  # disabled: nothing happens
    assert len(run.steps) == 2


def test_run_to_end_steps_the_live_run_and_shows_each_step_while_it_runs(agent, store):
    run = agent.start("What is the status of order O-1003?")
    inspector = RunInspector(live_run=run)
    shown: list[str] = []
    inspector.message.observe(lambda change: shown.append(change["new"]), names="value")
    inspector.finish_button.click()
    assert run.done and run.status == "completed"
    assert [r["step"] for r in inspector.rows] == [1, 1, 2]
    running = [m for m in shown if "Running step" in m]
    assert ["step 1 of at most" in running[0], "step 2 of at most" in running[1]] == [True, True]
    assert inspector.message.value == ""
    assert inspector.finish_button.disabled and inspector.next_button.disabled


def test_inspector_lists_the_last_runs(agent, store):
    ids = [agent.run_sync(f"order O-1003, try {i}").run_id for i in range(3)]
    inspector = RunInspector(store, last=2)
    assert inspector.run_selector is not None
    assert [v for _, v in inspector.run_selector.options] == ids[:0:-1]
    assert inspector.run_id == ids[2]
    assert inspector.next_button.layout.display == "none"
    inspector.run_selector.value = ids[1]
    assert inspector.run_id == ids[1]
    assert {r["name"] for r in inspector.rows} == {"scripted:support", "get_order"}
    assert "try 1" in inspector.summary.value


def test_a_model_calls_row_shows_the_whole_conversation_and_the_tools_it_was_sent(agent):
    run = agent.run_sync("What is the status of order O-1003?")
    inspector = RunInspector(run_id=run.run_id, store=TraceStore(agent.tracer.workspace))
    second = [r for r in inspector.rows if r["kind"] == "model_call"][1]
    sent = json.loads(second["context"])
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert second["tools"] == agent.tool_names
    html = inspector.steps_view.value
    assert html.count('class="agentlab-sent"') == 2
    assert f"sent: 4 messages; tools: {', '.join(agent.tool_names)}" in html
    assert "What is the status of order O-1003?" in html.split("sent: 4 messages")[1]


def test_refresh_lists_runs_started_since(agent, store):
    first = agent.run_sync("order O-1003, first").run_id
    inspector = RunInspector(store, last=5)
    assert [v for _, v in inspector.run_selector.options] == [first]
    second = agent.run_sync("order O-1003, second").run_id
    inspector.refresh_button.click()
    assert [v for _, v in inspector.run_selector.options] == [second, first]
    assert inspector.run_id == first, "the shown run stays selected"


def test_a_completed_run_with_failed_tool_calls_says_so(tmp_path, store):
    @tool
    def get_order(order_id: str) -> str:
        """Look an order up.

        Args:
            order_id: The order id.
        """
        raise ConnectionError("the order service is down")

    def made_up(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        if not any(isinstance(m, ToolMessage) for m in messages):
            call = ToolCall(id="c1", name="get_order", arguments='{"order_id": "O-1003"}')
            return AssistantMessage(tool_calls=(call,))
        return AssistantMessage(content="Order O-1003 is on its way.")  # made up

    agent = ReActAgent(FunctionModel(made_up), [get_order], trace=tmp_path / "ws")
    run = agent.run_sync("What is the status of order O-1003?")
    assert run.status == "completed"
    summary = RunInspector(store, run_id=run.run_id).summary.value
    assert (
        '<span class="ok">completed</span> <span class="warn">with 1 failed tool call</span>'
        in (summary)
    )


def _png_width(png: bytes) -> int:
    return int.from_bytes(png[16:20], "big")


def test_the_chart_of_a_run_that_cost_nothing_has_no_empty_cost_axes(agent, store):
    inspector = RunInspector(store, run_id=agent.run_sync("order O-1003").run_id)
    assert inspector.run_row is not None and inspector.run_row["cost"] == 0
    unpriced = inspector.chart.outputs[0]["data"]["image/png"]
    from agentlab.ui.inspector import _chart_png

    priced = _chart_png([1, 2], {1: 0.01, 2: 0.02}, {1: 5.0, 2: 6.0})
    import base64

    assert _png_width(base64.b64decode(unpriced)) < _png_width(priced) * 0.7


def test_inspector_on_an_unknown_run(store):
    inspector = RunInspector(store, run_id="nope")
    assert inspector.rows == []
    assert "not found" in inspector.summary.value
    assert inspector.next_button.disabled


def test_import_names_the_notebook_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    for name in [m for m in sys.modules if m == "agentlab.ui" or m.startswith("agentlab.ui.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError) as info:
        import agentlab.ui  # noqa: F401
    assert info.value.extra == "notebook"
    assert "agentlab-toolkit[notebook]" in str(info.value)


# -- routing, breakers, alerts and failures in the views --------------------------------


def down(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    raise ModelUnavailableError("503 from the primary: overloaded")


def backup(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    """Ask for the same status twice (a loop alert), then answer."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if len(results) < 2:
        call = ToolCall(id=f"c{len(results)}", name="status", arguments='{"order_id": "O-1"}')
        return AssistantMessage(tool_calls=(call,))
    return AssistantMessage(content="O-1 is pending.")


@tool
def status(order_id: str) -> str:
    """The status of an order.

    Args:
        order_id: The order id.
    """
    return "pending"


def resilient_agent(workspace) -> ReActAgent:  # type: ignore[no-untyped-def]
    """Primary model down: retried, then the breaker opens; a backup serves; a loop alert."""
    return ReActAgent(
        FunctionModel(down, name="primary"),
        [status],
        trace=workspace,
        retry=RetryPolicy(2, initial=0.02),
        breaker=BreakerConfig(failure_threshold=2, cooldown_s=60),
        fallback=[FunctionModel(backup, name="backup")],
        alerts=LoopAlerts(repeat=2),
    )


def test_inspector_shows_attempts_routing_breakers_and_alerts(tmp_path, store):
    result = resilient_agent(tmp_path / "ws").run_sync("Is O-1 shipped?")
    assert result.ok
    inspector = RunInspector(store, run_id=result.run_id)
    first = inspector.rows[0]
    assert first["kind"] == "model_call" and first["served_by"] == "scripted:backup"
    assert [(a["number"], a["model"], a["status"]) for a in first["attempts"]] == [
        (1, "scripted:primary", "error"),
        (2, "scripted:primary", "error"),
        (3, "scripted:backup", "ok"),
    ]
    assert first["attempts"][0]["wait_s"] is not None, "the retry waited"
    html = inspector.steps_view.value
    assert 'class="agentlab-detail"' in html and "requests of step 1" in html
    assert "agentlab-attempts" in html
    assert "503 from the primary: overloaded" in html and "ModelUnavailableError" in html
    assert "served by <code>scripted:backup</code>" in html
    assert "fallback 1 after scripted:primary failed (ModelUnavailableError)" in html
    assert "CircuitOpenError" in html, "later steps: the open breaker refused at once"
    assert [(b["breaker"], b["from_state"], b["to_state"]) for b in inspector.breakers] == [
        ("model:scripted:primary", "closed", "open")
    ]
    assert [(a["alert"], a["step"], a["stopped"]) for a in inspector.alerts] == [
        ("repeated_call", 2, False)
    ]
    events = inspector.events_view.value
    assert "Circuit breakers" in events and "2 failures within 60 s" in events
    assert "Alerts" in events and "repeated_call" in events and "noted" in events
    assert re.search(r"\+\d+\.\d\d s", events), "times are relative to the run's start"


def test_inspector_and_run_html_of_a_run_that_failed(tmp_path, store):
    agent = ReActAgent(
        FunctionModel(down, name="primary"),
        trace=tmp_path / "ws",
        retry=RetryPolicy(3, initial=0.01),
        breaker=None,
    )
    run = agent.start("Where is my order?")
    run.finish_sync()
    assert run.status == "failed"
    inspector = RunInspector(store, run_id=run.id)
    summary = inspector.summary.value
    assert "Why it stopped" in summary and "What went wrong" in summary
    assert "What to do next" in summary and "What was tried" in summary
    assert '<span class="tag">model</span>' in summary and "ModelUnavailableError" in summary
    assert "failed requests" not in summary, "the steps below show them"
    steps = inspector.steps_view.value
    assert "requests of step 1" in steps and "no model answered" in steps
    assert steps.count("503 from the primary") >= 3, "each of the three attempts"
    assert inspector.events_view.value == ""
    html = run._repr_html_()
    assert "Why it stopped" in html and "requests of step 1" in html
    assert "no model answered" in html and "failed requests" not in html, "shown once"
    assert "What to do next" in run.result._repr_html_()


def test_every_css_rule_is_scoped_and_themed():
    """JupyterLab's `:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td` (0,2,1) must
    lose to ours, and colours must come from its theme variables."""
    from agentlab._html import STYLE

    css = STYLE.removeprefix("<style>").removesuffix("</style>")
    for rule in re.findall(r"([^{}]+)\{[^}]*\}", css):
        for selector in rule.split(","):
            assert selector.startswith(".agentlab:not(#agentlab-scope)"), selector
    hex_colours = re.findall(r"[:(, ]#[0-9a-fA-F]{3,6}", css)
    fallbacks = re.findall(r"var\(--jp-[a-z0-9-]+,#[0-9a-fA-F]{3,6}\)", css)
    assert len(hex_colours) == len(fallbacks), "a colour that is not a theme variable"
    assert "text-align:left" in css


# -- ApprovalWidget ----------------------------------------------------------------------


def refund_script(orders: Sequence[str]):  # type: ignore[no-untyped-def]
    """Refund each order in turn (one step each), then report the last result."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        done = [m for m in messages if isinstance(m, ToolMessage)]
        if len(done) < len(orders):
            order = orders[len(done)]
            arguments = json.dumps({"order_id": order, "amount_usd": 42})
            call = ToolCall(id=f"c{len(done)}", name="refund", arguments=arguments)
            return AssistantMessage(tool_calls=(call,))
        return AssistantMessage(content="Outcome: " + done[-1].content)

    return reply


class Refunds:
    """A refund tool that needs approval, its ledger, and the widget watching it."""

    def __init__(self, workspace) -> None:  # type: ignore[no-untyped-def]
        self.workspace = workspace
        self.ledger: list[tuple[str, float]] = []
        self.buttons_disabled: list[bool] = []
        self.widget: ApprovalWidget | None = None

        @tool(requires_approval=True)
        def refund(order_id: str, amount_usd: float) -> str:
            """Refund an order (a person approves it first).

            Args:
                order_id: The order id.
                amount_usd: How much to refund.
            """
            if self.widget is not None:
                w = self.widget
                self.buttons_disabled.append(
                    w.approve_button.disabled and w.deny_button.disabled and w.note.disabled
                )
            self.ledger.append((order_id, amount_usd))
            return f"refunded {amount_usd} on {order_id}"

        self.refund = refund

    def agent(self, orders: Sequence[str] = ("O-1",)) -> ReActAgent:
        return ReActAgent(
            FunctionModel(refund_script(orders)),
            [self.refund],
            name="refunds",
            trace=self.workspace,
        )

    def paused_run(self, orders: Sequence[str] = ("O-1",)):  # type: ignore[no-untyped-def]
        run = self.agent(orders).start("Refund " + ", ".join(orders))
        assert run.finish_sync().status == "paused"
        return run


@pytest.fixture
def refunds(tmp_path) -> Refunds:
    return Refunds(tmp_path / "ws")


def test_approve_runs_the_tool_once_and_the_run_completes(refunds, store):
    run = refunds.paused_run()
    html = run._repr_html_()
    assert "Waiting for approval" in html and "ApprovalWidget(run)" in html
    assert '<code>refund</code> <span class="warn">not run yet</span>' in html
    assert '<span class="tag">tool_calls</span>' in html
    widget = refunds.widget = ApprovalWidget(run)
    assert widget.status == "paused" and widget.pending["tool"] == "refund"
    shown = widget.request_view.value
    assert "Approve the call to &#x27;refund&#x27;" in shown and "<code>refund</code>" in shown
    assert "  &quot;amount_usd&quot;: 42" in shown, "arguments as indented JSON"
    assert widget.approval_controls.layout.display == ""
    assert widget.escalation_controls.layout.display == "none"
    assert not widget.approve_button.disabled and "waits for approval" in widget.header.value

    widget.note.value = "within the refund limit"
    widget.approve_button.click()
    assert refunds.ledger == [("O-1", 42.0)] and refunds.buttons_disabled == [True]
    assert run.status == "completed" and widget.status == "completed"
    assert widget.result is not None and widget.result.output == "Outcome: refunded 42.0 on O-1"
    assert "Completed" in widget.outcome.value and "refunded 42.0 on O-1" in widget.outcome.value
    assert "you approved the call to <code>refund</code>" in widget.message.value
    assert "within the refund limit" in widget.message.value
    assert widget.approve_button.disabled and widget.approval_controls.layout.display == "none"
    widget.approve_button.click()  # disabled: nothing happens
    widget.approve()  # and the method refuses, in the widget
    assert refunds.ledger == [("O-1", 42.0)]
    assert "not paused" in widget.message.value
    assert store.run(run.id)["status"] == "completed"


def test_deny_tells_the_model_and_the_tool_does_not_run(refunds):
    run = refunds.paused_run()
    widget = ApprovalWidget(run)
    widget.note.value = "over the refund limit"
    widget.deny_button.click()
    assert refunds.ledger == [] and widget.status == "completed"
    assert "A person declined this call to &#x27;refund&#x27;" in widget.outcome.value
    assert "over the refund limit" in widget.outcome.value, "the model was told the note"
    assert "you denied the call" in widget.message.value


def test_the_next_pause_offers_the_next_decision(refunds):
    run = refunds.paused_run(["O-1", "O-2"])
    widget = ApprovalWidget(run)
    widget.approve_button.click()
    assert refunds.ledger == [("O-1", 42.0)]
    assert widget.status == "paused" and "O-2" in widget.request_view.value
    assert not widget.approve_button.disabled, "the next decision is offered"
    assert "Step 1: you approved" in widget.message.value
    widget.approve_button.click()
    assert [o for o, _ in refunds.ledger] == ["O-1", "O-2"] and widget.status == "completed"


def test_a_widget_for_a_run_id_resumes_from_the_store(refunds, store):
    paused = refunds.agent().run_sync("Refund O-1")
    assert paused.status == "paused"
    with pytest.raises(UserError, match="needs the agent"):
        ApprovalWidget(paused.run_id)
    html = paused._repr_html_()
    assert "Waiting for approval" in html and "ApprovalWidget(&#x27;" in html
    summary = RunInspector(store, run_id=paused.run_id).summary.value
    assert "Waiting for approval" in summary and "ApprovalWidget(&#x27;" in summary
    widget = ApprovalWidget(paused.run_id, agent=refunds.agent())  # as a new process would
    assert widget.run is None and widget.status == "paused"
    assert widget.store is not None and widget.store.workspace == store.workspace
    assert "&quot;order_id&quot;: &quot;O-1&quot;" in widget.request_view.value
    widget.approve_button.click()
    assert refunds.ledger == [("O-1", 42.0)] and widget.status == "completed"
    row = store.run(paused.run_id)
    assert row["status"] == "completed" and row["output"] == "Outcome: refunded 42.0 on O-1"
    again = ApprovalWidget(paused.run_id, agent=refunds.agent())
    assert again.status == "completed" and "nothing to decide" in again.message.value
    assert again.approve_button.disabled


def test_errors_are_shown_in_the_widget(refunds, store):
    done = refunds.agent().run_sync("Refund O-1")
    refunds.agent().resume_sync(done.run_id, approve=True)
    widget = ApprovalWidget(done.run_id, agent=refunds.agent())
    widget.approve()
    assert "not paused" in widget.message.value and len(refunds.ledger) == 1

    unknown = ApprovalWidget("nope", agent=refunds.agent())
    assert "No run &#x27;nope&#x27;" in unknown.message.value and unknown.status is None

    stale = refunds.paused_run()  # then resumed through the store, as by another process
    refunds.agent().resume_sync(stale.id, approve=True)
    assert len(refunds.ledger) == 2
    widget = ApprovalWidget(stale)  # this process's copy still says paused
    widget.approve_button.click()
    assert len(refunds.ledger) == 2, "the call was not made a second time"
    assert "already resumed elsewhere" in widget.message.value
    assert "callout bad" in widget.message.value


def test_the_widget_works_inside_a_running_event_loop(refunds):
    """A notebook cell (and a button's click handler) runs inside the kernel's loop."""
    run = refunds.paused_run()
    widget = ApprovalWidget(run)

    async def click() -> None:
        asyncio.get_running_loop()  # inside a running loop, like a cell
        widget.approve_button.click()

    asyncio.run(click())
    assert widget.status == "completed" and refunds.ledger == [("O-1", 42.0)]


def escalating_agent(workspace, up: dict[str, bool]) -> ReActAgent:  # type: ignore[no-untyped-def]
    def flaky(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        if not up["now"]:
            raise ModelUnavailableError("the model server is down")
        return "the model is back"

    return ReActAgent(
        FunctionModel(flaky, name="flaky"),
        trace=workspace,
        escalate=True,
        retry=RetryPolicy(2, initial=0.01),
        breaker=None,
    )


def test_an_escalation_is_answered_retried_or_let_fail(tmp_path):
    up = {"now": False}
    agent = escalating_agent(tmp_path / "ws", up)
    run = agent.start("Where is my order?")
    run.finish_sync()
    widget = ApprovalWidget(run)
    assert widget.pending["kind"] == "escalation" and "needs a person" in widget.header.value
    assert widget.approval_controls.layout.display == "none"
    assert widget.escalation_controls.layout.display == ""
    shown = widget.request_view.value
    assert "What went wrong" in shown and "the model server is down" in shown
    assert "What was tried" in shown and "What to do next" in shown
    assert "failed requests" in shown, "both attempts of the failing step"
    widget.answer_button.click()  # no answer written yet
    assert "Write the answer" in widget.message.value and widget.status == "paused"
    widget.answer.value = "A person checked: it ships tomorrow."
    widget.answer_button.click()
    assert run.status == "completed" and run.output == "A person checked: it ships tomorrow."
    assert "it ships tomorrow" in widget.outcome.value and widget.answer.value == ""

    retried = agent.start("Where is my order?")
    retried.finish_sync()
    widget = ApprovalWidget(retried)
    up["now"] = True
    widget.retry_button.click()
    assert widget.status == "completed" and "the model is back" in widget.outcome.value

    up["now"] = False
    failed = agent.start("Where is my order?")
    failed.finish_sync()
    widget = ApprovalWidget(failed)
    widget.fail_button.click()
    assert widget.status == "failed" and failed.status == "failed"
    assert "Ended: failed" in widget.outcome.value and "What went wrong" in widget.outcome.value
    assert "let the run fail" in widget.message.value
