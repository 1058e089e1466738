"""Prometheus metrics of the gateway (``prometheus_client``), across uvicorn workers.

Several worker processes each count their own requests; Prometheus scrapes one of
them. So with several workers the counts live in files (prometheus_client's
multiprocess mode): the process that starts the workers calls
:func:`prepare_metrics_dir` first (it sets ``PROMETHEUS_MULTIPROC_DIR`` for them and
empties the directory of a previous start), and :func:`metrics_response` (mounted at
``GET /metrics``) adds up every worker's files. Without it, one process counts in
memory.

The gateway calls :func:`observe_request` once per request (accepted or rejected) and
wraps each run in :func:`run_in_flight`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.errors import MissingExtraError, UserError
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = [
    "MULTIPROC_ENV",
    "metrics_response",
    "observe_request",
    "prepare_metrics_dir",
    "run_in_flight",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def prepare_metrics_dir(
    workspace: str | os.PathLike[str] | None = None, *, directory: Path | None = None
) -> Path:
    """Make the metrics directory of a gateway start (default
    ``<workspace>/gateway/prometheus``), remove the metric files a previous start left
    there and set ``PROMETHEUS_MULTIPROC_DIR`` to it for this process and the workers
    it starts. Call it once, in the process that starts the workers, before they
    start (and before anything in this process imports ``prometheus_client``)."""
    path = Path(directory) if directory is not None else resolve_workspace(workspace)
    if directory is None:
        path = path / "gateway" / "prometheus"
    try:
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # only prometheus_client's own files
            stale.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot prepare the metrics directory {path}: {exc}; give the gateway a "
            "writable workspace"
        ) from exc
    os.environ[MULTIPROC_ENV] = str(path)
    return path


@dataclass(frozen=True)
class _Metrics:
    registry: Any  # the registry of this process's metrics when counting in memory
    multiprocess: bool
    requests: Any
    latency: Any
    tokens: Any
    cost: Any
    rejections: Any
    in_flight: Any


@functools.cache
def _metrics() -> _Metrics:
    """This process's metrics, made on first use (the multiprocess mode is fixed
    when ``prometheus_client`` is first imported)."""
    try:
        import prometheus_client
        from prometheus_client import values
    except ImportError:
        raise MissingExtraError("prometheus-client", "serve") from None
    multiprocess = values.ValueClass is not values.MutexValue
    if MULTIPROC_ENV in os.environ and not multiprocess:
        raise UserError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported in this process, "
            "so its counts would not reach the metrics directory; call "
            "prepare_metrics_dir() before anything imports prometheus_client"
        )
    # In multiprocess mode the values live in files; a registry would only repeat them.
    registry = None if multiprocess else prometheus_client.CollectorRegistry()

    def counter(name: str, text: str, *labels: str) -> Any:
        return prometheus_client.Counter(
            f"agentlab_gateway_{name}", text, labels, registry=registry
        )

    return _Metrics(
        registry=registry,
        multiprocess=multiprocess,
        requests=counter(
            "requests",
            "Gateway requests by agent, version and HTTP status",
            "agent",
            "version",
            "status",
        ),
        latency=prometheus_client.Histogram(
            "agentlab_gateway_run_duration_seconds",
            "Run latency through the gateway",
            ["agent", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        tokens=counter(
            "tokens",
            "Model tokens spent by runs, by client (key owner), agent and token type",
            "owner",
            "agent",
            "type",
        ),
        cost=counter(
            "cost_usd",
            "US dollars spent by runs, by client (key owner) and agent",
            "owner",
            "agent",
        ),
        rejections=counter(
            "rejections",
            "Requests refused, by reason (unauthorized, forbidden, rate_limited, ...)",
            "reason",
        ),
        in_flight=prometheus_client.Gauge(
            "agentlab_gateway_runs_in_flight",
            "Runs executing now (all workers)",
            multiprocess_mode="livesum",
            registry=registry,
        ),
    )


def observe_request(
    *,
    status: int,
    agent: str | None = None,
    version: str | None = None,
    owner: str | None = None,
    latency_s: float | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost: float | None = None,
    rejected: str | None = None,
) -> None:
    """Count one gateway request: its HTTP `status`; for a run, its latency, tokens
    and cost (by the key's `owner`); for a refusal, the reason `rejected`
    (``unauthorized``, ``forbidden``, ``rate_limited``, ``too_large``, ...)."""
    m = _metrics()
    agent_label, version_label = agent or "", version or ""
    m.requests.labels(agent_label, version_label, str(status)).inc()
    if rejected is not None:
        m.rejections.labels(rejected).inc()
    if latency_s is not None:
        m.latency.labels(agent_label, version_label).observe(latency_s)
    owner_label = owner or ""
    if input_tokens:
        m.tokens.labels(owner_label, agent_label, "input").inc(input_tokens)
    if output_tokens:
        m.tokens.labels(owner_label, agent_label, "output").inc(output_tokens)
    if cost:
        m.cost.labels(owner_label, agent_label).inc(cost)


@contextmanager
def run_in_flight() -> Iterator[None]:
    """Count a run as in flight while the block runs."""
    gauge = _metrics().in_flight
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def metrics_response() -> Response:
    """The Prometheus text exposition of every worker's metrics (``GET /metrics``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from starlette.responses import Response

    m = _metrics()
    registry = m.registry
    if m.multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
