"""How sure is a measured number? Bootstrap intervals and paired comparisons.

Every comparison a lesson draws a conclusion from shows its uncertainty, and
the sentence that concludes is chosen by these numbers:
:func:`bootstrap_interval` gives a 95% interval of a metric over test items;
:func:`paired_bootstrap` compares two models on the same items and returns a
verdict (``"better"``, ``"worse"`` or ``"indistinguishable"``). Every
interval here is a percentile interval over the same resamples of the items
(:func:`resample_indices`, seeded; ``N_RESAMPLES`` by default), whichever
function computes it. Used by the lesson benchmarks and by the lessons that
compare models.

Metrics that are not a mean of per-item values (macro-F1, balanced accuracy,
PR-AUC, the recall of one class) are bootstrapped by :func:`bootstrap_metric`
and compared by :func:`paired_bootstrap_metric`: the metric is recomputed on
resampled item indices (seeded, so that the same seed and the same number of
items give the same resamples, and a paired comparison evaluates both models
on each resample). Taught in ``course/07_overfitting_imbalance.ipynb``.

Where training noise matters, a model is trained with several seeds and
scored on the same items: :func:`seeds_interval` and :func:`paired_seeds`
resample both the seeds and the items, so the interval holds the two kinds
of noise (which run, which test items). Taught in ``course/01_strategies.ipynb``.

Many comparisons read together (a summary of several remedies against one
baseline) are read with Holm's correction: :func:`holm_verdicts` turns the
bootstrap p-values of :func:`bootstrap_p_value`, carried by every
:class:`PairedComparison`, into verdicts whose chance of one false
"better"/"worse" among them all stays under 5%. Taught in
``course/01_strategies.ipynb``; the summaries of 06, 07 and 11 use it.

Two classifiers right or wrong on the same items are also compared by
:func:`mcnemar`: the exact test on the items where exactly one of them is
right; two groups of *different* items (an accuracy on in-domain data
against one on shifted data) by :func:`independent_difference`. Taught in
``course/09_evaluation.ipynb``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from helpers.recording import judged

__all__ = [
    "VERDICTS",
    "N_RESAMPLES",
    "Interval",
    "PairedComparison",
    "McNemarTest",
    "bootstrap_interval",
    "paired_bootstrap",
    "paired_bootstrap_by_group",
    "bootstrap_p_value",
    "holm_adjust",
    "holm_verdicts",
    "holm_table",
    "resamples_for_holm",
    "compare_to_reference",
    "Metric",
    "resample_indices",
    "resample_weights",
    "interval_from_replicates",
    "metric_replicates",
    "paired_from_replicates",
    "bootstrap_metric",
    "paired_bootstrap_metric",
    "seeds_replicates",
    "seeds_interval",
    "paired_seeds",
    "mcnemar",
    "IndependentComparison",
    "independent_difference",
]

VERDICTS = ("better", "worse", "indistinguishable")

# Every interval of the course is drawn from the same resamples (resample_indices): this many by default.
N_RESAMPLES = 2000


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
    p_value: float = float("nan")  # bootstrap p-value of "no difference" (bootstrap_p_value), for Holm

    def as_dict(self) -> dict:
        return {"difference": self.difference.as_dict(), "verdict": self.verdict, "n": self.n, "p_value": self.p_value}


@dataclass(frozen=True)
class McNemarTest:
    """McNemar's exact test of two classifiers on the same items, and what it allows one to say."""

    a_only: int  # items A gets right and B gets wrong
    b_only: int  # items B gets right and A gets wrong
    p_value: float  # exact two-sided binomial test of a_only among a_only + b_only, against one half
    verdict: str  # "better" (A > B), "worse" (A < B) or "indistinguishable" at alpha = 1 - confidence
    n: int

    def as_dict(self) -> dict:
        return {
            "a_only": self.a_only,
            "b_only": self.b_only,
            "p_value": self.p_value,
            "verdict": self.verdict,
            "n": self.n,
        }


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
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over per-item ``values``.

    For accuracy, pass the 0/1 correctness of each test item; for any other
    per-item score (token F1, loss), pass the scores. The resamples are those
    of :func:`resample_indices`, as for every interval of this module: the
    accuracy of the same predictions gets the same interval here and from
    :func:`bootstrap_metric` with ``accuracy_score``.
    """
    data = np.asarray(values, dtype=float)
    _check_items(data)
    value = float(statistic(data))
    return interval_from_replicates(value, _item_replicates(data, value, statistic, n_resamples, seed), confidence)


def _item_replicates(
    data: np.ndarray, value: float, statistic: Callable[[np.ndarray], float], n_resamples: int, seed: int
) -> np.ndarray:
    """``statistic`` on each resample of :func:`resample_indices` over the items of ``data`` (``value``: on all)."""
    if np.all(data == data[0]):  # every resample is identical: every replicate is the value itself
        return np.full(n_resamples, value)
    resampled = data[resample_indices(data.shape[0], n_resamples, seed)]
    if statistic is np.mean:  # all resamples at once
        return resampled.mean(axis=1)
    return np.array([statistic(row) for row in resampled], dtype=float)


def paired_bootstrap(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare A and B scored on the same items: mean(A) - mean(B), resampling items (pairs kept together).

    The verdict is ``"better"`` when the whole interval is above 0,
    ``"worse"`` when it is below, ``"indistinguishable"`` otherwise.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    n = _check_items(a, b)
    value = float(np.mean(a - b))
    return _paired(value, _item_replicates(a - b, value, np.mean, n_resamples, seed), n, confidence)


def paired_bootstrap_by_group(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    groups: Sequence,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """:func:`paired_bootstrap` when items come in groups that must be resampled together.

    Items of one group are not independent (the same review tested in
    several splits, several reviews of one film): resampling them one by one
    would make the interval too narrow. Here the groups are resampled
    (:func:`resample_weights` over the sorted distinct groups) and each
    resample's difference is the mean over the items of the groups drawn.
    With one item per group, in order, this is exactly :func:`paired_bootstrap`.
    ``n`` of the result counts the groups. Taught in
    ``course/02_data_preparation.ipynb``.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    _check_items(a, b, np.asarray(groups))
    names, index = np.unique(np.asarray(groups), return_inverse=True)
    _check_items(names)
    differences = np.bincount(index, weights=a - b, minlength=names.size)
    counts = np.bincount(index, minlength=names.size).astype(float)
    value = float(np.mean(a - b))
    if np.all(a - b == (a - b)[0]):  # every resample is identical: the interval is the point
        return _paired(value, np.full(n_resamples, value), names.size, confidence)
    weights = resample_weights(names.size, n_resamples, seed)
    return _paired(value, (weights @ differences) / (weights @ counts), names.size, confidence)


def compare_to_reference(
    values: Sequence[float],
    reference_values: Sequence[float],
    higher_is_better: bool = True,
    seed: int = 0,
    prefix: str = "",
    n_resamples: int = N_RESAMPLES,
) -> dict[str, float | str]:
    """One table row's worth: the mean of ``values`` with its interval and its paired change against the reference.

    Keys (each after ``prefix``): ``value``, ``low``, ``high``, ``change``,
    ``change_low``, ``change_high``, ``p`` (the bootstrap p-value of the
    change, for :func:`holm_verdicts`; 1 for the reference) and ``verdict`` (``"better"``,
    ``"worse"``, ``"indistinguishable"``; for a measure where lower is
    better, such as a loss, a significant fall is ``"better"``). Passing the
    reference's own values gives a zero change and the verdict
    ``"reference"``. ``values`` and ``reference_values`` may also hold one
    row of per-item scores per training seed (seeds x items, the same items
    and seeds in both; a model trained once is repeated on every row): the
    intervals then resample seeds and items (:func:`seeds_interval`,
    :func:`paired_seeds`). ``n_resamples``: bootstrap resamples (a table
    whose verdicts are read together after Holm needs enough of them:
    :func:`resamples_for_holm`). Used by the tables of
    ``course/06_catastrophic_forgetting.ipynb`` and ``course/11_peft.ipynb``.
    """
    over_seeds = np.ndim(values) == 2
    interval = (seeds_interval if over_seeds else bootstrap_interval)(values, n_resamples=n_resamples, seed=seed)
    row: dict[str, float | str] = {"value": interval.value, "low": interval.low, "high": interval.high}
    if values is reference_values:
        row |= {"change": 0.0, "change_low": 0.0, "change_high": 0.0, "p": 1.0, "verdict": "reference"}
    else:
        compare = paired_seeds if over_seeds else paired_bootstrap
        comparison = compare(values, reference_values, n_resamples=n_resamples, seed=seed)
        verdict = judged(comparison.verdict, higher_is_better)
        difference = comparison.difference
        row |= {
            "change": difference.value,
            "change_low": difference.low,
            "change_high": difference.high,
            "p": comparison.p_value,
            "verdict": verdict,
        }
    return {
        f"{prefix}{key}" if key != "value" else (prefix.rstrip("_") or "value"): value for key, value in row.items()
    }


def _paired(value: float, replicates: np.ndarray, n: int, confidence: float) -> PairedComparison:
    """The comparison of A and B from the value of A - B and its bootstrap replicates: interval, verdict, p-value."""
    difference = interval_from_replicates(value, replicates, confidence)
    return PairedComparison(difference, _verdict(difference), n, bootstrap_p_value(replicates))


def bootstrap_p_value(replicates: Sequence[float]) -> float:
    """Two-sided bootstrap p-value of "no difference" from the replicates of A - B.

    Twice the smaller share of replicates on either side of 0, each share
    counted as ``(k + 1) / (B + 1)`` so that ``B`` resamples never give a
    p-value of exactly 0 (the smallest is ``2 / (B + 1)``, about 0.001 for
    2000 resamples). It agrees with the 95% percentile interval: below 0.05
    when the interval leaves out 0, above when it holds 0 well inside (at the
    edge the two can differ by one resample). Replicates that all equal one
    value (every item's difference the same) give 1 for 0 and the smallest
    p-value otherwise.
    """
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan")
    below = (np.count_nonzero(r <= 0) + 1) / (r.size + 1)
    above = (np.count_nonzero(r >= 0) + 1) / (r.size + 1)
    return float(min(1.0, 2 * min(below, above)))


def resamples_for_holm(comparisons: int, alpha: float = 0.05) -> int:
    """Bootstrap resamples that let a family of ``comparisons`` verdicts pass Holm's correction at all.

    A bootstrap p-value cannot go below ``2 / (B + 1)`` (:func:`bootstrap_p_value`),
    and Holm first compares the smallest p-value with ``alpha / comparisons``:
    with ``B = 2000`` and 52 comparisons even the clearest effect would be
    read "indistinguishable". This returns the larger of ``N_RESAMPLES`` and
    a ``B`` that puts that floor at a tenth of ``alpha / comparisons``.
    """
    if comparisons < 1:
        raise ValueError(f"comparisons must be at least 1, got {comparisons}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return max(N_RESAMPLES, math.ceil(20 * comparisons / alpha))


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm, 1979), in the order given.

    Sorted from the smallest, the ``i``-th p-value (from 0) is multiplied by
    ``m - i`` (``m`` comparisons), capped at 1, and made at least as large
    as the adjusted p-values before it. A comparison is significant at level
    ``alpha`` when its adjusted p-value is below ``alpha``: the chance of
    one or more false findings among the ``m`` stays under ``alpha``,
    whatever the dependence between them.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("expected a non-empty list of p-values")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (p.size - np.arange(p.size)) * p[order]))
    result = np.empty_like(adjusted)
    result[order] = adjusted
    return result


def holm_verdicts(verdicts: Sequence[str], p_values: Sequence[float], alpha: float = 0.05) -> list[str]:
    """Verdicts of several comparisons read together, after Holm's correction (:func:`holm_adjust`).

    ``verdicts`` and ``p_values`` come from the same comparisons (e.g.
    ``comparison.verdict`` and ``comparison.p_value`` of each
    :class:`PairedComparison`, or two columns of a summary table). A
    ``"better"`` or ``"worse"`` stays where its Holm-adjusted p-value is
    below ``alpha`` and becomes ``"indistinguishable"`` otherwise: the
    correction only removes findings, never adds one. A missing p-value
    (``nan``: a metric undefined on every resample) counts as 1. Use it where a summary
    concludes from more than three comparisons. Taught in
    ``course/01_strategies.ipynb``; used by 07's summary.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    verdicts = list(verdicts)
    for verdict in verdicts:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    p = np.asarray(p_values, dtype=float)
    floor = 2 / (N_RESAMPLES + 1)  # the smallest p-value of a default bootstrap
    if len(p) * floor >= alpha and np.any(np.isclose(p, floor, rtol=1e-9, atol=0)):
        warnings.warn(
            f"{len(p)} comparisons read together: p-values at the floor of {N_RESAMPLES} bootstrap resamples "
            f"({floor:.4f}) cannot pass Holm's first threshold ({alpha / len(p):.5f}), so every verdict would read "
            f"'indistinguishable'; compute them with resamples_for_holm({len(p)}) resamples",
            RuntimeWarning,
            stacklevel=2,
        )
    adjusted = holm_adjust(np.where(np.isnan(p), 1.0, p))  # no p-value (nothing to compare): found nothing
    if len(adjusted) != len(verdicts):
        raise ValueError(f"{len(verdicts)} verdicts but {len(adjusted)} p-values")
    return [verdict if p < alpha else "indistinguishable" for verdict, p in zip(verdicts, adjusted)]


def holm_table(table, measures: Sequence[str], alpha: float = 0.05):
    """A table of :func:`compare_to_reference` rows with every ``<measure>_verdict`` read together, after Holm.

    ``table`` has, for each prefix in ``measures``, the columns
    ``<measure>_verdict`` and ``<measure>_p`` (e.g. :func:`helpers.evaluation.forgetting_table`,
    :func:`helpers.evaluation.adaptation_table`). The verdicts of all rows and
    measures but the reference's (and rows without that measure) are corrected as one family
    (:func:`holm_verdicts`); a lower-is-better measure keeps its direction.
    The p-values must come from enough resamples for the family's size
    (:func:`resamples_for_holm`), or no verdict can survive. Returns a copy; the other columns are unchanged. Used by the summaries of
    ``course/06_catastrophic_forgetting.ipynb`` and ``course/11_peft.ipynb``.
    """
    corrected = table.copy()
    cells = [
        (row, f"{measure}_verdict", f"{measure}_p")
        for measure in measures
        for row in table.index
        if table.loc[row, f"{measure}_verdict"] in VERDICTS  # not the reference, nor a row without this measure
    ]
    if not cells:
        return corrected
    verdicts = holm_verdicts(
        [table.loc[row, verdict] for row, verdict, _ in cells], [float(table.loc[row, p]) for row, _, p in cells], alpha
    )
    for (row, verdict, _), holm in zip(cells, verdicts):
        corrected.loc[row, verdict] = holm
    return corrected


def _verdict(difference: Interval) -> str:
    """``"better"`` when the whole interval of A - B is above 0, ``"worse"`` below, else ``"indistinguishable"``."""
    return "better" if difference.low > 0 else "worse" if difference.high < 0 else "indistinguishable"


Metric = Callable[..., "float | np.ndarray"]


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``n_resamples`` bootstrap resamples of ``range(n)`` (drawn with replacement), shape ``(n_resamples, n)``.

    The same ``n``, ``n_resamples`` and ``seed`` always give the same indices:
    two models scored with the same seed are scored on the same resamples.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 items, got {n}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def resample_weights(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """The resamples of :func:`resample_indices` as counts: how often each item was drawn, shape ``(n_resamples, n)``.

    A metric computed with these counts as sample weights equals the metric
    computed on the resampled items (an item drawn twice counts twice), which
    lets a metric score all the resamples at once with array operations.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    indices = resample_indices(n, n_resamples, seed)
    counts = np.zeros(indices.shape, dtype=np.int64)
    np.add.at(counts, (np.arange(indices.shape[0])[:, None], indices), 1)
    return counts


def interval_from_replicates(value: float, replicates: np.ndarray, confidence: float = 0.95) -> Interval:
    """Percentile interval of a metric from its values on the bootstrap resamples (``nan`` replicates left out).

    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    replicates = np.asarray(replicates, dtype=float)
    replicates = replicates[np.isfinite(replicates)]  # e.g. a resample without any item of a class
    if replicates.size == 0:
        return Interval(value, float("nan"), float("nan"), confidence)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(value, float(low), float(high), confidence)


def metric_replicates(
    metric: Metric,
    labels: Sequence,
    predictions: Sequence,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    weighted: bool = False,
) -> tuple[float, np.ndarray]:
    """The metric on all items, and on each resample of :func:`resample_indices` (the one place where resamples are scored).

    Two models scored with the same ``n_resamples`` and ``seed`` are scored on
    the same resamples: :func:`paired_from_replicates` compares them.
    ``weighted`` as in :func:`bootstrap_metric`. Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    n = _check_items(labels, predictions)
    if weighted:
        value = float(np.asarray(metric(labels, predictions, np.ones((1, n))))[0])
        return value, np.asarray(metric(labels, predictions, resample_weights(n, n_resamples, seed)), dtype=float)
    value = float(metric(labels, predictions))
    replicates = [metric(labels[idx], predictions[idx]) for idx in resample_indices(n, n_resamples, seed)]
    return value, np.asarray(replicates, dtype=float)


def paired_from_replicates(
    a: tuple[float, np.ndarray], b: tuple[float, np.ndarray], n: int, confidence: float = 0.95
) -> PairedComparison:
    """A minus B from their :func:`metric_replicates` on the same resamples of ``n`` items, and the verdict.

    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    return _paired(a[0] - b[0], a[1] - b[1], n, confidence)


def bootstrap_metric(
    metric: Metric,
    labels: Sequence,
    predictions: Sequence,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    weighted: bool = False,
) -> Interval:
    """Percentile bootstrap interval of ``metric(labels, predictions)``, resampling the items.

    ``metric`` is any function of the true labels and of one prediction (or
    score) per item: ``sklearn.metrics.balanced_accuracy_score``,
    ``functools.partial(f1_score, average="macro")``, ... It is called once
    per resample of :func:`resample_indices`. With ``weighted=True``,
    ``metric(labels, predictions, weights)`` instead receives every resample
    at once as the counts of :func:`resample_weights` (shape
    ``(n_resamples, n)``) and returns one value per row: much faster, same
    resamples (see :mod:`helpers.evaluation.imbalance`). The point estimate is
    the metric on all items; a resample where the metric is undefined
    (``nan``) is left out. Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    value, replicates = metric_replicates(metric, labels, predictions, n_resamples, seed, weighted)
    return interval_from_replicates(value, replicates, confidence)


def paired_bootstrap_metric(
    metric: Metric,
    labels: Sequence,
    predictions_a: Sequence,
    predictions_b: Sequence,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    weighted: bool = False,
) -> PairedComparison:
    """Compare A and B on the same items with any metric: ``metric(A) - metric(B)`` on the same resamples.

    Each resample of item indices scores both models, so what the items have
    in common (easy or hard examples) cancels out. The verdict is
    ``"better"`` (A above B) when the whole interval of the difference is
    above 0, ``"worse"`` when it is below, ``"indistinguishable"`` otherwise,
    as for :func:`paired_bootstrap`. ``weighted`` as in :func:`bootstrap_metric`.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    n = _check_items(np.asarray(labels), np.asarray(predictions_a), np.asarray(predictions_b))
    a = metric_replicates(metric, labels, predictions_a, n_resamples, seed, weighted)
    b = metric_replicates(metric, labels, predictions_b, n_resamples, seed, weighted)
    return paired_from_replicates(a, b, n, confidence)


def _seeds_items(scores: Sequence[Sequence[float]]) -> np.ndarray:
    data = np.asarray(scores, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"expected one row of per-item scores per seed (2 dimensions), got shape {data.shape}")
    if data.shape[0] < 1:
        raise ValueError("expected at least one seed")
    _check_items(data[0])
    return data


def seeds_replicates(scores: Sequence[Sequence[float]], n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """The mean score on ``n_resamples`` two-level bootstrap resamples of ``scores`` (seeds x items).

    Each resample draws the seeds (rows) with replacement and, independently,
    the items (columns) with replacement (:func:`resample_weights`, so two
    score tables of the same shape and ``seed`` are resampled alike), and
    averages the drawn seeds' scores on the drawn items.
    """
    data = _seeds_items(scores)
    n_seeds, n_items = data.shape
    per_seed = data @ resample_weights(n_items, n_resamples, seed).T / n_items  # (seeds, resamples)
    picks = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_resamples, n_seeds))
    return per_seed[picks, np.arange(n_resamples)[:, None]].mean(axis=1)


def seeds_interval(
    scores: Sequence[Sequence[float]], confidence: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Interval:
    """Mean of a per-item score over several training seeds, with a 95% interval for seeds and items together.

    ``scores`` has one row per seed (a model trained with that seed) and one
    column per test item (e.g. 1 if that model got the item right), the same
    items in every row. The interval resamples seeds and items
    (:func:`seeds_replicates`): it is wider than an interval over the items
    alone when the runs disagree. With very few seeds (3) the seed part of
    the interval is rough (a bootstrap of 3 values underestimates their
    spread): read it as a minimum. Taught in ``course/01_strategies.ipynb``.
    """
    data = _seeds_items(scores)
    return interval_from_replicates(float(data.mean()), seeds_replicates(data, n_resamples, seed), confidence)


def paired_seeds(
    scores_a: Sequence[Sequence[float]],
    scores_b: Sequence[Sequence[float]],
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare two training recipes run with the same seeds on the same items: mean(A) - mean(B) and the verdict.

    ``scores_a`` and ``scores_b`` are seeds x items tables (row ``i`` of both
    with the same seed); the two-level resamples of :func:`seeds_replicates`
    are drawn on the per-item differences. The verdict is ``"better"`` when
    the whole interval is above 0, ``"worse"`` below, ``"indistinguishable"``
    otherwise. Taught in ``course/01_strategies.ipynb``.
    """
    a, b = _seeds_items(scores_a), _seeds_items(scores_b)
    if a.shape != b.shape:
        raise ValueError(f"paired score tables must have the same shape, got {a.shape} and {b.shape}")
    return _paired(float((a - b).mean()), seeds_replicates(a - b, n_resamples, seed), a.shape[1], confidence)


def _check_correct(values: Sequence) -> np.ndarray:
    data = np.asarray(values)
    if data.ndim != 1 or not np.all((data == 0) | (data == 1)):
        raise ValueError("correctness must be one 0/1 (or False/True) value per item")
    return data.astype(bool)


def mcnemar(correct_a: Sequence, correct_b: Sequence, confidence: float = 0.95) -> McNemarTest:
    """McNemar's exact test: are A and B right equally often on the same items?

    ``correct_a`` and ``correct_b`` hold 1 where each classifier is right.
    Only the discordant items count: ``a_only`` (A right, B wrong) and
    ``b_only`` (B right, A wrong). Were A and B equally good, each discordant
    item would fall on either side with probability 1/2: the p-value is the
    exact two-sided binomial test ``scipy.stats.binomtest(a_only, a_only +
    b_only)`` (1.0 when there is no discordant item). The verdict is
    ``"better"`` (A more often right) or ``"worse"`` when the p-value is below
    ``alpha = 1 - confidence``, ``"indistinguishable"`` otherwise. Taught in
    ``course/09_evaluation.ipynb``.
    """
    from scipy.stats import binomtest

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    a, b = _check_correct(correct_a), _check_correct(correct_b)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired values must have the same length, at least 1, got {len(a)} and {len(b)}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    p_value = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    significant = p_value < 1 - confidence
    verdict = "indistinguishable" if not significant else "better" if a_only > b_only else "worse"
    return McNemarTest(a_only, b_only, p_value, verdict, len(a))


@dataclass(frozen=True)
class IndependentComparison:
    """Mean of A minus mean of B on two *different* sets of items, its interval, and what it allows one to say."""

    difference: Interval
    verdict: str  # "better" (A > B), "worse" (A < B) or "indistinguishable" at this confidence
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return {"difference": self.difference.as_dict(), "verdict": self.verdict, "n_a": self.n_a, "n_b": self.n_b}


def independent_difference(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> IndependentComparison:
    """Compare two groups of different items: mean(A) - mean(B), each group resampled on its own.

    For accuracies measured on two distinct sets (short and long reviews,
    in-domain and shifted data), where nothing pairs an item of A with one of
    B: each resample draws ``len(scores_a)`` items of A
    (``resample_weights(len(scores_a), n_resamples, seed)``) and, independently,
    ``len(scores_b)`` items of B (seed ``seed + 1``), and the interval is the
    percentile interval of the difference of their means. The verdict is
    ``"better"`` when the whole interval is above 0, ``"worse"`` when it is
    below, ``"indistinguishable"`` otherwise. Two groups of the same items
    call for :func:`paired_bootstrap` instead, whose interval is narrower
    when the items are correlated. Taught in ``course/09_evaluation.ipynb``.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"expected one score per item in each group, got shapes {a.shape} and {b.shape}")
    _check_items(a)
    _check_items(b)
    replicates = (
        resample_weights(a.size, n_resamples, seed) @ a / a.size
        - resample_weights(b.size, n_resamples, seed + 1) @ b / b.size
    )
    difference = interval_from_replicates(float(a.mean() - b.mean()), replicates, confidence)
    return IndependentComparison(difference, _verdict(difference), a.size, b.size)
