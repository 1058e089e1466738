"""The agent workbench in a real JupyterLab: start a run, step it to the end, edit a
tool result and re-run from there; the Tools and Lint tabs; both themes, screenshotted."""

from __future__ import annotations

import pytest
from _browser import (
    chromium_installed,
    keep,
    lab,
    open_and_run,
    page,
    shooter,  # the fixtures chromium_installed, lab and page, and helpers
    switch_to_dark,
    sync_api,
)

CELL = """\
from agentlab.demo import build_support_agent
from agentlab.ui import AgentWorkbench

agent = build_support_agent("scripted:schema", trace=True)
AgentWorkbench(agent, "What is the status of order O-1003?")"""


@pytest.mark.timeout(240)
def test_the_workbench_runs_edits_and_reruns_in_both_themes(lab, page, tmp_path):
    expect = sync_api.expect

    shoot = shooter(tmp_path)

    bench = page.locator(".agentlab-workbench")
    try:
        open_and_run(page, lab.notebook("workbench.ipynb", CELL))
        expect(bench).to_be_visible(timeout=60_000)
        expect(bench).to_contain_text("support-demo")
        bench.get_by_role("button", name="Start").click()
        inspector = bench.locator(".agentlab-inspector")
        expect(inspector).to_be_visible()
        inspector.get_by_role("button", name="Run to end").click()
        expect(inspector).to_contain_text("completed", timeout=30_000)
        picker = bench.locator("select").first
        expect(picker.locator("option")).to_have_count(9)  # 4 steps: 3 lookups, 1 answer
        picker.select_option(index=3)  # the first tool result
        editor = bench.locator("textarea").first
        editor.fill('{"status": "lost in transit"}')
        shoot(bench, "workbench-run-light")
        bench.get_by_role("button", name="Re-run from here").click()
        rerun = bench.locator(".agentlab-inspector")
        expect(rerun.locator("table.agentlab-steps")).to_have_count(0)  # not stepped yet
        expect(rerun.get_by_role("button", name="Next step")).to_be_enabled()
        bench.get_by_role("tab", name="Tools").click()
        expect(bench).to_contain_text('"type": "function"')
        shoot(bench, "workbench-tools-light")
        switch_to_dark(page)
        bench.get_by_role("tab", name="Lint (clean)").click()
        expect(bench).to_contain_text("3 tools, 0 errors, 0 warnings", timeout=10_000)
        shoot(bench, "workbench-lint-dark")
        bench.get_by_role("tab", name="Run").click()
        shoot(bench, "workbench-run-dark")
    except BaseException:
        path = tmp_path / "failure.png"
        page.screenshot(path=str(path), full_page=True)
        keep(path)
        raise
