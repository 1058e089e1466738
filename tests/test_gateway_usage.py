"""Gateway usage records: written by several processes through the trace writers,
ingested into ``gateway_requests``, reported per client, agent, version and day by
the query, the CLI and the notebook view."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentlab.cli import app
from agentlab.errors import UserError
from agentlab.serve.gateway.usage import record_request, usage_by
from agentlab.tracing import TraceStore
from agentlab.tracing.gateway_requests import ASYNC_END_ROUTE

DAY = 86_400.0
ROUTE = "/v1/agents/{agent}/runs"


def record(store: TraceStore | Path, **fields: Any) -> None:
    """One request of client `acme` on support v1, 200, unless `fields` say otherwise."""
    values: dict[str, Any] = {
        "time": time.time(),
        "key_id": "k1",
        "owner": "acme",
        "agent": "support",
        "version": "v1",
        "route": ROUTE,
        "status_code": 200,
        "run_id": "r",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost": 0.002,
        "latency_ms": 10.0,
        "error_id": None,
        **fields,
    }
    record_request(store, **values)


def test_records_of_two_processes_land(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, __file__, str(tmp_path), owner, "300"])
        for owner in ("acme", "globex")
    ]
    for p in procs:
        assert p.wait(timeout=30) == 0
    rows = usage_by(TraceStore(tmp_path), ["client"])
    assert [(r["client"], r["requests"], r["tokens"]) for r in rows] == [
        ("acme", 300, 300 * 110),
        ("globex", 300, 300 * 110),
    ]
    assert [r["cost"] for r in rows] == pytest.approx([0.6, 0.6])


def test_the_report_aggregates_per_client_agent_version_and_day(tmp_path: Path) -> None:
    store = TraceStore(tmp_path)
    now = time.time()
    for i in range(20):  # acme on support v1 today: latencies 1..20 ms
        record(store, latency_ms=float(i + 1), run_id=f"a{i}")
    record(store, status_code=429, run_id=None, input_tokens=None, output_tokens=None, cost=None)
    record(store, status_code=500, error_id="e" * 32, cost=0.001)
    record(store, owner="globex", key_id="k2", version="v2", cost=0.5, time=now - 2 * DAY)
    record(store, owner=None, key_id=None, agent=None, version=None, status_code=401, cost=None)
    record(store, owner="old", time=now - 40 * DAY)
    since = datetime.now(UTC) - timedelta(days=7)

    by_client = {r["client"]: r for r in usage_by(store, ["client"], since=since)}
    assert set(by_client) == {"acme", "globex", "(no key)"}
    acme = by_client["acme"]
    assert (acme["requests"], acme["errors"], acme["rejected"]) == (22, 1, 1)
    assert acme["input_tokens"] == 2100 and acme["output_tokens"] == 210
    assert acme["tokens"] == 2310
    assert acme["cost"] == pytest.approx(20 * 0.002 + 0.001)
    # Latencies 1..20 and two of 10 ms, interpolated: the median 10, the 95th
    # percentile at rank 21 x 0.95 = 19.95 (0-based) of 22: 18 + 0.95 x (19 - 18).
    assert acme["latency_p50_ms"] == pytest.approx(10.0)
    assert acme["latency_p95_ms"] == pytest.approx(18.95)
    assert by_client["(no key)"]["rejected"] == 1 and by_client["(no key)"]["cost"] == 0

    by_version = usage_by(store, ["agent", "version"], since=since)
    assert [(r["agent"], r["version"], r["requests"]) for r in by_version] == [
        ("(none)", "(none)", 1),
        ("support", "v1", 22),
        ("support", "v2", 1),
    ]
    by_day = usage_by(store, ["day", "client"])
    days = [(r["day"].isoformat(), r["client"]) for r in by_day]
    utc_day = lambda t: datetime.fromtimestamp(t, UTC).date().isoformat()  # noqa: E731
    assert days[0] == (utc_day(now - 40 * DAY), "old")
    assert (utc_day(now - 2 * DAY), "globex") in days
    with pytest.raises(UserError, match="group by one or more of client, key, agent"):
        usage_by(store, ["colour"])


def test_an_async_run_is_one_request_with_its_cost_once(tmp_path: Path) -> None:
    """Its 202 (no tokens yet) and the record of its end (tokens, cost, the run's
    duration): one request, its latency the 202's, its cost and tokens once."""
    store = TraceStore(tmp_path)
    empty = {"input_tokens": 0, "output_tokens": 0, "cost": None}
    record(store, status_code=202, latency_ms=4.0, run_id="a1", **empty)
    record(store, route=ASYNC_END_ROUTE, latency_ms=9000.0, run_id="a1", cost=0.25)
    record(store, status_code=202, latency_ms=6.0, run_id="a2", **empty)
    record(store, route=ASYNC_END_ROUTE, status_code=503, latency_ms=20.0, run_id="a2")
    record(store, latency_ms=50.0, run_id="s1", cost=0.5)  # a synchronous run
    for by in (["client"], ["route"], ["client", "agent", "version", "day"]):
        (row,) = usage_by(store, by)
        assert (row["requests"], row["errors"], row["rejected"]) == (3, 1, 0), by
        assert row["tokens"] == 3 * 110 and row["cost"] == pytest.approx(0.25 + 0.002 + 0.5)
        assert row["latency_p50_ms"] == pytest.approx(6.0), by  # of 4, 6 and 50 ms
    assert usage_by(store, ["route"])[0]["route"] == ROUTE


def test_old_requests_go_with_a_prune(tmp_path: Path) -> None:
    store = TraceStore(tmp_path)
    record(store, time=time.time() - 40 * DAY, run_id=None)
    record(store, run_id=None)
    report = store.prune(timedelta(days=30))
    assert report.rows["gateway_requests"] == 1
    assert store.sql("SELECT count(*) FROM gateway_requests") == [(1,)]


def test_bad_records_are_refused_with_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="status_code='200': give the HTTP status as an int"):
        record(tmp_path, status_code="200")
    with pytest.raises(UserError, match="time='now': give epoch seconds or a datetime"):
        record(tmp_path, time="now")
    with pytest.raises(UserError, match="JSON cannot hold"):
        record(tmp_path, owner=object())
    record(tmp_path, time=datetime(2026, 12, 1, 12, 0))  # a naive datetime is UTC
    [(at,)] = TraceStore(tmp_path).sql("SELECT started_at FROM gateway_requests")
    assert at == datetime(2026, 12, 1, 12, 0)


def test_the_cli_prints_the_report(tmp_path: Path) -> None:
    store = TraceStore(tmp_path)
    for owner, cost in (("acme", 0.25), ("acme", 0.5), ("globex", 1.25)):
        record(store, owner=owner, cost=cost)
    record(store, owner="old", time=time.time() - 10 * DAY)
    runner = CliRunner()
    result = runner.invoke(
        app, ["gateway", "report", "--by", "client,agent", "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("gateway usage since ")
    headers = "client agent requests errors rejected tokens cost p50 ms p95 ms"
    assert lines[1].split() == headers.split()
    assert lines[3].split() == ["acme", "support", "2", "0", "0", "220", "$0.7500", "10.0", "10.0"]
    assert lines[4].split()[:2] == ["globex", "support"] and "$1.2500" in lines[4]
    assert lines[-1].split() == ["total", "3", "0", "0", "330", "$2.0000"]
    assert "old" not in result.output  # older than the default 7 days
    wider = runner.invoke(app, ["gateway", "report", "--since", "30d", "--workspace", tmp_path])
    assert "old" in wider.output
    bad = runner.invoke(app, ["gateway", "report", "--by", "colour", "--workspace", tmp_path])
    assert bad.exit_code == 2 and "group by one or more of" in bad.output
    bad = runner.invoke(app, ["gateway", "report", "--since", "soon", "--workspace", tmp_path])
    assert bad.exit_code == 2 and "is not an age" in bad.output
    empty = runner.invoke(app, ["gateway", "report", "--workspace", str(tmp_path / "none")])
    assert "no gateway requests in this period" in empty.output


def test_the_view_draws_cost_per_client_per_day(tmp_path: Path) -> None:
    from agentlab.ui.usage_view import UsageReport

    store = TraceStore(tmp_path)
    record(store, owner="acme", cost=0.25)
    record(store, owner="globex", cost=0.75, time=time.time() - DAY)
    view = UsageReport(store, days=7)
    assert view.total_cost == pytest.approx(1.0)
    assert "2 requests</b> from 2 clients" in view.summary.value
    assert "$1.00" in view.summary.value and "No cost recorded" not in view.summary.value
    [png] = view.chart.outputs
    assert png["data"]["image/png"]
    assert [(r["client"], r["agent"]) for r in view.rows] == [
        ("acme", "support"),
        ("globex", "support"),
    ]
    assert "<td>globex</td>" in view.table_view.value and "$0.750000" in view.table_view.value
    assert "var(--jp-" in view.table_view.value  # JupyterLab's theme colours
    record(store, owner="initech", cost=0.5)
    view.refresh()
    assert "3 clients" in view.summary.value


def test_the_view_with_zero_cost_draws_requests_and_with_nothing_no_chart(
    tmp_path: Path,
) -> None:
    from agentlab.ui.usage_view import UsageReport

    empty = UsageReport(TraceStore(tmp_path / "empty"))
    assert "No gateway requests" in empty.summary.value and not empty.chart.outputs
    assert empty.table_view.value == ""
    store = TraceStore(tmp_path)
    for _ in range(3):
        record(store, cost=0.0)
    record(store, cost=None, status_code=429)
    view = UsageReport(store, days=3, by=["client", "version"])
    assert "No cost recorded" in view.summary.value and "The chart shows requests" in (
        view.summary.value
    )
    assert len(view.chart.outputs) == 1  # requests per client per day, not empty cost axes
    assert "<th>version</th>" in view.table_view.value
    with pytest.raises(UserError, match="days must be a whole number"):
        UsageReport(store, days=0)
    with pytest.raises(UserError, match="group by one or more of"):
        UsageReport(store, by=["colour"])


if __name__ == "__main__":  # one writer process of test_records_of_two_processes_land
    workspace, client, count = sys.argv[1:]
    target = TraceStore(workspace)
    for n in range(int(count)):
        record(target, owner=client, run_id=f"{client}-{n}")
