"""A Plan-and-Execute run's plans in a real JupyterLab: the progress mid-run (a step
failed, the new plan diffed against the old), the plan view at the end with two
versions compared; both themes, screenshotted."""

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

CELL = '''\
import itertools, json
from IPython.display import display
from agentlab import tool
from agentlab.agents.plan_execute import PlanExecuteAgent
from agentlab.messages import AssistantMessage, ToolCall
from agentlab.models import FunctionModel
from agentlab.ui.plan_view import PlanView

@tool
def get_order(order_id: str) -> dict:
    """Get an order's status and carrier.

    Args:
        order_id: the order id, like O-1001.
    """
    if order_id != "O-1007":
        raise KeyError(f"no order {order_id}")
    return {"order_id": order_id, "status": "shipped", "carrier": "DHL"}

@tool
def list_orders(email: str) -> list:
    """List the ids of a customer's orders.

    Args:
        email: the customer's email address.
    """
    return ["O-1007"]

def step(tool, args, after, goal):
    return {"goal": goal, "tool": tool, "args": args, "depends_on": after}

plans = [
    {"steps": [step("get_order", "order_id=O-107", [], "Find the order"),
               step("answer", "", [1], "Say where it is")]},
    {"steps": [step("list_orders", "email=ana@example.com", [], "Find her orders"),
               step("get_order", "the id from step 1", [1], "Find the order"),
               step("answer", "", [2], "Say where it is and who ships it")]},
]
arguments = {"get_order": [{"order_id": "O-107"}, {"order_id": "O-1007"}],
             "list_orders": [{"email": "ana@example.com"}]}
ids = itertools.count(1)

def reply(messages, tools):
    if not tools:
        return "Your order O-1007 has shipped; DHL is delivering it."
    name = tools[0].name
    args = plans.pop(0) if name == "submit_plan" else arguments[name].pop(0)
    call = ToolCall(id=f"c{next(ids)}", name=name, arguments=json.dumps(args))
    return AssistantMessage(tool_calls=(call,))

agent = PlanExecuteAgent(FunctionModel(reply), [get_order, list_orders], trace=False)
run = agent.start("Where is my order O-107? I am ana@example.com")
for _ in range(3):
    run.step_sync()
display(agent.progress(run))
run.finish_sync()
PlanView(run)'''


@pytest.mark.timeout(240)
def test_plans_read_well_in_both_themes(lab, page, tmp_path):
    expect = sync_api.expect
    shoot = shooter(tmp_path)
    outputs = page.locator(".jp-OutputArea-output")
    view = page.locator(".agentlab-plan-view")
    try:
        open_and_run(page, lab.notebook("plans.ipynb", CELL))
        expect(view).to_be_visible(timeout=60_000)
        midway = outputs.first
        expect(midway).to_contain_text("Plan v2")
        expect(midway).to_contain_text("What changed from v1 to v2")
        expect(midway.locator("tr.next")).to_have_count(1)  # v2's step 1, the next to run
        expect(midway.locator("tr.pass")).to_have_count(1)  # list_orders, added
        expect(view).to_contain_text("done")
        expect(view).to_contain_text("Plan v1 → v2")
        shoot(midway, "plan-progress-light")
        shoot(view, "plan-view-light")

        switch_to_dark(page)
        text = midway.locator("td").first.evaluate("e => getComputedStyle(e).color")
        assert luminance(text) > 0.5, f"table text {text} is dark on the dark theme"
        shoot(midway, "plan-progress-dark")
        shoot(view, "plan-view-dark")
        view.locator("select").nth(1).select_option(label="v1")  # compare v1 with v1
        expect(view).to_contain_text("The two plans are the same.")
    except BaseException:
        path = tmp_path / "failure.png"
        page.screenshot(path=str(path), full_page=True)
        keep(path)
        raise
