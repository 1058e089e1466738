"""The trace store's read queries that notebooks and widgets share.

Each is one SQL statement with named parameters, run by
:class:`~agentlab.tracing.TraceStore` (``steps``, ``runs``, ``cost_by_day``).
"""

from __future__ import annotations

__all__ = ["COST_BY_DAY", "RUNS", "STEPS"]

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
