"""`EvalProgress`: a progress bar for an eval while it runs: cases done of the total,
how many passed and failed so far, the last case and the time left."""

from __future__ import annotations

import time
from collections.abc import Callable

import ipywidgets as widgets

from agentlab import _html
from agentlab.errors import UserError
from agentlab.evals.results import CaseResult
from agentlab.events import EvalCaseResult

__all__ = ["EvalProgress", "duration_text"]


def duration_text(seconds: float) -> str:
    """'8 s', '1 min 31 s', '2 h 5 min'."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class EvalProgress(widgets.HBox):
    """Progress of an eval of `total` cases, fed one finished case at a time.

    Give :meth:`update` to the eval as its per-case callback, e.g.
    ``evaluate_sync(agent, cases, on_case=EvalProgress(len(cases)).update)``, or
    call it yourself with each :class:`~agentlab.evals.CaseResult`. The time left is
    the mean time per case so far times the cases left (`clock` gives the time:
    ``time.monotonic`` unless a test passes its own).

    Attributes: ``total``, ``done``, ``passed``, ``failed``, ``last`` (the latest
    case), ``bar`` (an IntProgress), ``text``; :attr:`eta_s`.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        description: str = "Evaluating",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and (
            isinstance(total, bool) or not isinstance(total, int) or total < 0
        ):
            raise UserError(f"EvalProgress(total={total!r}): give the number of cases (0 or more)")
        self.total = total
        self.done = self.passed = self.failed = 0
        self.last: CaseResult | EvalCaseResult | None = None
        self._clock = clock
        self._started = clock()
        self.bar = widgets.IntProgress(
            value=0, min=0, max=1, description=description, bar_style="info"
        )
        self.text = widgets.HTML()
        super().__init__([self.bar, self.text], layout=widgets.Layout(align_items="center"))
        self.add_class("agentlab-eval-progress")
        self._draw()

    def update(
        self, result: CaseResult | EvalCaseResult, done: int | None = None, total: int | None = None
    ) -> None:
        """Count one more finished case (`done` and `total`, when the caller knows them,
        replace the counts kept here)."""
        self.done = self.done + 1 if done is None else done
        if total is not None:
            self.total = total
        if self.total is not None and self.done > self.total:
            self.total = self.done  # more cases than announced: the bar stays truthful
        self.passed += result.passed
        self.failed += not result.passed
        self.last = result
        self._draw()

    @property
    def finished(self) -> bool:
        """Whether every case of a known total is done."""
        return self.total is not None and self.done >= self.total

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first case, when the total
        is unknown, or once finished)."""
        if not self.done or self.total is None or self.finished:
            return None
        return (self._clock() - self._started) / self.done * (self.total - self.done)

    def _draw(self) -> None:
        total = self.total
        self.bar.max = max(total or 0, 1)
        self.bar.value = min(self.done, self.bar.max)
        parts = [
            f"<b>{self.done}</b> / {total} cases"
            if total is not None
            else f"<b>{self.done}</b> cases",
            f'<span class="ok">{self.passed} passed</span>',
            f'<span class="{"bad" if self.failed else "muted"}">{self.failed} failed</span>',
        ]
        if self.finished:
            parts[0] = f"<b>{self.done}</b> cases in {duration_text(self._clock() - self._started)}"
            self.bar.bar_style = "success" if not self.failed else "warning"
        elif (eta := self.eta_s) is not None:
            parts.append(f"about {duration_text(eta)} left")
        if self.last is not None:
            verdict = "pass" if self.last.passed else "FAIL"
            parts.append(
                f'<span class="muted">last: {_html.esc(self.last.case_id)} {verdict}</span>'
            )
        self.text.value = _html.scoped(f'<span class="nowrap">{" · ".join(parts)}</span>')
