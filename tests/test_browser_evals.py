"""The evaluation views in a real JupyterLab: the EvalReportView (sort, failures
only, a tag, a case's run opened in an inspector), the EvalCompare widget (regressed
only, a case's runs in A and B), the progress bar and the report's own HTML table;
both themes, screenshotted."""

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

pytestmark = pytest.mark.slow

# Two eval runs of the support dataset by a scripted "oracle" that makes each case's
# expected calls and answers with their results: the baseline answers the adversarial
# cases without looking anything up (7 of them fail), the candidate the shipping ones
# (4 fail: they regressed; 7 improved).
CELL = """\
import json
from IPython.display import display
from agentlab.agents import ReActAgent
from agentlab.demo import shared_demo_database
from agentlab.demo.support import INSTRUCTIONS, support_tools
from agentlab.evals import evaluate_sync
from agentlab.evals.notebook_support import load_cases
from agentlab.messages import AssistantMessage, ToolCall
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.ui import EvalCompare, EvalProgress, EvalReportView
from agentlab.usage import Price, PriceTable

store = TraceStore()
cases = load_cases("evals/support_agent.jsonl")
by_input = {case.input: case for case in cases}

def oracle(skip):
    # Makes each case's expected calls, then answers with what they returned; in the
    # cases with a tag in `skip` it answers at once, looking nothing up.
    def reply(messages, tools):
        case = by_input[next(m.content for m in messages if m.role == "user")]
        results = [m.content for m in messages if m.role == "tool"]
        if results or not case.expected_tool_calls or skip & set(case.tags):
            return " ".join(results) or "Sorry, I don't have that information."
        calls = case.expected_tool_calls
        return AssistantMessage(tool_calls=tuple(
            ToolCall(id=f"c{i}", name=c.name, arguments=json.dumps(c.arguments))
            for i, c in enumerate(calls)))
    return FunctionModel(reply, name="oracle")

def run(name, skip):
    agent = ReActAgent(
        oracle(skip), support_tools(shared_demo_database(store.workspace)),
        name="support-demo", instructions=INSTRUCTIONS, trace=store,
        prices=PriceTable({"scripted:*": Price(1.0, 2.0)}))
    return evaluate_sync(agent, cases, name=name)

baseline = run("baseline", {"adversarial"})
candidate = run("candidate", {"shipping"})
progress = EvalProgress(len(candidate.results))
for result in candidate.results:
    progress.update(result)
display(EvalReportView(candidate, store=store), EvalCompare(baseline, candidate, store=store),
        progress, candidate)"""


@pytest.mark.timeout(240)
def test_eval_views_sort_filter_and_open_runs_in_both_themes(lab, page, tmp_path):
    expect = sync_api.expect

    shoot = shooter(tmp_path)

    def select(widget: sync_api.Locator, label: str, option: str, options: int = 0) -> None:
        """Pick `option` in the dropdown `label`, once it lists `options` (if given): the
        run pickers are re-listed by the kernel after each filter."""
        dropdown = widget.locator(".widget-dropdown").filter(has_text=label).locator("select")
        if options:
            expect(dropdown.locator("option")).to_have_count(options)
        dropdown.select_option(label=option)

    report = page.locator(".agentlab-eval-report")

    def text_luminance() -> float:
        text = report.locator(".agentlab").first
        return luminance(text.evaluate("e => getComputedStyle(e).color"))

    compare = page.locator(".agentlab-eval-compare")
    progress = page.locator(".agentlab-eval-progress")
    static = (
        page.locator(".jp-OutputArea-output")
        .filter(has=page.locator("table.agentlab-eval-cases"))
        .filter(has_not=page.locator(".agentlab-eval-report"))
    )
    try:
        open_and_run(page, lab.notebook("evals.ipynb", CELL))
        expect(report).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Loading widget...")).to_have_count(0)
        rows = report.locator("table.agentlab-eval-cases > tbody > tr")
        expect(rows).to_have_count(22)
        expect(rows.first).to_contain_text("order-carrier")  # failed cases first
        expect(report.locator("table.agentlab-eval-metrics")).to_contain_text("18 of 22")
        # Pass/fail read at a glance: tinted rows and pills in the theme's colours.
        transparent = "rgba(0, 0, 0, 0)"
        failed_cell = report.locator("tr.fail > td").nth(1)
        assert failed_cell.evaluate("e => getComputedStyle(e).backgroundColor") != transparent
        assert (
            report.locator(".pill.ok").first.evaluate("e => getComputedStyle(e).backgroundColor")
            != transparent
        )
        # Case ids, numbers and tool-call counts stay on one line.
        for cell in (rows.first.locator("td").first, rows.first.locator("td").nth(5)):
            assert cell.locator("span.nowrap").first.evaluate("e => e.getClientRects().length") == 1
        shoot(report, "eval-report-light")

        select(report, "Sort by", "case id")
        expect(rows.first).to_contain_text("cancelled-eta")
        select(report, "Sort by", "steps (most first)")
        expect(rows.first).to_contain_text("order-status")
        expect(rows.last).to_contain_text("home-address")  # one step, the last of them
        report.get_by_role("button", name="Failures only").click()
        expect(rows).to_have_count(4)
        expect(report).to_contain_text("4 of 22 cases")
        select(report, "Tag", "customers (5)")
        expect(rows).to_have_count(0)
        report.get_by_role("button", name="Failures only").click()
        expect(rows).to_have_count(5)
        select(report, "Tag", "shipping (4)")
        expect(rows).to_have_count(4)
        select(report, "Open run", "order-eta · FAIL", options=5)  # 4 and "(pick a case)"
        inspector = report.locator(".agentlab-inspector")
        expect(inspector).to_be_visible()
        expect(report).to_contain_text("case order-eta failed")
        expect(inspector).to_contain_text("When will order O-1015 arrive?")
        expect(inspector).to_contain_text("Sorry, I don't have that information.")
        shoot(report, "eval-report-run-light")

        compare_rows = compare.locator("table.agentlab-compare > tbody > tr")
        expect(compare_rows).to_have_count(22)
        expect(compare.locator(".callout")).to_contain_text("4 regressed, 7 improved")
        shoot(compare, "eval-compare-light")
        compare.get_by_role("button", name="regressed (4)").click()
        expect(compare_rows).to_have_count(4)
        expect(compare.locator("tr.fail")).to_have_count(4)
        select(compare, "Open runs", "order-eta · regressed", options=5)
        inspectors = compare.locator(".agentlab-inspector")
        expect(inspectors).to_have_count(2)
        expect(inspectors.first).to_contain_text("get_order")  # A looked the order up
        expect(inspectors.last).to_contain_text("Sorry, I don't have that information.")
        expect(compare).to_contain_text("A: baseline")
        expect(compare).to_contain_text("B: candidate")
        runs = compare.locator(":scope > .widget-vbox").last  # below the table
        # A's steps table is wider than the notebook: it scrolls in its inspector.
        scrolls = "e => [getComputedStyle(e).overflowX, e.scrollWidth > e.clientWidth]"
        inspector_a = compare.locator(".agentlab-inspector").first
        assert inspector_a.evaluate(scrolls) == ["auto", True]
        shoot(compare.locator(":scope > .widget-html").last, "eval-compare-regressed-light")
        shoot(runs, "eval-compare-runs-light")

        expect(progress).to_contain_text("22 cases in")
        expect(progress).to_contain_text("4 failed")
        shoot(progress, "eval-progress-light")
        expect(static).to_have_count(1)
        expect(static.locator("table.agentlab-eval-cases > tbody > tr")).to_have_count(22)
        # JupyterLab right-aligns cells of rendered HTML; ours stay left-aligned.
        cell = static.locator("table.agentlab-eval-cases td").first
        assert cell.evaluate("td => getComputedStyle(td).textAlign") == "left"
        shoot(static, "eval-report-html-light")
        light = text_luminance()
        switch_to_dark(page)
        assert light < 0.2 and text_luminance() > 0.6, "the text colour follows the theme"
        shoot(report, "eval-report-run-dark")
        shoot(runs, "eval-compare-runs-dark")
        compare.get_by_role("button", name="all (22)").click()
        expect(compare_rows).to_have_count(22)
        parts = compare.locator(":scope > .widget-html")  # the summary, the count, the table
        shoot(parts.first, "eval-compare-summary-dark")
        shoot(parts.last, "eval-compare-table-dark")
        shoot(progress, "eval-progress-dark")
        shoot(static, "eval-report-html-dark")
    except BaseException:
        path = tmp_path / "failure.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot (failure): {path}")
        keep(path)
        raise
