"""Test set-up: real model requests are blocked unless a test opts in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentlab.models import allow_model_requests, set_allow_model_requests

set_allow_model_requests(False)


@pytest.fixture
def allow_real_models() -> Iterator[None]:
    """Opt in to requests to real models (the local model, a loopback server)."""
    with allow_model_requests(True):
        yield


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh agentlab workspace directory, also set as the default."""
    path = tmp_path / "ws"
    monkeypatch.setenv("AGENTLAB_WORKSPACE", str(path))
    return path


# -- the `slow` marker -------------------------------------------------------------
# Whole modules, by file name, chosen from measured durations (`pytest --durations=0`
# on a 2-core machine): each starts real servers, Jupyter kernels, a browser, the
# local model or fleets of subprocesses, and together they are most of the suite's
# time. `make test-fast` (`pytest -m "not slow"`) runs the rest in well under a
# minute; `make test` runs everything. Tests marked `local_model` are slow wherever
# they are.
SLOW_MODULES = frozenset(
    {
        "test_notebooks.py",  # papermill kernels, the local model (~35 s)
        "test_demo.py",  # the whole demo, evaluation and export (~34 s)
        "test_export.py",  # re-runs the eval notebook, builds and installs packages (~18 s)
        "test_long_term.py",  # LanceDB and the ONNX embedder (~10 s)
        "test_eval_notebook.py",  # papermill kernels (~9 s)
        "test_local_model.py",  # the local model (~5 s)
        "test_trace_durability.py",  # writer processes killed mid-run (~5 s)
        "test_cli.py",  # the CLI in subprocesses (~4 s)
        "test_serve_model.py",  # the local model behind a real HTTP server (~3 s)
        "test_gateway_app.py",  # `agentlab serve` with 2 uvicorn workers (~25 s)
        "test_gateway_fuzz.py",  # schemathesis, ~2,500 requests to `agentlab serve` (~45 s)
        "test_gateway_overload.py",  # 2 workers on Redis, a 400-request burst (~8 s)
        "test_trace_concurrency.py",  # fleets of writer and reader processes (~3 s)
        "test_agent_processes.py",  # fleets of agent processes (~1.3 s)
        "test_fault_server.py",  # the fault-injecting model server itself, hangs included (~6 s)
        "test_browser.py",  # JupyterLab and Chromium (~50 s)
        "test_browser_evals.py",  # JupyterLab and Chromium (~30 s)
        "test_browser_workbench.py",  # JupyterLab and Chromium (~25 s)
        "test_browser_traces.py",  # JupyterLab and Chromium (~25 s)
        "test_browser_plan.py",  # JupyterLab and Chromium (~20 s)
        "test_browser_state_machine.py",  # JupyterLab and Chromium (~20 s)
        "test_kill_recovery.py",  # ~380 forked processes SIGKILLed and recovered (~2-3 min)
        "test_export_wheelhouse.py",  # offline installs in fresh venvs (~2 min)
        "test_browser_usage.py",  # JupyterLab and Chromium (~20 s)
        "test_otel_phoenix.py",  # a real Phoenix OTLP receiver (~15-30 s)
    }
)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under exactly `-m "not slow"` (`make test-fast`) a slow module is not even
    imported: every test in it would be deselected, and importing some of them
    (JupyterLab and playwright, LanceDB) takes seconds."""
    if collection_path.name in SLOW_MODULES and config.option.markexpr.strip() == "not slow":
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = pytest.mark.slow
    for item in items:
        if item.path.name in SLOW_MODULES or item.get_closest_marker("local_model"):
            item.add_marker(slow)


@pytest.fixture(autouse=True)
def _fresh_circuit_breakers() -> Iterator[None]:
    """Circuit breakers are shared by every run of a process: each test starts with none."""
    from agentlab.resilience import breaker_registry

    breaker_registry().reset()
    yield
    breaker_registry().reset()


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster of two one-CPU nodes on loopback, shared by the Ray tests (which
    are skipped without the ``ray`` extra). Teardown checks that no process is left."""
    pytest.importorskip("ray")
    import psutil

    from agentlab.evals.executors.ray_cluster import LocalRayCluster

    cluster = LocalRayCluster(nodes=2, cpus_per_node=1, timeout=120).start()
    try:
        yield cluster
    finally:
        started = [psutil.Process(pid) for pid in cluster.pids()]
        cluster.stop()
        _, alive = psutil.wait_procs(started, timeout=10)
        assert alive == [], f"Ray processes left behind: {alive}"
