"""The trace store's schema: numbered, append-only migrations.

Never edit or reorder a released migration; add a new one at the end. Each is
applied once, in order, inside a transaction that also records it in
``schema_migrations``. Times are ``TIMESTAMP`` in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agentlab.errors import TraceStoreError

if TYPE_CHECKING:
    import duckdb

__all__ = ["MIGRATIONS", "migrate"]

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "create runs, model_calls, tool_calls",
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            agent VARCHAR,
            model VARCHAR,
            input VARCHAR,
            status VARCHAR NOT NULL,  -- see agentlab.events.RunStatus
            output VARCHAR,
            explanation VARCHAR,
            steps INTEGER,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cost DOUBLE,
            latency_ms DOUBLE,
            started_at TIMESTAMP,
            ended_at TIMESTAMP,
            metadata JSON,
            segment VARCHAR  -- the segment file that last wrote to the run
        );
        CREATE TABLE model_calls (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step INTEGER NOT NULL,
            model VARCHAR,
            messages JSON,  -- the messages added since the run's previous model call
            context_messages INTEGER,
            tools VARCHAR[],
            response JSON,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cost DOUBLE,
            latency_ms DOUBLE,
            status VARCHAR,
            error VARCHAR,
            started_at TIMESTAMP
        );
        CREATE TABLE tool_calls (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step INTEGER NOT NULL,
            tool VARCHAR,
            arguments VARCHAR,  -- the model's raw JSON text
            result VARCHAR,
            status VARCHAR,
            error VARCHAR,
            latency_ms DOUBLE,
            started_at TIMESTAMP
        );
        CREATE TABLE _segments (
            name VARCHAR PRIMARY KEY,
            "offset" BIGINT NOT NULL  -- bytes of the segment file already ingested
        );
        """,
    ),
    (
        2,
        "create eval_runs, eval_results",
        """
        CREATE TABLE eval_runs (
            eval_id VARCHAR PRIMARY KEY,
            name VARCHAR,
            dataset VARCHAR,
            agent VARCHAR,
            model VARCHAR,
            cases INTEGER,
            metrics JSON,  -- task_completion_rate, tool_precision, latency_p95_ms, ...
            metadata JSON,
            started_at TIMESTAMP,
            ended_at TIMESTAMP
        );
        CREATE TABLE eval_results (
            eval_id VARCHAR NOT NULL,
            case_id VARCHAR NOT NULL,
            run_id VARCHAR,  -- joins runs, model_calls and tool_calls
            passed BOOLEAN,
            score DOUBLE,
            explanation VARCHAR,
            scorer JSON,  -- {"name": ..., "kwargs": {...}}: enough to rebuild the scorer
            tags VARCHAR[],
            calls_expected INTEGER,
            calls_made INTEGER,
            calls_matched INTEGER,
            steps INTEGER,
            cost DOUBLE,
            latency_ms DOUBLE,
            ended_at TIMESTAMP,
            PRIMARY KEY (eval_id, case_id)
        );
        """,
    ),
    (
        3,
        "memory: context_windows, memory_retrievals, memory_ops; sessions; tool cache",
        """
        ALTER TABLE runs ADD COLUMN session VARCHAR;
        ALTER TABLE runs ADD COLUMN user_id VARCHAR;
        ALTER TABLE tool_calls ADD COLUMN cache VARCHAR;  -- hit|miss; NULL: not cacheable
        ALTER TABLE tool_calls ADD COLUMN saved_cost DOUBLE;
        ALTER TABLE tool_calls ADD COLUMN saved_latency_ms DOUBLE;
        CREATE TABLE context_windows (
            id VARCHAR PRIMARY KEY,  -- <run_id>-<step>, as the step's model call
            run_id VARCHAR NOT NULL,
            step INTEGER NOT NULL,
            budget INTEGER,
            tokens INTEGER,
            counter VARCHAR,  -- the model's tokenizer, or the estimate used
            kept INTEGER[],  -- indices into the run's conversation that were sent
            dropped INTEGER[],
            summarized INTEGER[],
            summary VARCHAR,
            pinned VARCHAR[],
            memories VARCHAR[],  -- long-term memory ids that entered
            summary_input_tokens BIGINT,
            summary_output_tokens BIGINT,
            summary_cost DOUBLE,
            started_at TIMESTAMP
        );
        CREATE TABLE memory_retrievals (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step INTEGER NOT NULL,
            source VARCHAR,  -- auto|tool
            mode VARCHAR,  -- semantic|fulltext|hybrid
            query VARCHAR,
            filters JSON,
            k INTEGER,
            hits JSON,  -- [{"id", "text", "score", "kind", ...}], best first
            entered VARCHAR[],
            latency_ms DOUBLE,
            started_at TIMESTAMP
        );
        CREATE TABLE memory_ops (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step INTEGER NOT NULL,
            tier VARCHAR,  -- short_term|long_term
            op VARCHAR,  -- get|set|delete|add
            namespace VARCHAR,
            key VARCHAR,
            hit BOOLEAN,
            ttl DOUBLE,
            detail VARCHAR,
            started_at TIMESTAMP
        );
        """,
    ),
    (
        4,
        "production layers: attempts and routing per model call, failure records, breakers",
        """
        ALTER TABLE model_calls ADD COLUMN attempts JSON;  -- every request sent, with its wait
        ALTER TABLE model_calls ADD COLUMN served_by VARCHAR;  -- the model that answered
        ALTER TABLE model_calls ADD COLUMN route VARCHAR;  -- why it answered (fallback, router)
        ALTER TABLE runs ADD COLUMN failure JSON;  -- {what, tried, next, ...} when it ended badly
        CREATE TABLE breaker_transitions (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR,  -- the run that saw the transition ('' when none)
            step INTEGER,
            breaker VARCHAR,
            from_state VARCHAR,
            to_state VARCHAR,  -- closed|open|half_open
            failures INTEGER,
            reason VARCHAR,
            started_at TIMESTAMP
        );
        """,
    ),
    (
        5,
        "loop alerts; paused runs (pending, checkpoint)",
        """
        CREATE TABLE alerts (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step INTEGER,
            alert VARCHAR,  -- repeated_call|no_progress
            message VARCHAR,
            detail JSON,
            stopped BOOLEAN,  -- the run was stopped because of it
            started_at TIMESTAMP
        );
        ALTER TABLE runs ADD COLUMN pending JSON;  -- what a paused run waits for
        ALTER TABLE runs ADD COLUMN checkpoint JSON;  -- what resuming a paused run needs
        """,
    ),
    (
        6,
        "tool fallbacks: tool_calls.served_by, tool_calls.fallback",
        """
        ALTER TABLE tool_calls ADD COLUMN served_by VARCHAR;  -- the tool that answered
        ALTER TABLE tool_calls ADD COLUMN fallback JSON;  -- failed tries: [{tool, status, error}]
        """,
    ),
    (
        7,
        "recovery: tool call starts (idempotency keys), decisions on paused runs",
        """
        ALTER TABLE tool_calls ADD COLUMN call_id VARCHAR;  -- the model's id of the call
        ALTER TABLE runs ADD COLUMN limits JSON;  -- the run's budget, as it was set
        CREATE TABLE tool_call_starts (  -- one row each time the call is started
            "key" VARCHAR NOT NULL,  -- <run_id>-<step>-<call_id>: the idempotency key
            run_id VARCHAR NOT NULL,
            step INTEGER NOT NULL,
            tool VARCHAR,
            call_id VARCHAR,
            arguments VARCHAR,
            started_at TIMESTAMP,
            PRIMARY KEY ("key", started_at)
        );
        CREATE TABLE run_decisions (
            run_id VARCHAR NOT NULL,
            "key" VARCHAR NOT NULL,  -- what was decided on (a call's key, an escalation)
            decision JSON,  -- {approve, note, answer, ...}
            resumed_at TIMESTAMP,
            PRIMARY KEY (run_id, "key", resumed_at)
        );
        """,
    ),
    (
        8,
        "scale: model_calls and tool_calls indexed by run_id instead of a primary key on id",
        # A unique index on id cost most of the ingest time at a million spans; ingest
        # now skips ids already stored itself (agentlab.tracing.ingest), and the
        # index on run_id serves the per-run queries and the deletes of a prune.
        """
        CREATE TABLE model_calls_v8 AS FROM model_calls;
        DROP TABLE model_calls;
        ALTER TABLE model_calls_v8 RENAME TO model_calls;
        ALTER TABLE model_calls ALTER COLUMN run_id SET NOT NULL;
        ALTER TABLE model_calls ALTER COLUMN step SET NOT NULL;
        CREATE INDEX model_calls_run_id ON model_calls (run_id);
        CREATE TABLE tool_calls_v8 AS FROM tool_calls;
        DROP TABLE tool_calls;
        ALTER TABLE tool_calls_v8 RENAME TO tool_calls;
        ALTER TABLE tool_calls ALTER COLUMN run_id SET NOT NULL;
        ALTER TABLE tool_calls ALTER COLUMN step SET NOT NULL;
        CREATE INDEX tool_calls_run_id ON tool_calls (run_id);
        """,
    ),
    (
        9,
        "gateway: gateway_requests (one row per request, accepted or rejected)",
        # No key: ingest writes each line once; queries aggregate over time ranges.
        """
        CREATE TABLE gateway_requests (
            started_at TIMESTAMP NOT NULL,  -- when the request arrived
            key_id VARCHAR,  -- NULL: no valid key (401)
            owner VARCHAR,  -- the key's owner: the client
            agent VARCHAR,
            version VARCHAR,
            route VARCHAR,
            status_code INTEGER NOT NULL,
            run_id VARCHAR,  -- NULL: no run (rejected, or not a run route)
            input_tokens BIGINT,
            output_tokens BIGINT,
            cost DOUBLE,
            latency_ms DOUBLE,
            error_id VARCHAR  -- the trace store's record of a 500 or a crashed run
        );
        """,
    ),
)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply the migrations `con` lacks, in order; return the schema version."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL)"
    )
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()
    version: int = current[0][0]
    latest = MIGRATIONS[-1][0]
    if version > latest:
        raise TraceStoreError(
            f"the trace store has schema version {version} but this agentlab knows only "
            f"up to {latest}: upgrade agentlab"
        )
    for number, name, sql in MIGRATIONS:
        if number <= version:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                [number, name, datetime.now(UTC).replace(tzinfo=None)],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        version = number
    return version
