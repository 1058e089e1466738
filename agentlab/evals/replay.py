"""Replay a whole eval with something changed: every case's stored run is replayed
(:func:`agentlab.replay`: unchanged tool results and model replies come from the
trace, so no side effect repeats), scored and recorded as a new eval run, and the
result says case by case what changed and whether the change is significant.

>>> replayed = replay_eval_sync(changed_agent, "1a2b3c4d", "evals/support_agent.jsonl",
...                             live_tools=["get_order"])
>>> print(replayed)                # which cases changed, and the comparison
>>> replayed.diffs["order-eta"]    # one case, step by step
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agentlab import _html
from agentlab._sync import run_sync
from agentlab.agents import Agent, RunDiff, RunResult
from agentlab.agents.replaying import replay
from agentlab.budgets import Budget
from agentlab.errors import UserError
from agentlab.evals.compare import EvalComparison, compare_evals
from agentlab.evals.dataset import Case, Dataset, load_dataset
from agentlab.evals.executors import CaseBatch, LocalExecutor
from agentlab.evals.report import EvalReport
from agentlab.evals.runner import CaseCallback, run_eval
from agentlab.evals.stored import load_eval
from agentlab.tracing import TraceStore

__all__ = ["EvalReplay", "replay_eval", "replay_eval_sync"]


@dataclass(frozen=True)
class EvalReplay:
    """An eval replayed: the `original` report, the new `report` (a new eval run in the
    store), each replayed case's step-by-step diff, the cases the original never ran
    (`not_replayed`), and the comparison of the two reports."""

    original: EvalReport
    report: EvalReport
    diffs: dict[str, RunDiff]
    not_replayed: list[str]
    comparison: EvalComparison

    @property
    def changed(self) -> list[str]:
        """The cases whose run differs from the original's, in the report's order."""
        return [r.case_id for r in self.report.results if self.diffs[r.case_id].changed]

    def __str__(self) -> str:
        lines = [
            f"Replay of eval {self.original.eval_id[:8]} as {self.report.eval_id[:8]}: "
            f"{len(self.diffs)} cases replayed, {len(self.changed)} changed"
            + (f", {len(self.not_replayed)} not in the original" if self.not_replayed else "")
        ]
        for case_id in self.changed:
            diff = self.diffs[case_id]
            lines.append(
                f"  {case_id}: from step {diff.first_change} (run {diff.replay.run_id[:8]})"
            )
        return "\n".join([*lines, "", str(self.comparison)])

    def _repr_html_(self) -> str:
        rows = [
            [
                _html.esc(case_id),
                f"<code>{_html.esc(self.diffs[case_id].replay.run_id[:8])}</code>",
                _html.esc(self.diffs[case_id].first_change),
            ]
            for case_id in self.changed
        ]
        head = _html.callout(_html.esc(str(self).splitlines()[0]))
        changed = _html.table(["case", "replay run", "first changed step"], rows) if rows else ""
        return (
            _html.STYLE
            + f'<div class="agentlab">{head}{changed}</div>'
            + (self.comparison._repr_html_())
        )


async def replay_eval(
    agent: Agent,
    eval_ref: str | EvalReport,
    dataset: Dataset | str | os.PathLike[str],
    *,
    store: TraceStore | None = None,
    live_tools: Sequence[str] = (),
    live_model: bool = False,
    allow_side_effects: bool = False,
    name: str | None = None,
    concurrency: int = 1,
    on_case: CaseCallback | None = None,
) -> EvalReplay:
    """Replay eval `eval_ref` (an :class:`EvalReport`, or its id, a unique prefix or
    name in `store`) with `agent`, scoring each case with `dataset` (the one it was
    run on). The options are those of :func:`agentlab.replay`; cases run in this
    process, at most `concurrency` at once."""
    if concurrency < 1:
        raise UserError(f"concurrency must be at least 1 (got {concurrency}).")
    store = store or TraceStore(getattr(agent.tracer, "workspace", None))
    original = eval_ref if isinstance(eval_ref, EvalReport) else load_eval(eval_ref, store)
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(Path(dataset))
    runs = {r.case_id: r.run_id for r in original.results}
    cases = [c for c in dataset.cases if c.id in runs]
    if not cases:
        raise UserError(
            f"none of the {len(dataset.cases)} cases of dataset {dataset.name!r} is in eval "
            f"{original.eval_id[:8]} (dataset {original.dataset!r}); pass the dataset it ran."
        )
    diffs: dict[str, RunDiff] = {}

    async def replayed(
        agent: Agent, case: Case, metadata: dict[str, Any], steps: Budget | None
    ) -> RunResult:
        diff = await replay(
            agent,
            runs[case.id],
            store=store,
            live_tools=live_tools,
            live_model=live_model,
            allow_side_effects=allow_side_effects,
            metadata=metadata,
        )
        diffs[case.id] = diff
        return diff.replay

    metadata = {**original.metadata, "replay_of": original.eval_id}
    seed = int(metadata.get("seed", 0))
    batch = replace(CaseBatch.of(cases, "", seed, metadata, concurrency), run=replayed)
    report = await run_eval(
        agent,
        None,
        Dataset(cases, name=dataset.name, defaults=dataset.defaults),
        batch,
        LocalExecutor(),
        name=name or f"{original.name} (replay)",
        on_case=on_case,
    )
    return EvalReplay(
        original=original,
        report=report,
        diffs=diffs,
        not_replayed=[c.id for c in dataset.cases if c.id not in runs],
        comparison=compare_evals(original, report, store=store),
    )


def replay_eval_sync(
    agent: Agent,
    eval_ref: str | EvalReport,
    dataset: Dataset | str | os.PathLike[str],
    **options: Any,
) -> EvalReplay:
    """:func:`replay_eval` for synchronous code (also inside a notebook cell)."""
    return run_sync(replay_eval(agent, eval_ref, dataset, **options))
