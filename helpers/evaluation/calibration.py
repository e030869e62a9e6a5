"""Is a classifier's confidence honest? Reliability tables, expected calibration error, temperature scaling.

A model is **calibrated** when, among the items it predicts with confidence
0.8, about 80% are right. :func:`reliability_table` sorts the test items into
equal-width bins of confidence (the probability of the predicted class) and
compares, in each bin, the mean confidence with the accuracy;
:func:`expected_calibration_error` (ECE, top-label, Guo et al. 2017) sums the
gaps, weighted by the share of items in each bin, and :func:`ece_interval`
gives its bootstrap interval (the same resamples as
:func:`helpers.evaluation.uncertainty.bootstrap_metric`).

**Temperature scaling** (Guo et al. 2017) divides every logit by one number
``T`` fitted on the *validation* logits (:func:`fit_temperature`, which
minimizes the :func:`negative_log_likelihood`): ``T > 1`` softens an
overconfident model. Dividing by a positive number keeps the order of the
logits, so the predicted class, and the accuracy, do not change.

Taught in ``course/09_evaluation.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
from scipy.special import log_softmax

from helpers.evaluation.uncertainty import N_RESAMPLES, Interval, interval_from_replicates, metric_replicates

__all__ = [
    "check_temperature",
    "softmax",
    "reliability_table",
    "expected_calibration_error",
    "ece_interval",
    "negative_log_likelihood",
    "fit_temperature",
]


def check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return temperature


def softmax(logits: Sequence, temperature: float = 1.0) -> np.ndarray:
    """Probabilities from logits along the last axis: ``exp(z / T) / sum(exp(z / T))``.

    Numerically stable (the largest logit of each row is subtracted before
    ``exp``). Raises ``ValueError`` when ``temperature <= 0``. Taught in
    ``course/09_evaluation.ipynb``.
    """
    z = np.asarray(logits, dtype=float) / check_temperature(temperature)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _check_labels(labels: Sequence[int], n: int, num_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"expected one label per item ({n}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values from {y.min()} to {y.max()}")
    return y


def _check_logits(logits: Sequence, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=float)
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (items, classes) with at least 2 classes, got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    return z, _check_labels(labels, z.shape[0], z.shape[1])


def _check_probabilities(probabilities: Sequence, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (items, classes) with at least 2 classes, got {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probabilities must lie in [0, 1] (pass softmax(logits), not the logits)")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("each row of probabilities must sum to 1")
    return p, _check_labels(labels, p.shape[0], p.shape[1])


def _check_bins(n_bins: int) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a whole number of at least 1, got {n_bins}")
    return int(n_bins)


def _bin_sums(
    labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray, *, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin and per row of ``weights`` (item counts): items, sum of confidences, items right; ``(R, n_bins)`` each.

    Bin ``b`` holds the confidences in ``(b / n_bins, (b + 1) / n_bins]``
    (the first bin also holds 0).
    """
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    members = np.zeros((len(labels), n_bins))
    members[np.arange(len(labels)), bins] = 1.0
    w = np.asarray(weights, dtype=float)
    return w @ members, w @ (members * confidence[:, None]), w @ (members * correct[:, None])


def reliability_table(probabilities: Sequence, labels: Sequence[int], n_bins: int = 10) -> pd.DataFrame:
    """One row per equal-width confidence bin over [0, 1], with its item count, mean confidence and accuracy.

    Columns: ``bin_low``, ``bin_high``, ``count``, ``mean_confidence``,
    ``accuracy``. The confidence of an item is its largest probability, the prediction its
    argmax. A bin holds the confidences in ``(bin_low, bin_high]``; every bin
    has a row, with ``nan`` mean confidence and accuracy where it is empty.
    A calibrated model has ``accuracy`` close to ``mean_confidence`` in every
    bin. Taught in ``course/09_evaluation.ipynb``.
    """
    p, y = _check_probabilities(probabilities, labels)
    n_bins = _check_bins(n_bins)
    counts, confidences, corrects = (s[0] for s in _bin_sums(y, p, np.ones((1, len(y))), n_bins=n_bins))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame(
            {
                "bin_low": edges[:-1],
                "bin_high": edges[1:],
                "count": counts.astype(int),
                "mean_confidence": confidences / counts,
                "accuracy": corrects / counts,
            }
        )


def _weighted_ece(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray, *, n_bins: int) -> np.ndarray:
    """ECE for each row of ``weights`` (item counts): ``sum over bins |number right - sum of confidences| / items``."""
    counts, confidences, corrects = _bin_sums(labels, probabilities, weights, n_bins=n_bins)
    return np.abs(corrects - confidences).sum(axis=1) / counts.sum(axis=1)


def expected_calibration_error(probabilities: Sequence, labels: Sequence[int], n_bins: int = 10) -> float:
    """Expected calibration error: ``sum over bins of count / n * |accuracy - mean_confidence|`` (Guo et al. 2017).

    The bins are those of :func:`reliability_table` (top-label confidence,
    equal width); 0 is perfect calibration. With few items per bin the ECE
    of even a calibrated model is above 0 (sampling noise): read it with
    :func:`ece_interval`. Taught in ``course/09_evaluation.ipynb``.
    """
    p, y = _check_probabilities(probabilities, labels)
    return float(_weighted_ece(y, p, np.ones((1, len(y))), n_bins=_check_bins(n_bins))[0])


def ece_interval(
    probabilities: Sequence,
    labels: Sequence[int],
    n_bins: int = 10,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """:func:`expected_calibration_error` with a percentile bootstrap interval, resampling the items.

    The resamples are those of
    :func:`helpers.evaluation.uncertainty.resample_indices` (``n_resamples``,
    ``seed``), scored all at once as item counts: two models scored with the
    same seed are scored on the same resamples. Taught in
    ``course/09_evaluation.ipynb``.
    """
    p, y = _check_probabilities(probabilities, labels)
    metric = partial(_weighted_ece, n_bins=_check_bins(n_bins))
    value, replicates = metric_replicates(metric, y, p, n_resamples, seed, weighted=True)
    return interval_from_replicates(value, replicates, confidence)


def negative_log_likelihood(logits: Sequence, labels: Sequence[int], temperature: float = 1.0) -> float:
    """Mean negative log-probability of the true class under ``softmax(logits / temperature)`` (nats per item).

    The cross-entropy loss of the classifier on these items. Taught in
    ``course/09_evaluation.ipynb``.
    """
    z, y = _check_logits(logits, labels)
    log_p = log_softmax(z / check_temperature(temperature), axis=1)
    return float(-log_p[np.arange(len(y)), y].mean())


def fit_temperature(logits: Sequence, labels: Sequence[int], bounds: tuple[float, float] = (-3.0, 3.0)) -> float:
    """Temperature scaling: the ``T`` that minimizes the :func:`negative_log_likelihood` of ``logits / T``.

    Searched over ``log T`` in ``bounds`` (``T`` from ``exp(-3) = 0.05`` to
    ``exp(3) = 20`` by default) with
    ``scipy.optimize.minimize_scalar(method="bounded")``. Fit it on
    validation logits, then divide the test logits by it. ``T > 1``: the
    model was overconfident. Dividing by a positive ``T`` keeps the order of
    each item's logits, so the argmax (the prediction) and the accuracy are
    unchanged; only the confidence moves. Taught in
    ``course/09_evaluation.ipynb``.
    """
    from scipy.optimize import minimize_scalar

    z, y = _check_logits(logits, labels)
    low, high = bounds
    if not low < high:
        raise ValueError(f"bounds must be (low, high) on log T with low < high, got {bounds}")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(z, y, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))
