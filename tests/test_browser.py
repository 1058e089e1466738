"""Widgets in a real browser: JupyterLab + Debian Chromium via playwright (the run
inspector's "Next step"; the approval widget's Approve; both themes, screenshotted).

Needs ``/usr/bin/chromium`` (Debian's ``chromium``, which ``make install`` installs
through ``tools/ensure-browser`` when run as root) and the ``playwright`` Python
package (never ``playwright install``). Skipped only where Chromium cannot be
installed (not root, or no apt-get); where it can, a missing browser fails the test
with the fix.
"""

from __future__ import annotations

import pytest
from _browser import (
    chromium_installed,
    keep,
    lab,
    luminance,
    open_and_run,
    page,
    shooter,  # the fixtures chromium_installed, lab and page, and helpers
    switch_to_dark,
    sync_api,
)

NOTEBOOK = "inspector.ipynb"
CELL = """\
from agentlab.demo import build_support_agent
from agentlab.ui import RunInspector

agent = build_support_agent("scripted:schema", trace=True)
run = agent.start("What is the status of order O-1003?")
run.step_sync()
inspector = RunInspector(live_run=run)
inspector"""


@pytest.mark.timeout(180)
def test_inspector_renders_and_next_step_advances_the_run(lab, page, tmp_path):
    expect = sync_api.expect
    shot = tmp_path / "inspector.png"
    try:
        open_and_run(page, lab.notebook(NOTEBOOK, CELL))

        inspector = page.locator(".agentlab-inspector")
        expect(inspector).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Loading widget...")).to_have_count(0)
        rows = inspector.locator("table.agentlab-steps > tbody > tr:not(.agentlab-detail)")
        expect(rows.first).to_be_visible()
        expect(rows).to_have_count(2)  # step 1: a model call and its tool call
        before = inspector.locator("table.agentlab-steps").inner_text()
        expect(inspector.locator(".widget-image, img").first).to_be_visible()  # the chart

        button = inspector.get_by_role("button", name="Next step")
        expect(button).to_be_enabled()
        button.click()
        expect(rows).to_have_count(4)  # step 2: another model call and tool call
        after = inspector.locator("table.agentlab-steps").inner_text()
        assert after != before
        assert "→ get_order" not in before and "→ get_order" in after  # the step's call

        for rows_after in (6, 7):  # step 3: the last tool; step 4: the answer
            expect(button).to_be_enabled()
            button.click()
            expect(rows).to_have_count(rows_after)
        expect(button).to_be_disabled()
        expect(inspector.get_by_role("button", name="Run to end")).to_be_disabled()
        expect(inspector).to_contain_text("completed")
        inspector.screenshot(path=str(shot))
        keep(shot)
        print(f"screenshot (success): {shot}")
    except BaseException:
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot (failure): {shot}")
        finally:
            raise


APPROVAL_CELL = '''\
import json
from IPython.display import display
from agentlab import ReActAgent, tool
from agentlab.agents.alerts import LoopAlerts
from agentlab.errors import ModelUnavailableError
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage
from agentlab.models import FunctionModel, RetryPolicy
from agentlab.resilience import BreakerConfig
from agentlab.ui import ApprovalWidget, RunInspector

refunded = []

@tool(requires_approval=True)
def refund(order_id: str, amount_usd: float, reason: str) -> str:
    """Refund an order (money leaves the shop: a person approves it first).

    Args:
        order_id: The order id.
        amount_usd: How much to refund.
        reason: Why, in the customer's words.
    """
    refunded.append(order_id)
    return f"refunded {amount_usd} USD on {order_id}"

def refunds(messages, tools):
    done = [m for m in messages if isinstance(m, ToolMessage)]
    if not done:
        arguments = {"order_id": "O-1003", "amount_usd": 42.5, "reason": "arrived damaged"}
        call = ToolCall(id="c1", name="refund", arguments=json.dumps(arguments))
        return AssistantMessage(content="I will refund it.", tool_calls=(call,))
    return AssistantMessage(content="Done: " + done[-1].content)

def down(messages, tools):
    raise ModelUnavailableError("503 Service Unavailable: the primary model is overloaded")

def backup(messages, tools):
    done = [m for m in messages if isinstance(m, ToolMessage)]
    if len(done) < 2:
        call = ToolCall(id=f"s{len(done)}", name="status", arguments='{"order_id": "O-1003"}')
        return AssistantMessage(tool_calls=(call,))
    return AssistantMessage(content="O-1003 is delivered.")

@tool
def status(order_id: str) -> str:
    """The status of an order.

    Args:
        order_id: The order id.
    """
    return "delivered"

refunder = ReActAgent(FunctionModel(refunds, name="refunds"), [refund], name="refunds")
run = refunder.start("Refund O-1003: it arrived damaged")
run.finish_sync()
approval = ApprovalWidget(run)
waiting = refunder.start("Refund O-1003 again")
waiting.finish_sync()

flaky = ReActAgent(FunctionModel(down, name="primary"), name="support", escalate=True,
                   retry=RetryPolicy(2, initial=0.05), breaker=None)
escalated = flaky.start("Where is my order O-1003?")
escalated.finish_sync()

resilient = ReActAgent(
    FunctionModel(down, name="primary"), [status], name="support",
    retry=RetryPolicy(2, initial=0.05), breaker=BreakerConfig(failure_threshold=2, cooldown_s=60),
    fallback=[FunctionModel(backup, name="backup")], alerts=LoopAlerts(repeat=2),
).run_sync("Where is my order O-1003?")

failed = ReActAgent(FunctionModel(down, name="primary"), name="support",
                    retry=RetryPolicy(2, initial=0.05), breaker=None).start("Where is O-1003?")
failed.finish_sync()

# Outcome unknown: a process SIGKILLed inside send_email (a new process, not a fork of
# this kernel), then the run recovered here: did the email go out?
import signal, subprocess, sys
import mailer
from agentlab.tracing import TraceStore

killed = subprocess.run(
    [sys.executable, "-c", "import mailer; mailer.KILL_INSIDE = True; "
     "mailer.agent.run_sync('Tell Ada that O-1003 is refunded')"],
    capture_output=True, text=True, timeout=60,
)
assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
[(lost,)] = TraceStore().sql("SELECT run_id FROM runs WHERE agent = 'mailer'")
recovered = mailer.agent.resume_sync(lost)
assert recovered.status == "paused" and recovered.pending["kind"] == "outcome_unknown", recovered
assert mailer.sent == [], "never sent blindly"

display(approval, ApprovalWidget(escalated), RunInspector(run_id=resilient.run_id), failed,
        waiting, ApprovalWidget(waiting), ApprovalWidget(lost, agent=mailer.agent))'''

# Imported by APPROVAL_CELL (written next to its notebook) and by the process it kills.
MAILER = '''\
"""An agent whose tool sends an email it cannot deduplicate (it takes no
IdempotencyKey). With ``KILL_INSIDE`` set, the process is SIGKILLed inside the call,
after the call's start is in the trace: whether the email went out is unknown."""

import json
import os
import signal

from agentlab import ReActAgent, tool
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage
from agentlab.models import FunctionModel

KILL_INSIDE = False
sent = []


@tool(side_effects=True)
def send_email(to: str, subject: str) -> str:
    """Send an email to a customer.

    Args:
        to: The address.
        subject: The subject line.
    """
    if KILL_INSIDE:
        os.kill(os.getpid(), signal.SIGKILL)
    sent.append(subject)
    return f"sent {subject!r} to {to}"


def script(messages, tools):
    done = [m for m in messages if isinstance(m, ToolMessage)]
    if not done:
        arguments = {"to": "ada@example.com", "subject": "Your refund for O-1003"}
        call = ToolCall(id="e1", name="send_email", arguments=json.dumps(arguments))
        return AssistantMessage(content="I will email the customer.", tool_calls=(call,))
    return AssistantMessage(content="Emailed the customer. " + done[-1].content)


agent = ReActAgent(FunctionModel(script, name="mailer"), [send_email], name="mailer")
'''


@pytest.mark.timeout(240)
def test_approve_in_the_browser_and_screenshots_in_both_themes(lab, page, tmp_path):
    expect = sync_api.expect

    shoot = shooter(tmp_path)

    try:
        (lab.root / "mailer.py").write_text(MAILER)
        open_and_run(page, lab.notebook("approval.ipynb", APPROVAL_CELL))
        approval = page.locator(".agentlab-approval").first
        escalation = page.locator(".agentlab-approval").nth(1)
        inspector = page.locator(".agentlab-inspector")
        failed = page.locator(".jp-RenderedHTMLCommon").filter(has_text="Why it stopped")
        paused = page.locator(".jp-RenderedHTMLCommon").filter(has_text="Waiting for approval")
        untouched = page.locator(".agentlab-approval").nth(2)
        unknown = page.locator(".agentlab-approval").nth(3)
        expect(inspector).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Loading widget...")).to_have_count(0)
        expect(approval).to_contain_text("waits for approval")
        expect(approval).to_contain_text('"reason": "arrived damaged"')
        expect(escalation).to_contain_text("needs a person")
        expect(escalation).to_contain_text("What to do next")
        expect(inspector.locator("table.agentlab-attempts").first).to_be_visible()
        expect(inspector).to_contain_text("Circuit breakers")
        expect(inspector).to_contain_text("repeated_call")
        # JupyterLab right-aligns cells of rendered HTML; ours must stay left-aligned.
        cell = failed.locator(".agentlab td").first
        assert cell.evaluate("td => getComputedStyle(td).textAlign") == "left"
        expect(unknown).to_contain_text("needs a person: outcome unknown")
        expect(unknown).to_contain_text("whether the call happened is unknown")
        expect(unknown).not_to_contain_text("approve=True")  # words for a person
        expect(unknown).to_contain_text('"subject": "Your refund for O-1003"')
        decisions = ("It happened", "Make it again", "Do not make it")
        for label in decisions:
            expect(unknown.get_by_role("button", name=label)).to_be_enabled()
        expect(unknown.get_by_role("button", name="Approve")).to_have_count(0)  # hidden
        shoot(approval, "approval-paused-light")
        shoot(paused, "paused-run-light")
        shoot(unknown, "approval-unknown-light")

        approve = approval.get_by_role("button", name="Approve")
        approval.get_by_placeholder("Note (optional)").fill("damaged on arrival: photo checked")
        approve.click()
        expect(approval).to_contain_text("Completed", timeout=30_000)
        expect(approval).to_contain_text("Done: refunded 42.5 USD on O-1003")
        expect(approve).to_be_hidden()
        expect(untouched).to_contain_text("waits for approval")  # another run: still paused
        shoot(approval, "approval-completed-light")
        shoot(escalation, "escalation-light")
        shoot(inspector, "inspector-light")
        shoot(failed, "failed-run-light")
        light_text = luminance(
            inspector.locator(".agentlab").first.evaluate("e => getComputedStyle(e).color")
        )

        switch_to_dark(page)
        dark_text = luminance(
            inspector.locator(".agentlab").first.evaluate("e => getComputedStyle(e).color")
        )
        assert light_text < 0.2 and dark_text > 0.6, "the text colour follows the theme"
        shoot(untouched, "approval-paused-dark")
        shoot(paused, "paused-run-dark")
        shoot(approval, "approval-completed-dark")
        shoot(escalation, "escalation-dark")
        shoot(inspector, "inspector-dark")
        shoot(failed, "failed-run-dark")
        shoot(unknown, "approval-unknown-dark")

        # The person found the email in the mail log: it happened, and is not sent again.
        unknown.get_by_placeholder("What happened, if the call did happen").fill(
            "it went out at 10:02 (in the mail log)"
        )
        happened = unknown.get_by_role("button", name="It happened")
        happened.click()
        expect(unknown).to_contain_text("Completed", timeout=30_000)
        expect(unknown).to_contain_text("you reported what the call to send_email did")
        expect(unknown).to_contain_text(
            "a person checked what happened: it went out at 10:02 (in the mail log)"
        )
        expect(unknown).not_to_contain_text("sent 'Your refund for O-1003'")  # not re-sent
        expect(happened).to_be_hidden()
        shoot(unknown, "approval-unknown-answered-dark")
    except BaseException:
        try:
            path = tmp_path / "failure.png"
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot (failure): {path}")
            keep(path)
        finally:
            raise
