"""How sure is a measured number? Bootstrap intervals and paired comparisons.

Every comparison a lesson draws a conclusion from shows its uncertainty, and
the sentence that concludes is chosen by these numbers:
:func:`bootstrap_interval` gives a 95% interval of a metric over test items;
:func:`paired_bootstrap` compares two models on the same items and returns a
verdict (``"better"``, ``"worse"`` or ``"indistinguishable"``). Both use
``scipy.stats.bootstrap`` (percentile method, seeded). Used by the lesson
benchmarks and by the lessons that compare models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

VERDICTS = ("better", "worse", "indistinguishable")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "confidence": self.confidence}


@dataclass(frozen=True)
class PairedComparison:
    """Metric of A minus metric of B on the same items, its interval, and what it allows one to say."""

    difference: Interval
    verdict: str  # "better" (A > B), "worse" (A < B) or "indistinguishable" at this confidence
    n: int

    def as_dict(self) -> dict:
        return {"difference": self.difference.as_dict(), "verdict": self.verdict, "n": self.n}


def _check_items(*arrays: np.ndarray) -> int:
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"paired values must have the same length, got {sorted(lengths)}")
    n = lengths.pop()
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 items, got {n}")
    return n


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over per-item ``values``.

    For accuracy, pass the 0/1 correctness of each test item; for any other
    per-item score (token F1, loss), pass the scores.
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    _check_items(data)
    value = float(statistic(data))
    if np.all(data == data[0]):  # every resample is identical: the interval is the point
        return Interval(value, value, value, confidence)
    result = bootstrap(
        (data,), statistic, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
        vectorized=False, rng=np.random.default_rng(seed),
    )
    return Interval(value, float(result.confidence_interval.low), float(result.confidence_interval.high), confidence)


def paired_bootstrap(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare A and B scored on the same items: mean(A) - mean(B), resampling items (pairs kept together).

    The verdict is ``"better"`` when the whole interval is above 0,
    ``"worse"`` when it is below, ``"indistinguishable"`` otherwise.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    n = _check_items(a, b)
    difference = bootstrap_interval(a - b, np.mean, confidence, n_resamples, seed)
    verdict = "better" if difference.low > 0 else "worse" if difference.high < 0 else "indistinguishable"
    return PairedComparison(difference, verdict, n)
