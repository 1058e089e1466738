"""Paired statistics for comparing two eval runs, on scipy (the ``evals`` extra).

* :func:`mcnemar_exact` - McNemar's exact test on pass/fail flips: under "no change"
  each flipped case is equally likely to flip either way, so the number of
  regressions among the flips is Binomial(flips, 1/2).
* :func:`paired_bootstrap_ci` - a seeded percentile bootstrap confidence interval
  for the mean of paired differences (B - A, one value per case).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from agentlab.errors import MissingExtraError

__all__ = ["BOOTSTRAP_BATCH", "mcnemar_exact", "paired_bootstrap_ci"]

BOOTSTRAP_BATCH = 1000
"""Resamples drawn at once: bounds the memory of a bootstrap over many cases."""


def _scipy_stats() -> ModuleType:
    try:
        import scipy.stats
    except ImportError:
        raise MissingExtraError("scipy", "evals") from None
    return scipy.stats


def mcnemar_exact(regressed: int, improved: int) -> float:
    """The two-sided exact McNemar p-value for `regressed` pass->fail and `improved`
    fail->pass flips (1.0 when nothing flipped)."""
    if regressed < 0 or improved < 0:
        raise ValueError(f"flip counts must be >= 0 (got {regressed}, {improved})")
    flips = regressed + improved
    if flips == 0:
        return 1.0
    return float(_scipy_stats().binomtest(regressed, flips, 0.5).pvalue)


def paired_bootstrap_ci(
    differences: Sequence[float], *, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `differences` (one per case).

    The cases are resampled with replacement, `n_resamples` times, from a numpy
    generator seeded with `seed`: the same inputs always give the same interval.
    """
    if not differences:
        raise ValueError("a bootstrap needs at least one difference")
    if len(set(differences)) == 1:  # every resample has this mean (and scipy needs n >= 2)
        return float(differences[0]), float(differences[0])
    stats = _scipy_stats()
    import numpy as np  # a dependency of scipy

    result = stats.bootstrap(
        (np.asarray(differences, dtype=float),),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        batch=BOOTSTRAP_BATCH,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)
