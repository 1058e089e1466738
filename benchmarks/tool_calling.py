"""Tool calling of the local model on general functions (``evals/tool_calling.jsonl``).

Each case offers 2-5 functions (JSON schemas) and one user question; the reply must be
one call to the right function with the right arguments, or, for about a quarter of
the cases, no call at all. The model is asked through ``LocalModel.request`` (as an
agent asks it) at temperature 0, and each call is checked like the reference
function-calling checker (:func:`agentlab.evals.function_calling.load_function_calling`
reads the file): exact name, every required argument, no unknown argument, values by
:mod:`agentlab.evals.argmatch` (numbers by value, strings ignoring case, whitespace and
punctuation, lists item by item, objects key by key; an optional argument may be
left out but must be right when given).

    python benchmarks/tool_calling.py [--split all|dev|check] [--cases N] [--threads 1] [-v]

``--split dev`` takes the even lines and ``check`` the odd ones (tune on dev, look at
check rarely); ``--cases N`` takes N cases spread evenly over the split. Progress goes
to stderr; the final stdout line is JSON with ``full_call_accuracy`` (call cases
answered with the right call), ``no_call_accuracy`` (no-call cases answered without a
call), ``name_accuracy`` (call cases calling the right function) and ``s_per_case``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # cores are shared: no busy waiting

from agentlab.evals.dataset import ExpectedToolCall, read_json_lines
from agentlab.evals.function_calling import load_function_calling
from agentlab.messages import AssistantMessage, ToolDefinition, UserMessage
from agentlab.models import Model, allow_model_requests

DATASET = Path(__file__).resolve().parent.parent / "evals" / "tool_calling.jsonl"


@dataclass(frozen=True)
class ToolCase:
    """One case: the question, the functions offered and the call expected (None: no call)."""

    id: str
    question: str
    tools: tuple[ToolDefinition, ...]
    expected: ExpectedToolCall | None


@dataclass(frozen=True)
class Outcome:
    """How a reply fared on a case; `why` explains a wrong one."""

    correct: bool
    right_name: bool
    why: str = ""


def load_cases(path: str | os.PathLike[str] = DATASET) -> list[ToolCase]:
    """The cases of a function-calling JSONL file, in file order."""
    dataset = load_function_calling(path)
    functions = {
        data["id"]: tuple(
            ToolDefinition(
                name=f["name"], description=f.get("description", ""), parameters=f["parameters"]
            )
            for f in data["function"]
        )
        for _, _, data in read_json_lines(path)
    }
    return [
        ToolCase(
            case.id,
            case.input,
            functions[case.id],
            case.expected_tool_calls[0] if case.expected_tool_calls else None,
        )
        for case in dataset
    ]


def select(cases: list[ToolCase], split: str, count: int | None) -> list[ToolCase]:
    """The `split` ("all", "dev": even lines, "check": odd lines), thinned evenly to `count`."""
    chosen = cases if split == "all" else cases[split == "check" :: 2]
    if count is None or count >= len(chosen):
        return chosen
    return [chosen[i * len(chosen) // count] for i in range(count)]


def score(case: ToolCase, reply: AssistantMessage) -> Outcome:
    """Whether `reply` is what `case` expects: its one call (or no call)."""
    calls = reply.tool_calls
    if case.expected is None:
        if not calls:
            return Outcome(True, True)
        return Outcome(False, False, f"expected no call, got {calls[0].name}({calls[0].arguments})")
    if not calls:
        return Outcome(False, False, f"expected {case.expected.name}, got no call")
    if len(calls) > 1:
        return Outcome(False, False, f"expected one call, got {len(calls)}")
    call = calls[0]
    try:
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = None
    problems = case.expected.rejections(
        call.name, arguments if isinstance(arguments, dict) else None
    )
    right_name = call.name in case.expected.names
    return Outcome(
        not problems, right_name, f"{call.name}({call.arguments}): {'; '.join(problems)}"
    )


async def run(
    model: Model, cases: list[ToolCase], *, verbose: bool = False
) -> dict[str, float | int]:
    """Ask `model` every case; the figures of the final JSON line."""
    outcomes: list[tuple[ToolCase, Outcome]] = []
    started = time.perf_counter()
    for number, case in enumerate(cases, start=1):
        try:
            response = await model.request([UserMessage(content=case.question)], case.tools)
            outcome = score(case, response.message)
        except Exception as e:  # a reply that cannot be read counts as wrong
            outcome = Outcome(False, False, f"{type(e).__name__}: {e}")
        outcomes.append((case, outcome))
        if verbose or not outcome.correct:
            mark = "ok   " if outcome.correct else "WRONG"
            print(f"{number:3} {mark} {case.id}: {case.question!r} {outcome.why}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    calls = [o for c, o in outcomes if c.expected is not None]
    no_calls = [o for c, o in outcomes if c.expected is None]
    return {
        "full_call_accuracy": _share(sum(o.correct for o in calls), len(calls)),
        "no_call_accuracy": _share(sum(o.correct for o in no_calls), len(no_calls)),
        "name_accuracy": _share(sum(o.right_name for o in calls), len(calls)),
        "accuracy": _share(sum(o.correct for _, o in outcomes), len(outcomes)),
        "s_per_case": round(elapsed / len(outcomes), 2) if outcomes else 0.0,
        "cases": len(outcomes),
        "call_cases": len(calls),
        "no_call_cases": len(no_calls),
    }


def _share(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DATASET))
    parser.add_argument("--split", choices=["all", "dev", "check"], default="all")
    parser.add_argument("--cases", type=int, default=None, help="at most this many cases")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    from agentlab.models.local import LocalModel

    cases = select(load_cases(args.dataset), args.split, args.cases)
    model = LocalModel(threads=args.threads)
    with allow_model_requests(True):
        asyncio.run(model.request([UserMessage(content="hi")]))  # load the weights first
        result = asyncio.run(run(model, cases, verbose=args.verbose))
    print(json.dumps({"split": args.split, "threads": args.threads, **result}))


if __name__ == "__main__":
    main()
