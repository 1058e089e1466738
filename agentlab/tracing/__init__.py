"""Tracing: every process appends events to its own file; DuckDB answers queries.

>>> store = TraceStore()               # ./.agentlab or $AGENTLAB_WORKSPACE
>>> store.writer().emit(event)         # durable once it returns
>>> store.sql("SELECT status, count(*) FROM runs GROUP BY ALL")
>>> store.prune(parse_age("30d"))      # old runs and all their rows; then compact
>>> import_run(other, export_run(store, run_id))   # a run moved to another store
"""

from agentlab.tracing.handoff import export_run, import_run
from agentlab.tracing.queries import RunFilter
from agentlab.tracing.retention import CompactReport, PruneReport, parse_age
from agentlab.tracing.store import TraceStore
from agentlab.tracing.writer import TraceWriter, close_writers, get_writer

__all__ = [
    "CompactReport",
    "PruneReport",
    "RunFilter",
    "TraceStore",
    "TraceWriter",
    "close_writers",
    "export_run",
    "get_writer",
    "import_run",
    "parse_age",
]
