"""The comparison table ``agentlab eval`` prints: one row per parameter set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["comparison_table", "varying_keys"]

_METRICS = (
    ("task_completion_rate", "completion", "{:.2f}"),
    ("avg_steps", "avg_steps", "{:.2f}"),
    ("tool_precision", "tool_prec", "{:.2f}"),
    ("tool_recall", "tool_rec", "{:.2f}"),
    ("cost_per_task", "cost/task", "${:.6f}"),
    ("latency_p50_ms", "p50_ms", "{:.0f}"),
    ("latency_p95_ms", "p95_ms", "{:.0f}"),
)


def varying_keys(sets: Sequence[dict[str, Any]]) -> list[str]:
    """The parameters whose values differ between `sets` (all of them for one set)."""
    keys = list(dict.fromkeys(k for s in sets for k in s))
    if len(sets) <= 1:
        return keys
    return [k for k in keys if len({_show(s.get(k)) for s in sets}) > 1]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def comparison_table(
    sets: Sequence[dict[str, Any]],
    metrics: Sequence[dict[str, Any] | None],
    verdicts: Sequence[str],
) -> str:
    """Rows of parameters, metrics (None: the run failed) and a PASS/FAIL/ERROR verdict."""
    keys = varying_keys(sets)
    header = ["#", *keys, "cases", *(label for _, label, _ in _METRICS), "gates"]
    rows = []
    for i, (params, values, verdict) in enumerate(zip(sets, metrics, verdicts, strict=True), 1):
        cells = [str(i), *(_show(params.get(k)) for k in keys)]
        if values is None:
            cells += ["-"] * (1 + len(_METRICS))
        else:
            cells.append(str(values.get("cases", "-")))
            for name, _, fmt in _METRICS:
                value = values.get(name)
                cells.append("n/a" if value is None else fmt.format(value))
        rows.append([*cells, verdict])
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )
