"""The state-machine diagram in a real JupyterLab: the refund flow paused before its
refund, the current state highlighted, in the light and the dark theme."""

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

CELL = """\
import json, tempfile
from agentlab.agents.state_machine_agent import TRANSITION_TOOL
from agentlab.demo.refunds import build_refund_agent
from agentlab.messages import AssistantMessage, ToolCall
from agentlab.models import FunctionModel

def reply(messages, tools):
    offered = {t.name: t for t in tools}
    n = len(messages)
    if TRANSITION_TOOL in offered:
        to = offered[TRANSITION_TOOL].parameters["properties"]["to"]["enum"][0]
        return AssistantMessage(tool_calls=(ToolCall(id=f"c{n}", name=TRANSITION_TOOL,
                                                     arguments=json.dumps({"to": to})),))
    return AssistantMessage(tool_calls=(ToolCall(id=f"c{n}", name=tools[0].name,
                                                 arguments='{"order_id": "O-1003"}'),))

agent = build_refund_agent(FunctionModel(reply), ledger=tempfile.mktemp(), trace=False)
run = agent.start("Please refund order O-1003.")
run.finish_sync()
agent.diagram(run)"""


def contrast(a: float, b: float) -> float:
    """WCAG contrast ratio of two relative luminances (4.5 reads as body text)."""
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


@pytest.mark.timeout(240)
def test_the_state_diagram_reads_in_both_themes(lab, page, tmp_path):
    expect = sync_api.expect
    shoot = shooter(tmp_path)
    view = page.locator(".jp-OutputArea-output .agentlab").filter(has=page.locator("svg"))
    try:
        open_and_run(page, lab.notebook("states.ipynb", CELL))
        expect(view).to_be_visible(timeout=60_000)
        expect(view).to_contain_text("refund_flow")
        expect(view).to_contain_text("paused")
        current = view.locator('g.current[data-state="issue_refund"]')
        expect(current).to_have_count(1)
        expect(view.locator("g.visited")).to_have_count(3)
        expect(view.locator("path.edge.taken")).to_have_count(3)  # start arrow, 2 moves
        shoot(view, "state-machine-light")

        def colours() -> dict[str, float]:
            fill = current.locator("rect.state").evaluate("e => getComputedStyle(e).fill")
            text = current.locator("text").first.evaluate("e => getComputedStyle(e).fill")
            other = view.locator('g[data-state="deny"] text').first
            plain = other.evaluate("e => getComputedStyle(e).fill")
            box = view.locator('g[data-state="deny"] rect.state')
            back = box.evaluate("e => getComputedStyle(e).fill")
            return {
                "current": luminance(fill),
                "current_text": luminance(text),
                "text": luminance(plain),
                "box": luminance(back),
            }

        light = colours()
        switch_to_dark(page)
        shoot(view, "state-machine-dark")
        dark = colours()
        for theme in (light, dark):  # every label stands out from what it is on
            assert contrast(theme["text"], theme["box"]) > 7, theme
            assert contrast(theme["current_text"], theme["current"]) > 4.5, theme
        assert light["box"] > 0.8 and dark["box"] < 0.2  # the states follow the theme
    except BaseException:
        path = tmp_path / "failure.png"
        page.screenshot(path=str(path), full_page=True)
        keep(path)
        raise
