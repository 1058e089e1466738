"""A run's trace moved between trace stores (two workspaces: two machines): a run that
paused for approval on A is exported, imported into B and resumed there to the end;
bad payloads are refused with the store untouched; importing again changes nothing."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from gateway_fixtures.agents import refunds

from agentlab.agents.recovery import read_run
from agentlab.errors import UserError
from agentlab.tracing import TraceStore
from agentlab.tracing.gateway_requests import record_request
from agentlab.tracing.handoff import FORMAT, VERSION, export_run, import_run

OUTCOME = "Outcome: refunded 42.0 on O-1"


def _paused_on(workspace: Path) -> tuple[TraceStore, str]:
    agent = refunds()
    agent.trace = workspace
    result = agent.run_sync("Refund O-1", metadata={"ticket": 7})
    assert result.status == "paused" and result.pending is not None
    assert result.pending["tool"] == "refund"
    return TraceStore(workspace), result.run_id


def _rows(store: TraceStore, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the run in every table that has one, sorted (the segment aside)."""
    tables = [
        t
        for (t,) in store.sql(
            "SELECT DISTINCT table_name FROM information_schema.columns "
            "WHERE column_name = 'run_id' AND table_catalog = current_database() "
            "AND table_name != 'gateway_requests' ORDER BY 1"
        )
    ]
    found = {}
    for table in tables:
        exclude = " EXCLUDE (segment)" if table == "runs" else ""
        rows = store.sql(f"SELECT *{exclude} FROM {table} WHERE run_id = ?", [run_id])
        found[table] = sorted(rows, key=repr)
    return found


@pytest.fixture()
def paused(tmp_path: Path) -> tuple[TraceStore, str, TraceStore]:
    store_a, run_id = _paused_on(tmp_path / "a")
    return store_a, run_id, TraceStore(tmp_path / "b")


def test_a_run_paused_on_a_is_resumed_on_b_to_completion(paused) -> None:
    store_a, run_id, store_b = paused
    agent = refunds()
    before = read_run(agent, run_id, store_a)
    payload = export_run(store_a, run_id)
    assert import_run(store_b, payload) == run_id
    assert read_run(agent, run_id, store_b) == before  # rebuilt exactly as on A
    assert _rows(store_b, run_id) == _rows(store_a, run_id)
    [(segment,)] = store_b.sql("SELECT segment FROM runs WHERE run_id = ?", [run_id])
    assert segment is None, "A's writer is nobody here"

    agent.trace = store_b.workspace
    result = agent.resume_sync(run_id, approve=True, store=store_b)
    assert result.status == "completed" and result.output == OUTCOME

    run = store_b.run(run_id)
    assert run is not None
    assert (run["status"], run["output"], run["steps"]) == ("completed", OUTCOME, 3)
    assert run["metadata"] == {"ticket": 7}
    calls = store_b.sql(
        "SELECT step, tool, status FROM tool_calls WHERE run_id = ? ORDER BY step", [run_id]
    )
    assert calls == [(1, "lookup", "ok"), (2, "refund", "ok")]
    [(model_calls,)] = store_b.sql("SELECT count(*) FROM model_calls WHERE run_id = ?", [run_id])
    assert model_calls == 3
    [(decision,)] = store_b.sql("SELECT decision FROM run_decisions WHERE run_id = ?", [run_id])
    assert json.loads(decision)["approve"] is True
    # A still has the run as it paused
    assert store_a.run(run_id)["status"] == "paused"  # type: ignore[index]


def test_importing_twice_changes_nothing_and_replace_takes_the_newer_copy(paused) -> None:
    store_a, run_id, store_b = paused
    payload = export_run(store_a, run_id)
    import_run(store_b, payload)
    rows = _rows(store_b, run_id)
    assert import_run(store_b, payload) == run_id
    assert _rows(store_b, run_id) == rows

    # B finishes the run; A's copy (older) goes back to B: ignored, unless replace=True
    agent = refunds()
    agent.trace = store_b.workspace
    agent.resume_sync(run_id, approve=True, store=store_b)
    finished = _rows(store_b, run_id)
    import_run(store_b, payload)
    assert _rows(store_b, run_id) == finished
    newer = export_run(store_b, run_id)
    import_run(store_a, newer, replace=True)
    assert _rows(store_a, run_id) == finished
    assert store_a.run(run_id)["status"] == "completed"  # type: ignore[index]


def test_the_payload_describes_itself_and_each_store_keeps_its_gateway_requests(
    paused,
) -> None:
    store_a, run_id, store_b = paused
    record_request(  # what machine A served: counted in A's usage only
        store_a,
        time=time.time(),
        key_id="k1",
        owner="acme",
        agent="refunds",
        version="1",
        route="/v1/agents/{agent}/runs",
        status_code=200,
        run_id=run_id,
        input_tokens=10,
        output_tokens=5,
        cost=0.01,
        latency_ms=3.0,
        error_id=None,
    )
    assert store_a.sql("SELECT count(*) FROM gateway_requests WHERE run_id = ?", [run_id]) == [(1,)]
    payload = export_run(store_a, run_id)
    import_run(store_b, payload)
    assert store_b.sql("SELECT count(*) FROM gateway_requests") == [(0,)]
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        manifest = json.loads(archive.read("handoff.json"))
        names = set(archive.namelist())
    assert manifest["format"] == FORMAT and manifest["version"] == VERSION
    assert manifest["run_id"] == run_id
    assert manifest["tables"]["runs"] == 1 and manifest["tables"]["model_calls"] == 2
    assert "gateway_requests" not in manifest["tables"]
    assert names == {"handoff.json", *(f"{t}.parquet" for t in manifest["tables"])}


def test_an_unknown_run_cannot_be_exported(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="No run 'nope'"):
        export_run(TraceStore(tmp_path / "a"), "nope")


def _rezip(payload: bytes, change: dict[str, Any]) -> bytes:
    """`payload` with its manifest's fields updated from `change` (None: removed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "handoff.json":
                manifest = {**json.loads(data), **change}
                data = json.dumps({k: v for k, v in manifest.items() if v is not None}).encode()
            target.writestr(name, data)
    return out.getvalue()


def _swap_file(payload: bytes, name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as source, zipfile.ZipFile(out, "w") as target:
        for member in source.namelist():
            target.writestr(member, data if member == name else source.read(member))
    return out.getvalue()


def test_bad_payloads_are_refused_and_leave_the_store_untouched(paused, tmp_path: Path) -> None:
    store_a, run_id, store_b = paused
    payload = export_run(store_a, run_id)
    other = _paused_on(tmp_path / "c")
    foreign = export_run(*other)
    with zipfile.ZipFile(io.BytesIO(foreign)) as archive:
        foreign_calls = archive.read("model_calls.parquet")
    bad = {
        "garbage": (b"not a payload at all", "not a whole handoff archive"),
        "empty": (b"", "not a whole handoff archive"),
        "truncated": (payload[: len(payload) // 2], "not a whole handoff archive"),
        "another format": (_rezip(payload, {"format": "tarball"}), "does not name the format"),
        "another version": (_rezip(payload, {"version": 99}), "format version 99"),
        "a newer schema": (_rezip(payload, {"schema_version": 10_000}), "upgrade agentlab here"),
        "no run id": (_rezip(payload, {"run_id": None}), "lacks the run id"),
        "a wrong count": (
            _rezip(payload, {"tables": {"runs": 1, "model_calls": 1}}),
            "the manifest says 1",
        ),
        "an unknown table": (_rezip(payload, {"tables": {"runs": 1, "x": 1}}), "not a whole"),
        "rows of another run": (
            _swap_file(payload, "model_calls.parquet", foreign_calls),
            "of other runs",
        ),
        "a broken parquet file": (
            _swap_file(payload, "model_calls.parquet", b"PAR1 nonsense"),
            "cannot be read",
        ),
    }
    for case, (data, message) in bad.items():
        with pytest.raises(UserError, match=message):
            import_run(store_b, data)
        assert store_b.sql("SELECT count(*) FROM runs") == [(0,)], case
        assert store_b.sql("SELECT count(*) FROM model_calls") == [(0,)], case
    with pytest.raises(UserError, match="give the bytes"):
        import_run(store_b, "text")  # type: ignore[arg-type]
    # a table the archive does hold, but not one of run rows
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        runs_file = archive.read("runs.parquet")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as source, zipfile.ZipFile(out, "w") as target:
        for member in source.namelist():
            data = source.read(member)
            if member == "handoff.json":
                manifest = json.loads(data)
                manifest["tables"]["_segments"] = 1
                data = json.dumps(manifest).encode()
            target.writestr(member, data)
        target.writestr("_segments.parquet", runs_file)
    with pytest.raises(UserError, match="no run rows in: '_segments'"):
        import_run(store_b, out.getvalue())
    assert store_b.sql("SELECT count(*) FROM _segments WHERE name = ?", [run_id]) == [(0,)]
    # the good payload still imports
    assert import_run(store_b, payload) == run_id
