"""The trace explorer and the cost dashboard in a real JupyterLab: filter, page, open
a run in the inspector; both themes, screenshotted."""

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
from test_ui_traces import fill, old_run

from agentlab.tracing import close_writers

CELL = """\
from IPython.display import display
from agentlab.ui import CostDashboard, TraceExplorer

display(TraceExplorer(page_size=5))
CostDashboard(days=14)"""


@pytest.mark.timeout(240)
def test_explorer_and_dashboard_in_both_themes(lab, page, tmp_path):
    store = fill(lab.root / "ws")  # the kernel's workspace (AGENTLAB_WORKSPACE)
    for days_ago, agent, cost in [(1, "loop", 0.004), (3, "shop", 0.001), (6, "loop", 0.002)]:
        old_run(store, days_ago, agent, cost)
    total = store.count_runs()  # ingested: the kernel finds them in traces.duckdb
    close_writers()
    expect = sync_api.expect

    shoot = shooter(tmp_path)

    explorer = page.locator(".agentlab-trace-explorer")
    dashboard = page.locator(".agentlab-cost-dashboard")
    try:
        open_and_run(page, lab.notebook("traces.ipynb", CELL))
        expect(explorer).to_be_visible(timeout=60_000)
        expect(explorer).to_contain_text(f"page 1 of 2 (runs 1 to 5 of {total} runs)")
        explorer.get_by_role("button", name="Next").click()
        expect(explorer).to_contain_text(f"page 2 of 2 (runs 6 to {total} of {total} runs)")
        expect(explorer.locator("table.agentlab-runs tbody tr")).to_have_count(total - 5)
        explorer.locator("select").nth(0).select_option("loop")  # the agent filter
        expect(explorer).to_contain_text("page 1 of 1 (runs 1 to 4 of 4 runs)")
        explorer.locator("select").nth(2).select_option(index=1)  # "Open run": the newest
        inspector = explorer.locator(".agentlab-inspector")
        expect(inspector).to_contain_text("completed")
        expect(inspector.locator("table.agentlab-steps")).to_be_visible()
        shoot(explorer, "explorer-light")

        expect(dashboard).to_contain_text("model calls in the last 14 days")
        expect(dashboard.locator("img")).to_be_visible()
        expect(dashboard.locator("table.agentlab-tools")).to_contain_text("get_order")
        dashboard.locator("select").first.select_option(index=1)  # the costliest run
        expect(dashboard.locator(".agentlab-inspector")).to_contain_text("loop")
        shoot(dashboard, "dashboard-light")

        switch_to_dark(page)
        shoot(explorer, "explorer-dark")
        shoot(dashboard, "dashboard-dark")
    except BaseException:
        path = tmp_path / "failure.png"
        page.screenshot(path=str(path), full_page=True)
        keep(path)
        raise
