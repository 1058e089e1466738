"""The gateway's Prometheus metrics: workers in separate processes record, one
scrape sees them all (prometheus_client's multiprocess mode)."""

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentlab.errors import UserError
from agentlab.serve.gateway.metrics import MULTIPROC_ENV, prepare_metrics_dir

RECORD = """
from agentlab.serve.gateway.metrics import observe_request, run_in_flight, metrics_response
import sys
observe_request(status=200, agent="support", version="v1", owner="acme", latency_s=0.2,
                input_tokens=100, output_tokens=20, cost=0.5)
observe_request(status=429, agent="support", version="v1", owner="acme", rejected="rate_limited")
"""


def python(code, env, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    env["AGENTLAB_WORKSPACE"] = str(tmp_path / "ws")
    return env


def test_two_worker_processes_record_and_one_scrape_sees_both(tmp_path, env, monkeypatch):
    monkeypatch.setenv(MULTIPROC_ENV, "")  # restored (unset) after the test
    directory = prepare_metrics_dir(tmp_path / "ws")
    assert directory == tmp_path / "ws" / "gateway" / "prometheus"
    env[MULTIPROC_ENV] = os.environ[MULTIPROC_ENV]
    # worker B: records, then holds a run in flight until told to stop
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RECORD + "\nwith run_in_flight():\n    print('ready', flush=True)\n"
            "    sys.stdin.readline()\n",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        # worker A: records, then answers the scrape
        scrape = RECORD + "\nsys.stdout.write(metrics_response().body.decode())\n"
        done = python(scrape, env)
        assert done.returncode == 0, done.stderr
        seen = samples(done.stdout)
    finally:
        holder.communicate("go\n", timeout=30)
    labels = frozenset({"agent": "support", "version": "v1", "status": "200"}.items())
    assert seen[("agentlab_gateway_requests_total", labels)] == 2
    rejected = frozenset({"agent": "support", "version": "v1", "status": "429"}.items())
    assert seen[("agentlab_gateway_requests_total", rejected)] == 2
    reason = frozenset({"reason": "rate_limited"}.items())
    assert seen[("agentlab_gateway_rejections_total", reason)] == 2
    owner = {"owner": "acme", "agent": "support"}
    assert (
        seen[("agentlab_gateway_tokens_total", frozenset({**owner, "type": "input"}.items()))]
        == 200
    )
    assert (
        seen[("agentlab_gateway_tokens_total", frozenset({**owner, "type": "output"}.items()))]
        == 40
    )
    assert seen[("agentlab_gateway_cost_usd_total", frozenset(owner.items()))] == 1.0
    latency = frozenset({"agent": "support", "version": "v1"}.items())
    assert seen[("agentlab_gateway_run_duration_seconds_count", latency)] == 2
    assert seen[("agentlab_gateway_run_duration_seconds_sum", latency)] == pytest.approx(0.4)
    assert seen[("agentlab_gateway_runs_in_flight", frozenset())] == 1
    # the run ended: the next scrape sees it gone; a new start forgets the old counts
    after = python(
        "from agentlab.serve.gateway.metrics import metrics_response\n"
        "print(metrics_response().body.decode())",
        env,
    )
    assert samples(after.stdout)[("agentlab_gateway_runs_in_flight", frozenset())] == 0
    (directory / "notes.txt").write_text("keep me")
    prepare_metrics_dir(tmp_path / "ws")
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]


def test_one_process_counts_in_memory(env):
    done = python(RECORD + "\nprint(metrics_response().body.decode())\n", env)
    assert done.returncode == 0, done.stderr
    seen = samples(done.stdout)
    reason = frozenset({"reason": "rate_limited"}.items())
    assert seen[("agentlab_gateway_rejections_total", reason)] == 1


def test_a_multiproc_dir_set_too_late_is_a_clear_error(tmp_path, env):
    code = f"""
    import os, prometheus_client
    os.environ[{MULTIPROC_ENV!r}] = {str(tmp_path)!r}
    from agentlab.serve.gateway.metrics import observe_request
    observe_request(status=200)
    """
    done = python(code, env)
    assert done.returncode != 0 and "prepare_metrics_dir() before" in done.stderr
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="cannot prepare the metrics directory"):
        prepare_metrics_dir(directory=tmp_path / "file.txt" / "sub")


def test_the_gateway_counts_its_requests_behind_the_metrics_scope(tmp_path, monkeypatch):
    """Through the gateway app: a run and a refusal are counted, and ``GET /metrics``
    needs the ``metrics`` scope."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from agentlab.serve.gateway.app import create_gateway_app
    from agentlab.serve.gateway.config import GatewayConfig
    from agentlab.serve.gateway.keys import SQLiteKeyStore

    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    store = SQLiteKeyStore(tmp_path / "ws" / "gateway.sqlite")
    user = store.create("metrics-client", ["agents:*"])[1]
    scraper = store.create("prometheus", ["metrics"])[1]
    cfg = GatewayConfig.model_validate(
        {
            "workspace": str(tmp_path / "ws"),
            "agents": {
                "echo": {"versions": [{"version": "1", "factory": "gateway_fixtures.agents:echo"}]}
            },
        }
    )
    with TestClient(create_gateway_app(cfg)) as client:
        ran = client.post(
            "/v1/agents/echo/runs",
            json={"input": "hi"},
            headers={"Authorization": f"Bearer {user}"},
        )
        assert ran.status_code == 200, ran.text
        assert client.post("/v1/agents/echo/runs", json={"input": "hi"}).status_code == 401
        refused = client.get("/metrics", headers={"Authorization": f"Bearer {user}"})
        assert refused.status_code == 403
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
    assert scraped.status_code == 200
    found = samples(scraped.text)
    ok = (
        "agentlab_gateway_requests_total",
        frozenset({"agent": "echo", "version": "1", "status": "200"}.items()),
    )
    assert found[ok] >= 1
    unauthorized = (
        "agentlab_gateway_rejections_total",
        frozenset({"reason": "unauthorized"}.items()),
    )
    assert found[unauthorized] >= 1
    latency = (
        "agentlab_gateway_run_duration_seconds_count",
        frozenset({"agent": "echo", "version": "1"}.items()),
    )
    assert found[latency] >= 1
