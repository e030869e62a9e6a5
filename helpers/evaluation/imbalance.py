"""Measuring a classifier on imbalanced classes: per-class recall, macro-F1, balanced accuracy, PR-AUC, thresholds.

When one class is rare, accuracy mostly measures the frequent class: a model
that never predicts the rare class scores the frequent class's share. The
metrics here give every class its say:

- the **recall of each class** (as ``sklearn.metrics.recall_score``), above all
  the minority's: how many of its examples are found;
- **macro-F1** (``f1_score(average="macro")``): the F1 of each class, averaged
  without weighting by class size;
- **balanced accuracy** (``balanced_accuracy_score``): the mean of the
  per-class recalls;
- **PR-AUC** of the minority class (``average_precision_score`` on its
  predicted probability): how well the model *ranks* the rare examples,
  whatever the decision threshold; a model that ranks at random scores the
  minority's share.

:func:`imbalance_table` computes them for several models on the same test
items with bootstrap intervals, and compares each model with a reference on
the same resamples (:func:`helpers.evaluation.uncertainty.paired_bootstrap_metric`).
**Threshold moving** (:func:`choose_threshold`, :func:`predict_with_threshold`)
changes no weight: it predicts the minority class as soon as its probability
passes a threshold chosen on the *validation* set.

Taught in ``course/07_overfitting_imbalance.ipynb``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from helpers.evaluation.uncertainty import (
    N_RESAMPLES,
    interval_from_replicates,
    metric_replicates,
    paired_from_replicates,
)

__all__ = [
    "weighted_confusion",
    "class_recall",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "pr_auc",
    "imbalance_metrics",
    "imbalance_table",
    "choose_threshold",
    "predict_with_threshold",
]


def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must have shape (n_resamples, {n}), got {w.shape}")
    return w


def weighted_confusion(
    labels: Sequence[int], predictions: Sequence[int], num_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Confusion matrices ``[r, true, predicted]``, one per row of ``weights`` (item counts), shape ``(R, C, C)``.

    Without ``weights``, one matrix that counts every item once (``R = 1``),
    equal to ``sklearn.metrics.confusion_matrix``; with the resample counts of
    :func:`helpers.evaluation.uncertainty.resample_weights`, one per resample.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    y, p = np.asarray(labels), np.asarray(predictions)
    w = _weights(len(y), weights)
    # One column per (true, predicted) pair: a single matrix product counts every resample at once
    # (a three-operand einsum loops in C without BLAS: ~100x slower with 11 classes and 2,000 resamples).
    valid = np.flatnonzero((y >= 0) & (y < num_classes) & (p >= 0) & (p < num_classes))
    pairs = np.zeros((len(y), num_classes * num_classes))
    pairs[valid, y[valid] * num_classes + p[valid]] = 1.0
    return (w @ pairs).reshape(-1, num_classes, num_classes)


def _recalls(confusion: np.ndarray) -> np.ndarray:
    support = confusion.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diagonal(confusion, axis1=1, axis2=2) / support  # nan for a class without items


def class_recall(
    labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None = None, *, cls: int, num_classes: int
) -> np.ndarray:
    """Recall of class ``cls`` (share of its items predicted as ``cls``) for each row of ``weights``.

    ``sklearn.metrics.recall_score(labels=[cls], average="macro",
    sample_weight=...)``, for all resamples at once; ``nan`` when the class
    has no item. Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    return _recalls(weighted_confusion(labels, predictions, num_classes, weights))[:, cls]


def accuracy(labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None = None) -> np.ndarray:
    """Share of items predicted right, for each row of ``weights`` (``sklearn.metrics.accuracy_score``)."""
    w = _weights(len(labels), weights)
    return w @ (np.asarray(labels) == np.asarray(predictions)).astype(float) / w.sum(axis=1)


def balanced_accuracy(
    labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None = None, *, num_classes: int
) -> np.ndarray:
    """Mean of the recalls of the classes present, for each row of ``weights``.

    ``sklearn.metrics.balanced_accuracy_score``; a majority-class model scores
    ``1 / num_classes``. Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    return np.nanmean(_recalls(weighted_confusion(labels, predictions, num_classes, weights)), axis=1)


def macro_f1(
    labels: Sequence[int], predictions: Sequence[int], weights: np.ndarray | None = None, *, num_classes: int
) -> np.ndarray:
    """F1 of each of the ``num_classes`` classes averaged with equal weights, for each row of ``weights``.

    ``sklearn.metrics.f1_score(labels=range(num_classes), average="macro",
    zero_division=0)``: a class never predicted and never present counts 0.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    confusion = weighted_confusion(labels, predictions, num_classes, weights)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    denominator = confusion.sum(axis=2) + confusion.sum(axis=1)  # 2 TP + FN + FP
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    return f1.mean(axis=1)


def pr_auc(
    labels: Sequence[int], scores: Sequence[float], weights: np.ndarray | None = None, *, cls: int
) -> np.ndarray:
    """Average precision (area under the precision-recall curve) of class ``cls`` from its ``scores``.

    ``sklearn.metrics.average_precision_score(labels == cls, scores,
    sample_weight=...)`` for each row of ``weights``: the precision at each
    distinct score, weighted by the recall it adds. ``nan`` when ``cls`` has
    no item. A model that ranks at random scores about the share of ``cls``.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    positive = (np.asarray(labels) == cls).astype(float)
    scores = np.asarray(scores, dtype=float)
    w = _weights(len(positive), weights)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    last_of_score = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]  # thresholds: distinct scores
    tp = np.cumsum(w[:, order] * positive[order], axis=1)[:, last_of_score]
    fp = np.cumsum(w[:, order] * (1 - positive[order]), axis=1)[:, last_of_score]
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = tp / total
    gained = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    result = (gained * precision).sum(axis=1)
    return np.where(total[:, 0] > 0, result, np.nan)


def imbalance_metrics(num_classes: int, minority: int) -> dict[str, tuple[Callable, str]]:
    """The metrics of an imbalanced task: name -> (metric ``f(labels, x, weights)``, what ``x`` is).

    ``x`` is ``"predictions"`` (predicted classes) or ``"scores"`` (the
    predicted probability of ``minority``). Names: ``accuracy``, ``recall
    <class>`` for every class, ``macro-F1``, ``balanced accuracy``, ``PR-AUC``
    (of the minority class). Every metric scores all bootstrap resamples at
    once (``weighted=True`` in :func:`helpers.evaluation.uncertainty.bootstrap_metric`).
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    if not 0 <= minority < num_classes:
        raise ValueError(f"minority must be a class of range({num_classes}), got {minority}")
    metrics: dict[str, tuple[Callable, str]] = {"accuracy": (accuracy, "predictions")}
    for cls in range(num_classes):
        metrics[f"recall {cls}"] = (partial(class_recall, cls=cls, num_classes=num_classes), "predictions")
    metrics["macro-F1"] = (partial(macro_f1, num_classes=num_classes), "predictions")
    metrics["balanced accuracy"] = (partial(balanced_accuracy, num_classes=num_classes), "predictions")
    metrics["PR-AUC"] = (partial(pr_auc, cls=minority), "scores")
    return metrics


def imbalance_table(
    labels: Sequence[int],
    runs: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    num_classes: int,
    minority: int,
    reference: str | None = None,
    compare: Sequence[str] = ("recall", "macro-F1", "balanced accuracy", "PR-AUC"),
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Every metric of :func:`imbalance_metrics` for several models on the same items, with intervals.

    ``runs`` maps a model's name to ``(predictions, minority_scores)``: its
    predicted classes and its predicted probability of ``minority``, in the
    order of ``labels``. One row per model; for each metric ``m`` the columns
    ``m``, ``m low`` and ``m high`` (95% bootstrap interval). With
    ``reference`` (the name of one run), the metrics in ``compare``
    (``"recall"`` stands for the minority's recall) get a column
    ``m vs <reference>`` with the paired verdict (``"better"``, ``"worse"``,
    ``"indistinguishable"``), ``m diff low``/``m diff high`` and ``m p`` (the
    bootstrap p-value, for :func:`helpers.evaluation.uncertainty.holm_verdicts`); every model
    is scored on the same resamples (same ``seed``). Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    y = np.asarray(labels)
    if reference is not None and reference not in runs:
        raise ValueError(f"reference {reference!r} is not one of the runs {list(runs)}")
    metrics = imbalance_metrics(num_classes, minority)
    compared = [f"recall {minority}" if name == "recall" else name for name in compare]
    unknown = [name for name in compared if name not in metrics]
    if unknown:
        raise ValueError(f"cannot compare {unknown}: the metrics are {list(metrics)}")

    def inputs(run: str) -> dict[str, np.ndarray]:
        predictions, scores = runs[run]
        return {"predictions": np.asarray(predictions), "scores": np.asarray(scores, dtype=float)}

    # Each model's metrics are scored once on the shared resamples; intervals and paired comparisons reuse them.
    replicates = {
        run: {
            name: metric_replicates(metric, y, inputs(run)[kind], n_resamples, seed, weighted=True)
            for name, (metric, kind) in metrics.items()
        }
        for run in runs
    }
    rows = {}
    for run in runs:
        row: dict[str, float | str] = {}
        for name in metrics:
            interval = interval_from_replicates(*replicates[run][name])
            row.update({name: interval.value, f"{name} low": interval.low, f"{name} high": interval.high})
        if reference is not None and run != reference:
            for name in compared:
                comparison = paired_from_replicates(replicates[run][name], replicates[reference][name], len(y))
                row.update(
                    {
                        f"{name} vs {reference}": comparison.verdict,
                        f"{name} diff low": comparison.difference.low,
                        f"{name} diff high": comparison.difference.high,
                        f"{name} p": comparison.p_value,
                    }
                )
        rows[run] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def choose_threshold(
    labels: Sequence[int],
    minority_scores: Sequence[float],
    minority: int,
    metric: Callable[[np.ndarray, np.ndarray], float] = balanced_accuracy_score,
) -> float:
    """The threshold on the minority's probability that maximises ``metric`` (on validation data).

    Every distinct score is tried as a threshold (:func:`predict_with_threshold`
    predicts the minority when its score is at least the threshold, the most
    frequent other class otherwise in a binary task); ties go to the threshold
    closest to 0.5. Choose it on the validation set, never on the test set:
    a threshold tuned on the test items flatters the test score. Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    y = np.asarray(labels)
    scores = np.asarray(minority_scores, dtype=float)
    if y.shape != scores.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(
            f"labels and minority_scores must be 1-D and of the same length, got {y.shape} and {scores.shape}"
        )
    classes = np.unique(y)
    if classes.size != 2 or minority not in classes:
        raise ValueError(
            f"threshold moving here is binary: labels must hold {minority} and one other class, got {classes}"
        )
    other = int(classes[classes != minority][0])
    candidates = np.unique(scores)
    values = [metric(y, np.where(scores >= t, minority, other)) for t in candidates]
    best = max(values)
    ties = candidates[np.isclose(values, best, rtol=0, atol=1e-12)]
    return float(ties[np.argmin(np.abs(ties - 0.5))])


def predict_with_threshold(probabilities: np.ndarray, minority: int, threshold: float) -> np.ndarray:
    """Predicted classes when the minority is chosen as soon as its probability reaches ``threshold``.

    ``probabilities`` has shape ``(N, C)``. Below the threshold the most
    probable of the other classes is predicted. ``threshold=0.5`` in a binary
    task is the usual argmax (up to exact ties). Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2 or not 0 <= minority < probabilities.shape[1]:
        raise ValueError(f"probabilities must have shape (N, C) with minority in range(C), got {probabilities.shape}")
    others = probabilities.copy()
    others[:, minority] = -np.inf
    return np.where(probabilities[:, minority] >= threshold, minority, others.argmax(axis=1))
