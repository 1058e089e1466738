"""Evaluation on a Ray cluster: two real Ray nodes on loopback (the session's
``ray_cluster`` fixture, tests/conftest.py) give the report the local executor gives,
and every case's run reaches the driver's trace store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agentlab.demo import build_support_agent, create_demo_database
from agentlab.errors import MissingExtraError, UserError
from agentlab.evals import (
    AgentSpec,
    RayExecutor,
    Score,
    evaluate,
    evaluate_sync,
    load_dataset,
    registry,
    reproducible_report,
    scorer,
)
from agentlab.evals.scripted import one_call
from agentlab.tracing import TraceStore

SUPPORT_DATASET = Path(__file__).parents[1] / "evals" / "support_agent.jsonl"


@pytest.fixture
def spec(tmp_path) -> AgentSpec:
    """The demo support agent with a scripted model, traced into tmp_path/ws."""
    db = create_demo_database(tmp_path / "shop.duckdb")
    return AgentSpec(build_support_agent, one_call(), db_path=db, trace=tmp_path / "ws")


@pytest.mark.slow
@pytest.mark.timeout(300)  # the cluster starts in the first test: 10-40 s
def test_ray_gives_the_local_report_and_every_run_reaches_the_store(ray_cluster, spec, tmp_path):
    local = evaluate_sync(spec, SUPPORT_DATASET, concurrency=3, seed=7)
    ray = evaluate_sync(
        spec,
        SUPPORT_DATASET,
        concurrency=3,
        seed=7,
        executor=RayExecutor(address=ray_cluster.address, workers=2),
    )

    assert ray.eval_id != local.eval_id
    assert json.dumps(reproducible_report(ray).to_dict()) == json.dumps(
        reproducible_report(local).to_dict()
    )
    assert reproducible_report(ray).table() == reproducible_report(local).table()
    assert [r.case_id for r in ray.results] == [c.id for c in load_dataset(SUPPORT_DATASET)]
    assert {r.status for r in ray.results} == {"completed"}

    # The workers' runs were written by the driver into its own workspace.
    store = TraceStore(tmp_path / "ws")
    rows = store.sql(
        "SELECT e.case_id, r.status, r.metadata->>'eval_id', r.metadata->>'seed', "
        "(SELECT count(*) FROM tool_calls t WHERE t.run_id = r.run_id) "
        "FROM eval_results e JOIN runs r USING (run_id) WHERE e.eval_id = ? ORDER BY e.case_id",
        [ray.eval_id],
    )
    assert sorted(r.case_id for r in ray.results) == [row[0] for row in rows]
    assert all(row[1:] == ("completed", ray.eval_id, "7", 1) for row in rows)
    (summary,) = store.sql(
        "SELECT cases, metrics->>'passed' FROM eval_runs WHERE eval_id = ?", [ray.eval_id]
    )
    assert summary == (len(ray.results), str(ray.metrics.passed))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_error_on_a_worker_is_raised_as_the_local_executor_raises_it(ray_cluster, tmp_path):
    import ray.cloudpickle

    # The scorer is defined here: the workers get this module's functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    registry.reset()

    @scorer("too_generous")
    def too_generous():
        def score(case, result):
            return Score(2.0, True, "more than full marks")

        return score

    db = create_demo_database(tmp_path / "shop.duckdb")
    spec = AgentSpec(build_support_agent, one_call(), db_path=db, trace=tmp_path / "ws")
    dataset = tmp_path / "one.jsonl"
    dataset.write_text(
        json.dumps(
            {
                "id": "c1",
                "input": "hi",
                "expected_outcome": {"kind": "scorer", "value": "too_generous"},
            }
        )
        + "\n"
    )
    executor = RayExecutor(address=ray_cluster.address)
    try:
        with pytest.raises(UserError, match=r"scorer 'too_generous' returned .* for case 'c1'"):
            evaluate_sync(spec, dataset, executor=executor)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        registry.reset()


async def test_an_agent_object_is_refused_with_what_to_pass_instead(tmp_path):
    agent = build_support_agent(one_call(), db_path=create_demo_database(tmp_path / "s.duckdb"))
    with pytest.raises(UserError, match="needs the agent as an AgentSpec"):
        await evaluate(agent, SUPPORT_DATASET, executor=RayExecutor(address="127.0.0.2:1"))


@pytest.mark.slow  # waits for the connection to be refused (~2.6 s)
async def test_an_address_where_no_cluster_answers_fails_at_once(spec):
    with pytest.raises(UserError, match=r"no Ray cluster answers at 127\.0\.0\.2:1 .*ray start"):
        await evaluate(spec, SUPPORT_DATASET, executor=RayExecutor(address="127.0.0.2:1"))
    with pytest.raises(UserError, match="not understood; write HOST:PORT"):
        await evaluate(spec, SUPPORT_DATASET, executor=RayExecutor(address="head-node"))


async def test_without_ray_the_error_names_the_extra(spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'agentlab-toolkit\[ray\]'"):
        await evaluate(spec, SUPPORT_DATASET, executor="ray")


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ("dask", "executor 'dask' is not known; use 'local', 'ray'"),
        (RayExecutor, "executor .* is not known"),  # the class, not an instance
    ],
)
async def test_unknown_executors_and_bad_worker_counts_are_refused(spec, executor, message):
    with pytest.raises(UserError, match=message):
        await evaluate(spec, SUPPORT_DATASET, executor=executor)
    with pytest.raises(UserError, match=r"workers=0\): give 1 or more"):
        RayExecutor(workers=0)


def test_agent_specs_say_what_is_wrong(tmp_path):
    with pytest.raises(UserError, match=r"write 'package\.module:attribute'"):
        AgentSpec("agentlab.demo.build_support_agent")
    with pytest.raises(UserError, match="cannot import it"):
        AgentSpec("agentlab.demo:no_such_factory").build()
    with pytest.raises(UserError, match="returned str, not an Agent"):
        AgentSpec("json:dumps", {}).build()
    with pytest.raises(UserError, match="not int"):
        AgentSpec(3)  # type: ignore[arg-type]
    built = AgentSpec(
        "agentlab.demo:build_support_agent",
        one_call(),
        db_path=create_demo_database(tmp_path / "s.duckdb"),
        trace=False,
    ).build()
    assert built.name == "support-demo"
    assert built.model.name == "scripted:one_call"
