"""Gateway request records: one JSON line per request, the ``gateway_requests`` table,
and usage per client, agent, version and day.

Gateway workers append each request (:func:`record_request`) as a line of kind
``gateway_request`` to their own trace segment (:meth:`TraceWriter.emit_record
<agentlab.tracing.writer.TraceWriter.emit_record>`: no DuckDB connection per request,
several processes at once); the store's ingest loads the lines into
``gateway_requests`` with the events (:mod:`agentlab.tracing.ingest`). Its time column
is ``started_at``, so :meth:`TraceStore.prune <agentlab.tracing.TraceStore.prune>`
deletes old requests with old runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from agentlab.errors import UserError
from agentlab.tracing.writer import TraceWriter, get_writer, shared_writer
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:  # the store ingests with this module's SQL: imported where used
    from agentlab.tracing.store import TraceStore

__all__ = [
    "ASYNC_END_ROUTE",
    "INSERT_REQUESTS",
    "LOAD_REQUESTS",
    "REQUEST_COLUMNS",
    "REQUEST_KIND",
    "USAGE_DIMENSIONS",
    "record_request",
    "usage_by",
]

REQUEST_KIND = "gateway_request"
RUN_ROUTE = "/v1/agents/{agent}/runs"
ASYNC_END_ROUTE = f"{RUN_ROUTE} (async run ended)"
"""The route of the record an async run adds when it ends, with its tokens, cost and
duration (its request, answered 202, has none yet): not a request of its own."""

# The fields of a request line, with the type ingest reads each as.
REQUEST_COLUMNS = {
    "kind": "VARCHAR",
    "started_at": "DOUBLE",  # epoch seconds
    "key_id": "VARCHAR",
    "owner": "VARCHAR",
    "agent": "VARCHAR",
    "version": "VARCHAR",
    "route": "VARCHAR",
    "status_code": "INTEGER",
    "run_id": "VARCHAR",
    "input_tokens": "BIGINT",
    "output_tokens": "BIGINT",
    "cost": "DOUBLE",
    "latency_ms": "DOUBLE",
    "error_id": "VARCHAR",
}

# Ingest: a pass's request lines into a temporary table, then into the store.
LOAD_REQUESTS = f"""
CREATE OR REPLACE TEMP TABLE _requests AS
FROM read_json($files, format = 'newline_delimited', columns = $columns,
               ignore_errors = true, maximum_object_size = 1073741824)
WHERE kind = '{REQUEST_KIND}' AND started_at IS NOT NULL AND status_code IS NOT NULL
"""
INSERT_REQUESTS = """
INSERT INTO gateway_requests
SELECT make_timestamp(CAST(round(started_at * 1e6) AS BIGINT)), key_id, owner, agent, version,
       route, status_code, run_id, input_tokens, output_tokens, cost, latency_ms, error_id
FROM _requests
"""


def record_request(
    workspace_or_store: TraceStore | str | os.PathLike[str] | None,
    *,
    time: float | datetime,
    key_id: str | None,
    owner: str | None,
    agent: str | None,
    version: str | None,
    route: str,
    status_code: int,
    run_id: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cost: float | None,
    latency_ms: float | None,
    error_id: str | None,
) -> None:
    """Record one gateway request, accepted or rejected, in the trace store.

    `time` is when it arrived (epoch seconds, or a datetime; naive is UTC); `key_id`
    and `owner` (the client) are None when no valid key came; `agent` and `version`
    None when none was chosen; `route` the route template (``/v1/agents/{agent}/runs``);
    `run_id`, tokens and `cost` (USD) those of the run it started, if any; `latency_ms`
    the time to the response; `error_id` the trace store's record of a 500 or a crash.

    One line through this process's shared trace writer: durable as that writer is
    (see :class:`~agentlab.tracing.TraceWriter`). Pass the gateway's
    :class:`~agentlab.tracing.TraceStore` (a path is resolved on every call).
    """
    if isinstance(time, datetime):
        time = (time if time.tzinfo else time.replace(tzinfo=UTC)).timestamp()
    elif isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time):
        raise UserError(f"time={time!r}: give epoch seconds or a datetime (naive: UTC)")
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise UserError(f"status_code={status_code!r}: give the HTTP status as an int")
    if not isinstance(route, str):
        raise UserError(f"route={route!r}: give the route as a string, e.g. '/v1/agents/x/runs'")
    record = {
        "kind": REQUEST_KIND,
        "started_at": time,
        "key_id": key_id,
        "owner": owner,
        "agent": agent,
        "version": version,
        "route": route,
        "status_code": status_code,
        "run_id": run_id,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost": cost,
        "latency_ms": latency_ms,
        "error_id": error_id,
    }
    try:
        line = to_json(record) + b"\n"
    except ValueError as exc:  # pydantic_core's error for values it cannot serialise
        raise UserError(f"a gateway request record holds a value JSON cannot hold: {exc}") from exc
    _writer(workspace_or_store).emit_record(line)


def _writer(target: TraceStore | str | os.PathLike[str] | None) -> TraceWriter:
    """This process's shared writer for the workspace of `target`."""
    from agentlab.tracing.store import TraceStore

    workspace = target.workspace if isinstance(target, TraceStore) else resolve_workspace(target)
    return shared_writer(workspace) or get_writer(workspace)


# What usage can be grouped by, with the SQL of each.
USAGE_DIMENSIONS = {
    "client": "coalesce(owner, '(no key)')",
    "key": "coalesce(key_id, '(no key)')",
    "agent": "coalesce(agent, '(none)')",
    "version": "coalesce(version, '(none)')",
    "route": f"CASE route WHEN '{ASYNC_END_ROUTE}' THEN '{RUN_ROUTE}' ELSE route END",
    "day": "CAST(date_trunc('day', started_at) AS DATE)",
}
# The records of requests: all but the ends of async runs.
_REQUEST = f"route IS DISTINCT FROM '{ASYNC_END_ROUTE}'"


def usage_by(
    store: TraceStore,
    by: Sequence[str] = ("client",),
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Gateway usage grouped by `by` (any of :data:`USAGE_DIMENSIONS`: ``client`` (the
    key's owner), ``key``, ``agent``, ``version``, ``route``, ``day`` (UTC)) for the
    requests that arrived in [`since`, `until`) (naive datetimes are UTC).

    One dict per group, ordered by the groups: the group's values, ``requests``,
    ``errors`` (status 500 and above), ``rejected`` (400-499: bad keys, rate limits,
    budgets, invalid bodies), ``input_tokens``, ``output_tokens``, ``tokens``, ``cost``
    (USD), ``latency_p50_ms`` and ``latency_p95_ms`` (the time to the response).

    An async run is one request: its 202 is the request (and its latency), the record
    its end adds (:data:`ASYNC_END_ROUTE`) brings its tokens and cost, and its error
    when a shutdown stopped it.
    """
    dimensions = _dimensions(by)
    groups = ", ".join(f"{USAGE_DIMENSIONS[d]} AS {d}" for d in dimensions)
    query = f"""
SELECT {groups}, count(*) FILTER (WHERE {_REQUEST}) AS requests,
       count(*) FILTER (WHERE status_code >= 500) AS errors,
       count(*) FILTER (WHERE status_code BETWEEN 400 AND 499) AS rejected,
       CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
       CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
       CAST(coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS BIGINT)
           AS tokens,
       coalesce(sum(cost), 0.0) AS cost,
       quantile_cont(latency_ms, 0.5) FILTER (WHERE {_REQUEST}) AS latency_p50_ms,
       quantile_cont(latency_ms, 0.95) FILTER (WHERE {_REQUEST}) AS latency_p95_ms
FROM gateway_requests
WHERE ($since IS NULL OR started_at >= $since) AND ($until IS NULL OR started_at < $until)
GROUP BY ALL ORDER BY {", ".join(dimensions)}
"""
    with store.connect() as con:
        result = con.execute(query, {"since": _naive_utc(since), "until": _naive_utc(until)})
        rows = result.fetchall()
        columns = [d[0] for d in result.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _dimensions(by: Sequence[str]) -> list[str]:
    names = [by] if isinstance(by, str) else list(by)
    unknown = [d for d in names if d not in USAGE_DIMENSIONS]
    if not names or unknown or len(set(names)) != len(names):
        raise UserError(
            f"usage by {names!r}: group by one or more of {', '.join(USAGE_DIMENSIONS)}, "
            "each once (e.g. ['client', 'day'])"
        )
    return names


def _naive_utc(when: datetime | None) -> datetime | None:
    if when is not None and not isinstance(when, datetime):
        raise UserError(f"{when!r}: give a datetime.datetime (UTC when naive), or None")
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)
