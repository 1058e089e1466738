"""Cost and usage per client: every gateway request recorded in the trace store, and
the report over them.

:func:`record_request <agentlab.tracing.gateway_requests.record_request>` appends one
line to this process's trace segment through the shared trace writer (one ``write`` of
about 300 bytes; no DuckDB connection), so every worker records at once; the store
ingests the lines into ``gateway_requests`` on its next query. :func:`usage_by
<agentlab.tracing.gateway_requests.usage_by>` groups them per client, agent, version
and day; :func:`usage_table` prints that as plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentlab.tracing.gateway_requests import record_request, usage_by

__all__ = ["record_request", "usage_by", "usage_table"]


_HEADERS = {
    "requests": "requests",
    "errors": "errors",
    "rejected": "rejected",
    "tokens": "tokens",
    "cost": "cost",
    "latency_p50_ms": "p50 ms",
    "latency_p95_ms": "p95 ms",
}


def usage_table(rows: Sequence[dict[str, Any]], by: Sequence[str]) -> str:
    """The rows of :func:`usage_by` grouped by `by` as a plain-text table, with a total
    line; "no gateway requests" when there are none."""
    if not rows:
        return "no gateway requests in this period"
    columns = [*by, *_HEADERS]
    total = {
        **{d: "" for d in by},
        **{c: sum(r[c] for r in rows) for c in ("requests", "errors", "rejected", "tokens")},
        "cost": sum(r["cost"] for r in rows),
        "latency_p50_ms": "",
        "latency_p95_ms": "",
    }
    total[by[0]] = "total"
    cells = [[_cell(c, r.get(c)) for c in columns] for r in [*rows, total]]
    heads = [_HEADERS.get(c, c) for c in columns]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    numeric = [c in _HEADERS for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(heads), rule, *map(line, cells[:-1]), rule, line(cells[-1])])


def _cell(column: str, value: Any) -> str:
    if value is None or value == "":
        return "" if value == "" else "-"
    if column == "cost":
        return f"${value:,.4f}"
    if column.startswith("latency"):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
