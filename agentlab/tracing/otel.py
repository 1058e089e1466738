"""OpenTelemetry export of agent runs, following the GenAI semantic conventions
(``pip install 'agentlab-toolkit[otel]'``).

One observer turns the run loop's events into spans and metrics, whatever the
agent's pattern: a run is an ``invoke_agent {agent}`` span, each step a
``step {n}`` span under it, and under each step its ``chat {model}``,
``execute_tool {tool}`` and ``retrieval`` spans, with the times the events
recorded. Metrics: ``gen_ai.client.token.usage`` and
``gen_ai.client.operation.duration`` histograms.

>>> otel = configure_otel("http://collector:4318", service_name="support-gateway")
>>> otel.attach(agent)          # or Agent(..., observers=[otel.observer])
>>> otel.shutdown()             # flushes; also done at interpreter exit

Nothing is exported unless an endpoint is given (the argument,
``AGENTLAB_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``); then spans go
out over OTLP/HTTP from a background batch processor. Message contents (inputs,
outputs, tool arguments and results, retrieval queries) are left out unless
``capture_content=True`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``;
captured text is redacted like the trace (:mod:`agentlab.redact`).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentlab.errors import MissingExtraError, UserError
from agentlab.redact import default_redactor

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

__all__ = ["CAPTURE_ENV", "ENDPOINT_ENV", "OtelHandle", "OtelObserver", "configure_otel"]

ENDPOINT_ENV = "AGENTLAB_OTLP_ENDPOINT"
"""The OTLP/HTTP base URL (``/v1/traces`` and ``/v1/metrics`` are appended)."""
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""``true``: export message contents (off by default)."""
MAX_OPEN_RUNS = 10_000
"""Runs tracked at once; past it the oldest open run's spans are ended (abandoned)."""

# The conventions' recommended histogram buckets.
_TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1, 4, 16, ... 67108864
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 s ... 81.92 s
_PROPAGATED = ("gen_ai.conversation.id", "gen_ai.agent.name")  # run attributes on every span
_FAILED_TOOL = {"invalid_arguments", "unknown_tool", "error", "timeout", "denied"}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _provider_and_model(name: str) -> tuple[str, str]:
    """``"openai:gpt-4.1-mini"`` -> ``("openai", "gpt-4.1-mini")``."""
    provider, sep, model = name.partition(":")
    return (provider, model) if sep else (name, name)


@dataclass
class _Step:
    index: int
    span: Span
    context: Context
    end_ns: int


@dataclass
class _Run:
    span: Span
    context: Context
    agent: str
    step: _Step | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # common to the run's spans


class OtelObserver:
    """An event sink (``emit(event)``) that records runs as OpenTelemetry spans and
    metrics on the given providers. Add it to an agent's ``observers``."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider | None = None,
        *,
        capture_content: bool = False,
    ) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._trace, self._kind, self._status, self._code = trace, SpanKind, Status, StatusCode
        self._tracer = tracer_provider.get_tracer("agentlab")
        self.capture_content = capture_content
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._lock = threading.Lock()
        self._tokens = self._duration = None
        if meter_provider is not None:
            meter = meter_provider.get_meter("agentlab")
            self._tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Tokens used per model request, by token type",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            )
            self._duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="Duration of GenAI operations (chat, execute_tool, invoke_agent)",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
        self._handlers = {
            "run_started": self._run_started,
            "run_resumed": self._run_resumed,
            "model_call": self._model_call,
            "tool_call": self._tool_call,
            "memory_retrieval": self._retrieval,
            "run_paused": self._run_paused,
            "run_finished": self._run_finished,
        }

    def emit(self, event: Any) -> None:
        """Record one run event (other kinds are ignored)."""
        handler = self._handlers.get(getattr(event, "kind", ""))
        if handler is not None:
            with self._lock:
                handler(event)

    # -- runs ----------------------------------------------------------------------

    def _run_started(self, e: Any) -> None:
        provider, model = _provider_and_model(e.model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": e.agent,
            "gen_ai.conversation.id": e.session or e.run_id,
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
            "agentlab.run.id": e.run_id,
        }
        if self.capture_content:
            attributes["gen_ai.input.messages"] = self._content(
                [{"role": "user", "parts": [{"type": "text", "content": e.input}]}]
            )
        self._open_run(e.run_id, e.agent, _ns(e.started_at), attributes)

    def _run_resumed(self, e: Any) -> None:
        """A paused run carries on (here or in another process): a new run span."""
        if e.run_id in self._runs:
            return
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.conversation.id": e.run_id,
            "agentlab.run.id": e.run_id,
            "agentlab.run.resumed": True,
        }
        if e.agent is not None:  # optional: events made before the field existed lack it
            attributes["gen_ai.agent.name"] = e.agent
        self._open_run(e.run_id, e.agent, _ns(e.resumed_at), attributes)

    def _open_run(
        self, run_id: str, agent: str | None, start_ns: int, attributes: dict[str, Any]
    ) -> None:
        span = self._tracer.start_span(
            f"invoke_agent {agent}" if agent else "invoke_agent",
            kind=self._kind.INTERNAL,
            attributes=attributes,
            start_time=start_ns,
        )
        common: dict[str, Any] = {k: attributes[k] for k in _PROPAGATED if k in attributes}
        self._runs[run_id] = _Run(
            span, self._trace.set_span_in_context(span), agent or "", attributes=common
        )
        while len(self._runs) > MAX_OPEN_RUNS:
            _, stale = self._runs.popitem(last=False)
            self._close_run(stale, None, "abandoned", error="abandoned")

    def _run_paused(self, e: Any) -> None:
        run = self._runs.pop(e.run_id, None)
        if run is None:
            return
        self._close_run(run, _ns(e.paused_at), "paused")

    def _run_finished(self, e: Any) -> None:
        run = self._runs.pop(e.run_id, None)
        if run is None:
            return
        span = run.span
        span.set_attribute("gen_ai.usage.input_tokens", e.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", e.output_tokens)
        span.set_attribute("agentlab.run.steps", e.steps)
        if e.cost is not None:
            span.set_attribute("agentlab.cost_usd", e.cost)
        if self.capture_content and e.output is not None:
            span.set_attribute("gen_ai.output.messages", self._reply(e.output, (), "stop"))
        error = None
        if e.status != "completed":
            error = (e.failure or {}).get("error") or (e.failure or {}).get("kind") or e.status
        self._close_run(run, _ns(e.ended_at), e.status, error=error)
        self._record_duration(e.latency_ms, "invoke_agent", {"gen_ai.agent.name": run.agent}, error)

    def _close_run(
        self, run: _Run, end_ns: int | None, status: str, *, error: str | None = None
    ) -> None:
        self._end_step(run)
        run.span.set_attribute("agentlab.run.status", status)
        if error is not None:
            run.span.set_attribute("error.type", str(error))
            run.span.set_status(self._status(self._code.ERROR, f"run {status}"))
        run.span.end(end_time=end_ns)

    # -- steps ----------------------------------------------------------------------

    def _step_context(self, run: _Run, index: int, start_ns: int, end_ns: int) -> Context:
        """The context of step `index`'s span (started by the step's first event);
        the previous step's span ends where its last child ended."""
        step = run.step
        if step is None or step.index != index:
            self._end_step(run)
            span = self._tracer.start_span(
                f"step {index}",
                context=run.context,
                kind=self._kind.INTERNAL,
                attributes={**run.attributes, "agentlab.step": index},
                start_time=start_ns,
            )
            step = run.step = _Step(index, span, self._trace.set_span_in_context(span), end_ns)
        step.end_ns = max(step.end_ns, end_ns)
        return step.context

    def _end_step(self, run: _Run) -> None:
        if run.step is not None:
            run.step.span.end(end_time=run.step.end_ns)
            run.step = None

    def _child(
        self, e: Any, name: str, kind: Any, attributes: dict[str, Any], error: str | None
    ) -> None:
        """A span of step ``e.step`` of its run, from ``e.started_at`` for ``e.latency_ms``."""
        run = self._runs.get(e.run_id)
        if run is None:
            return
        start = _ns(e.started_at)
        end = start + int(e.latency_ms * 1e6)
        span = self._tracer.start_span(
            name,
            context=self._step_context(run, e.step, start, end),
            kind=kind,
            attributes={**run.attributes, **attributes},
            start_time=start,
        )
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(self._status(self._code.ERROR, error))
        span.end(end_time=end)

    # -- model calls, tool calls, retrievals -------------------------------------------

    def _model_call(self, e: Any) -> None:
        provider, model = _provider_and_model(e.model)
        served = _provider_and_model(e.served_by)[1] if e.served_by else model
        reply = e.response
        error = None
        if e.status == "error":
            error = next(
                (a["error_type"] for a in reversed(e.attempts) if a.get("error_type")),
                "not_sent" if (e.error or "").startswith("not sent") else "model_error",
            )
        finish = "error" if reply is None else "tool_call" if reply.tool_calls else "stop"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": served,
            "gen_ai.usage.input_tokens": e.input_tokens,
            "gen_ai.usage.output_tokens": e.output_tokens,
            "gen_ai.response.finish_reasons": [finish],
            "agentlab.step": e.step,
        }
        if e.cost is not None:
            attributes["agentlab.cost_usd"] = e.cost
        if e.route:
            attributes["agentlab.route"] = e.route
        if self.capture_content:
            attributes["gen_ai.input.messages"] = self._content(
                [m.model_dump(mode="json") for m in e.messages]
            )
            if reply is not None:
                calls = [c.model_dump(mode="json") for c in reply.tool_calls]
                attributes["gen_ai.output.messages"] = self._reply(reply.content, calls, finish)
        self._child(e, f"chat {model}", self._kind.CLIENT, attributes, error)
        metric = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": served,
        }
        if self._tokens is not None and error is None:
            self._tokens.record(e.input_tokens, {**metric, "gen_ai.token.type": "input"})
            self._tokens.record(e.output_tokens, {**metric, "gen_ai.token.type": "output"})
        self._record_duration(e.latency_ms, "chat", metric, error)

    def _tool_call(self, e: Any) -> None:
        error = e.status if e.status in _FAILED_TOOL else None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": e.tool,
            "gen_ai.tool.type": "function",
            "agentlab.step": e.step,
            "agentlab.tool.status": e.status,
        }
        if e.call_id:
            attributes["gen_ai.tool.call.id"] = e.call_id
        if e.cache is not None:
            attributes["agentlab.tool.cache"] = e.cache
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = self._text(e.arguments)
            if e.result is not None:
                attributes["gen_ai.tool.call.result"] = self._text(e.result)
        self._child(e, f"execute_tool {e.tool}", self._kind.INTERNAL, attributes, error)
        self._record_duration(e.latency_ms, "execute_tool", {"gen_ai.tool.name": e.tool}, error)

    def _retrieval(self, e: Any) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "retrieval",
            "agentlab.memory.mode": e.mode,
            "agentlab.memory.source": e.source,
            "agentlab.memory.k": e.k,
            "agentlab.memory.hits": len(e.hits),
            "agentlab.memory.entered": len(e.entered),
            "agentlab.step": e.step,
        }
        if self.capture_content:
            attributes["gen_ai.retrieval.query.text"] = self._text(e.query)
        self._child(e, "retrieval", self._kind.INTERNAL, attributes, None)

    # -- helpers ----------------------------------------------------------------------

    def _record_duration(
        self, latency_ms: float, operation: str, attributes: dict[str, Any], error: str | None
    ) -> None:
        if self._duration is None:
            return
        attributes = {**attributes, "gen_ai.operation.name": operation}
        if error is not None:
            attributes["error.type"] = error
        self._duration.record(latency_ms / 1000, attributes)

    def _text(self, text: str) -> str:
        return default_redactor().redact_text(text)

    def _content(self, value: Any) -> str:
        return self._text(json.dumps(value, ensure_ascii=False))

    def _reply(self, text: str | None, calls: Any, finish: str) -> str:
        parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
        parts += [{"type": "tool_call", **c} for c in calls]
        return self._content([{"role": "assistant", "parts": parts, "finish_reason": finish}])


@dataclass
class OtelHandle:
    """What :func:`configure_otel` set up: ``enabled`` is False when no endpoint was
    configured (then :meth:`attach` does nothing and nothing is imported or sent)."""

    endpoint: str | None
    observer: OtelObserver | None = None
    tracer_provider: Any = None
    meter_provider: Any = None

    @property
    def enabled(self) -> bool:
        return self.observer is not None

    def attach(self, agent: Any) -> None:
        """Add the observer to `agent`'s observers (once); a no-op when disabled."""
        if self.observer is not None and self.observer not in agent.observers:
            agent.observers = (*agent.observers, self.observer)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Export everything recorded so far; False if it did not finish in time."""
        if self.observer is None:
            return True
        millis = int(timeout_s * 1000)
        spans = self.tracer_provider.force_flush(millis)
        return bool(self.meter_provider.force_flush(millis) and spans)

    def shutdown(self) -> None:
        """Flush and stop the exporters (idempotent; also run at interpreter exit)."""
        if self.observer is None:
            return
        self.observer = None
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def configure_otel(
    endpoint: str | None = None,
    service_name: str = "agentlab",
    *,
    capture_content: bool | None = None,
    export_interval_s: float = 15.0,
    resource: dict[str, Any] | None = None,
) -> OtelHandle:
    """Export runs over OTLP/HTTP to `endpoint` (default: ``$AGENTLAB_OTLP_ENDPOINT``,
    then ``$OTEL_EXPORTER_OTLP_ENDPOINT``), the collector's base URL such as
    ``http://127.0.0.1:4318``. With none, the handle is disabled and nothing is sent.

    Spans go through a batch processor, metrics every `export_interval_s`; headers
    (an API key) come from ``OTEL_EXPORTER_OTLP_HEADERS`` as usual. `resource` adds
    resource attributes (``deployment.environment``, ...). The providers are this
    handle's own: a global OpenTelemetry setup of the application is left alone.
    """
    url = (
        endpoint
        or os.environ.get(ENDPOINT_ENV)
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or None
    )
    if url is None:
        return OtelHandle(endpoint=None)
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(
            f"OTLP endpoint {url!r} is not an http(s) URL; give the collector's OTLP/HTTP "
            "base URL, e.g. http://127.0.0.1:4318 (/v1/traces is added)"
        )
    if capture_content is None:
        capture_content = os.environ.get(CAPTURE_ENV, "").strip().lower() in ("1", "true")
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise MissingExtraError("opentelemetry-sdk", "otel") from None
    attributes = {"service.name": service_name, **(resource or {})}
    tracer_provider = TracerProvider(resource=Resource.create(attributes))
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces"))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{url}/v1/metrics"),
        export_interval_millis=export_interval_s * 1000,
    )
    meter_provider = MeterProvider(resource=Resource.create(attributes), metric_readers=[reader])
    handle = OtelHandle(
        endpoint=url,
        observer=OtelObserver(tracer_provider, meter_provider, capture_content=capture_content),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    atexit.register(handle.shutdown)
    return handle
