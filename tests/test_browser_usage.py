"""The gateway's UsageReport in a real JupyterLab: the summary, the cost chart and the
table of requests per client and agent; both themes, screenshotted."""

from __future__ import annotations

import time

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

from agentlab.serve.gateway.usage import record_request
from agentlab.tracing import TraceStore, close_writers

CELL = """\
from agentlab.ui import UsageReport

UsageReport(days=7)"""


@pytest.mark.timeout(240)
def test_usage_report_in_both_themes(lab, page, tmp_path):
    store = TraceStore(lab.root / "ws")  # the kernel's workspace (AGENTLAB_WORKSPACE)
    now = time.time()
    for days_ago, owner, agent, status, cost in [
        (0, "acme", "support", 200, 0.012),
        (0, "acme", "support", 429, None),
        (1, "globex", "support", 200, 0.030),
        (2, "acme", "refunds", 200, 0.004),
        (2, "globex", "refunds", 500, None),
    ]:
        record_request(
            store,
            time=now - days_ago * 86_400,
            key_id=f"k-{owner}",
            owner=owner,
            agent=agent,
            version="1",
            route="/v1/agents/{agent}/runs",
            status_code=status,
            run_id=None,
            input_tokens=120 if cost else None,
            output_tokens=30 if cost else None,
            cost=cost,
            latency_ms=40.0,
            error_id=None,
        )
    store.ingest()
    close_writers()
    expect = sync_api.expect
    shoot = shooter(tmp_path)
    report = page.locator(".agentlab-usage-report")
    try:
        open_and_run(page, lab.notebook("usage.ipynb", CELL))
        expect(report).to_be_visible(timeout=60_000)
        expect(report).to_contain_text("5 requests")
        expect(report).to_contain_text("from 2 clients")
        expect(report.locator("img")).to_be_visible()
        expect(report.locator("table.agentlab-usage")).to_contain_text("globex")
        shoot(report, "usage-light")
        switch_to_dark(page)
        shoot(report, "usage-dark")
    except BaseException:
        path = tmp_path / "failure.png"
        page.screenshot(path=str(path), full_page=True)
        keep(path)
        raise
