"""The trace store's read queries that notebooks and widgets share.

Each is one SQL statement with named parameters, run by
:class:`~agentlab.tracing.TraceStore` (``steps``, ``runs``, ``cost_by_day``,
``runs_page``, ``count_runs``, ``run_facets``, ``cost_by_model``, ``costliest_tools``).
:class:`RunFilter` says which runs the paged queries keep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from agentlab.errors import UserError

__all__ = [
    "COSTLIEST_TOOLS",
    "COST_BY_DAY",
    "COST_BY_MODEL",
    "COUNT_RUNS",
    "RUNS",
    "RUNS_PAGE",
    "RUN_FACETS",
    "STEPS",
    "RunFilter",
]

# One run's model calls and tool calls, in step order, with cost and latency.
STEPS = """
SELECT step, 'model_call' AS kind, model AS name, status, input_tokens, output_tokens, cost,
       latency_ms, started_at, CAST(messages AS VARCHAR) AS input,
       CAST(response AS VARCHAR) AS output, error, id
FROM model_calls WHERE run_id = $run_id
UNION ALL
SELECT step, 'tool_call', tool, status, NULL, NULL, NULL, latency_ms, started_at, arguments,
       result, error, id
FROM tool_calls WHERE run_id = $run_id
ORDER BY step, started_at, kind
"""

# The latest runs, newest first.
RUNS = """
SELECT run_id, agent, model, status, steps, input_tokens, output_tokens, cost, latency_ms,
       started_at, ended_at, input, output, explanation
FROM runs ORDER BY started_at DESC NULLS LAST, run_id LIMIT $limit
"""

# Model calls, tokens and cost per agent per UTC day of the call, in a time range.
COST_BY_DAY = """
SELECT CAST(date_trunc('day', m.started_at) AS DATE) AS day, r.agent,
       count(*) AS model_calls, CAST(sum(m.input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(m.output_tokens) AS BIGINT) AS output_tokens, sum(m.cost) AS cost
FROM model_calls AS m JOIN runs AS r USING (run_id)
WHERE ($since IS NULL OR m.started_at >= $since) AND ($until IS NULL OR m.started_at < $until)
  AND ($agent IS NULL OR r.agent = $agent)
GROUP BY ALL ORDER BY day, r.agent
"""


@dataclass(frozen=True)
class RunFilter:
    """Which runs a page lists (every field None or False: all of them).

    `agent` and `status` must equal the run's; `since` (inclusive) and `until`
    (exclusive) bound its start (naive datetimes are UTC); `min_cost` is in US
    dollars (runs of unknown cost never pass it); `alerts_only` keeps the runs
    that raised at least one loop alert.
    """

    agent: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_cost: float | None = None
    alerts_only: bool = False

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                raise UserError(
                    f"RunFilter({name}={value!r}): give a datetime.datetime (UTC when naive), "
                    "or None for no bound"
                )
        if self.since is not None and self.until is not None:
            since, until = self.since, self.until
            if (since.tzinfo is None) == (until.tzinfo is None) and since >= until:
                raise UserError(
                    f"RunFilter: since ({since}) must be before until ({until}); "
                    "swap them or drop one"
                )
        cost = self.min_cost
        if cost is not None and (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or cost < 0
        ):
            raise UserError(
                f"RunFilter(min_cost={cost!r}): give a dollar amount of 0 or more, or None"
            )
        if not isinstance(self.alerts_only, bool):
            raise UserError(f"RunFilter(alerts_only={self.alerts_only!r}): give True or False")


# The conditions of a RunFilter on `runs AS r` (parameters named as its fields).
_RUN_WHERE = """
WHERE ($agent IS NULL OR r.agent = $agent) AND ($status IS NULL OR r.status = $status)
  AND ($since IS NULL OR r.started_at >= $since) AND ($until IS NULL OR r.started_at < $until)
  AND ($min_cost IS NULL OR r.cost >= $min_cost)
  AND (NOT $alerts_only OR r.run_id IN (SELECT run_id FROM alerts))
"""

# One page of the runs a RunFilter keeps, by order ("newest" first, or costliest
# first), with each run's count of loop alerts and its input cut to 200 characters.
RUNS_PAGE = {
    order: f"""
SELECT r.run_id, r.started_at, r.agent, r.model, r.status, r.steps, r.input_tokens,
       r.output_tokens, r.cost, r.latency_ms,
       (SELECT count(*) FROM alerts AS a WHERE a.run_id = r.run_id) AS alerts,
       left(r.input, 200) AS input
FROM runs AS r {_RUN_WHERE}
ORDER BY {key} NULLS LAST, r.run_id LIMIT $limit OFFSET $offset
"""
    for order, key in (("newest", "r.started_at DESC"), ("cost", "r.cost DESC"))
}

# How many runs a RunFilter keeps.
COUNT_RUNS = f"SELECT count(*) FROM runs AS r {_RUN_WHERE}"

# The agents and the statuses the runs have, sorted (what a filter can choose).
RUN_FACETS = """
SELECT coalesce(list(DISTINCT agent ORDER BY agent) FILTER (WHERE agent IS NOT NULL), []),
       coalesce(list(DISTINCT status ORDER BY status), [])
FROM runs
"""

# Model calls, runs, tokens and cost per model that answered, in a time range; costliest first.
COST_BY_MODEL = """
SELECT coalesce(m.served_by, m.model) AS model, count(*) AS model_calls,
       count(DISTINCT m.run_id) AS runs, CAST(sum(m.input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(m.output_tokens) AS BIGINT) AS output_tokens, sum(m.cost) AS cost
FROM model_calls AS m
WHERE ($since IS NULL OR m.started_at >= $since) AND ($until IS NULL OR m.started_at < $until)
GROUP BY ALL ORDER BY cost DESC NULLS LAST, model
"""

# Per tool, in a time range: calls, failed calls, total and mean latency, and the cost of
# the model calls that asked for them (a step's model call shared evenly between the tool
# calls it made); costliest first, then slowest in total.
COSTLIEST_TOOLS = """
WITH calls AS (
    SELECT run_id, step, tool, status, latency_ms,
           count(*) OVER (PARTITION BY run_id, step) AS in_step
    FROM tool_calls
    WHERE ($since IS NULL OR started_at >= $since) AND ($until IS NULL OR started_at < $until)
)
SELECT c.tool, count(*) AS calls, count(*) FILTER (WHERE c.status <> 'ok') AS errors,
       sum(c.latency_ms) AS latency_ms, avg(c.latency_ms) AS mean_latency_ms,
       sum(m.cost / c.in_step) AS model_cost
FROM calls AS c LEFT JOIN model_calls AS m ON m.run_id = c.run_id AND m.step = c.step
GROUP BY c.tool
ORDER BY model_cost DESC NULLS LAST, latency_ms DESC NULLS LAST, c.tool LIMIT $limit
"""
