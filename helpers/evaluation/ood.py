"""Out-of-distribution detection from a classifier's logits: scores, AUROC with its interval, FPR at 95% TPR.

A classifier sees inputs unlike its training data (another topic, another
language, noise) and still answers, often confidently. A **score** computed
from its logits tells how in-distribution an input looks; for both scores
here, *higher means more in-distribution*:

- :func:`max_softmax_probability` (MSP, Hendrycks & Gimpel 2017): the
  largest softmax probability;
- :func:`energy_score` (Liu et al. 2020): the negative energy
  ``T * logsumexp(logits / T)``, which keeps the scale of the logits that the
  softmax normalizes away.

Both see only the logits: for two classes, how far an input lies along one
direction of the encoder's sentence space. Two scores read the whole
sentence vector instead (what the classifier's head reads), against the
vectors of the training items, again higher = more in-distribution:

- :func:`knn_score` (Sun et al. 2022): minus the distance to the ``k``-th
  nearest training vector, all vectors scaled to length 1;
- :func:`mahalanobis_score` (Lee et al. 2018): minus the smallest
  Mahalanobis distance to a class mean, with one covariance shared by the
  classes.

How well a score separates the in-distribution test items from OOD inputs
is read with :func:`ood_auroc` (1: perfect, 0.5: chance), with a bootstrap
interval, two scores on the same inputs are compared by
:func:`paired_ood_auroc`, and :func:`fpr_at_tpr` gives the share of OOD
inputs still accepted when 95% of the in-distribution ones are.

Taught in ``course/09_evaluation.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import logsumexp

from helpers.evaluation.calibration import check_temperature, softmax
from helpers.evaluation.uncertainty import (
    N_RESAMPLES,
    Interval,
    PairedComparison,
    interval_from_replicates,
    paired_from_replicates,
    resample_weights,
)

__all__ = [
    "max_softmax_probability",
    "energy_score",
    "knn_score",
    "mahalanobis_score",
    "ood_auroc",
    "paired_ood_auroc",
    "fpr_at_tpr",
]


def _check_logits(logits: Sequence) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (items, classes) with at least 2 classes, got {z.shape}")
    return z


def max_softmax_probability(logits: Sequence) -> np.ndarray:
    """Largest softmax probability of each item (Hendrycks & Gimpel 2017); higher = more in-distribution.

    Taught in ``course/09_evaluation.ipynb``.
    """
    return softmax(_check_logits(logits)).max(axis=1)


def energy_score(logits: Sequence, temperature: float = 1.0) -> np.ndarray:
    """Negative energy of each item, ``T * logsumexp(logits / T)`` (Liu et al. 2020); higher = more in-distribution.

    The energy is ``-T * logsumexp(logits / T)``; it is returned with its
    sign flipped so that, as with :func:`max_softmax_probability`, a higher
    score means a more in-distribution input. Taught in
    ``course/09_evaluation.ipynb``.
    """
    t = check_temperature(temperature)
    return t * logsumexp(_check_logits(logits) / t, axis=1)


def _check_features(train_features: Sequence, features: Sequence) -> tuple[np.ndarray, np.ndarray]:
    train, x = np.asarray(train_features, dtype=float), np.asarray(features, dtype=float)
    if train.ndim != 2 or x.ndim != 2 or train.shape[1] != x.shape[1] or train.shape[0] < 2:
        raise ValueError(
            f"expected (items, dimensions) arrays of the same width, at least 2 training items, got {train.shape} "
            f"and {x.shape}"
        )
    return train, x


def knn_score(train_features: Sequence, features: Sequence, k: int = 10) -> np.ndarray:
    """Minus the distance of each vector to its ``k``-th nearest training vector (Sun et al. 2022); higher = more in.

    Every vector is first scaled to length 1, so the distance depends on the
    direction only (the length of a sentence vector varies with the text's
    length). No class label and no model of the distribution: an input far
    from every training item is suspect. Taught in ``course/09_evaluation.ipynb``.
    """
    from sklearn.neighbors import NearestNeighbors

    train, x = _check_features(train_features, features)
    if not 1 <= k <= train.shape[0]:
        raise ValueError(f"k must lie in [1, {train.shape[0]}] (the training items), got {k}")
    scale = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
    distances, _ = NearestNeighbors(n_neighbors=k).fit(scale(train)).kneighbors(scale(x))
    return -distances[:, -1]


def mahalanobis_score(train_features: Sequence, train_labels: Sequence[int], features: Sequence) -> np.ndarray:
    """Minus the smallest Mahalanobis distance of each vector to a class mean (Lee et al. 2018); higher = more in.

    One Gaussian per class around its mean, with a covariance shared by the
    classes (estimated on the training vectors minus their class mean, with
    Ledoit-Wolf shrinkage: 384 dimensions from a few thousand vectors). The
    distance counts each direction in units of the training data's spread
    along it: a foreign text moves along directions where reviews barely
    vary. Taught in ``course/09_evaluation.ipynb``.
    """
    from sklearn.covariance import LedoitWolf

    train, x = _check_features(train_features, features)
    labels = np.asarray(train_labels)
    if labels.shape != (train.shape[0],):
        raise ValueError(f"expected one label per training vector, got {labels.shape} for {train.shape[0]}")
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    centered = train - means[np.searchsorted(classes, labels)]
    covariance = LedoitWolf(assume_centered=True).fit(centered)
    distances = np.stack([covariance.mahalanobis(x - mean) for mean in means], axis=1)
    return -np.sqrt(distances.min(axis=1))


def _check_scores(scores_in: Sequence[float], scores_out: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s_in, s_out = np.asarray(scores_in, dtype=float), np.asarray(scores_out, dtype=float)
    if s_in.ndim != 1 or s_out.ndim != 1 or s_in.size == 0 or s_out.size == 0:
        raise ValueError(
            f"expected one score per item, at least one in each group, got shapes {s_in.shape} and {s_out.shape}"
        )
    if not (np.all(np.isfinite(s_in)) and np.all(np.isfinite(s_out))):
        raise ValueError("scores must be finite")
    return s_in, s_out


def _weighted_auroc(s_in: np.ndarray, s_out: np.ndarray, w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """AUROC (in-distribution positive) for each row of the item counts ``w_in`` and ``w_out``, ties counted 1/2.

    The probability that a drawn in-distribution score is above a drawn OOD
    score (Mann-Whitney), for all resamples at once.
    """
    order = np.argsort(s_out, kind="stable")
    sorted_out = s_out[order]
    below = np.concatenate([np.zeros((w_out.shape[0], 1)), np.cumsum(w_out[:, order], axis=1)], axis=1)
    left, right = np.searchsorted(sorted_out, s_in, "left"), np.searchsorted(sorted_out, s_in, "right")
    wins = below[:, left] + 0.5 * (below[:, right] - below[:, left])  # OOD items below each in item, ties half
    return (w_in * wins).sum(axis=1) / (w_in.sum(axis=1) * w_out.sum(axis=1))


def _auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """``sklearn.metrics.roc_auc_score`` with the in-distribution inputs as positives."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(s_in.size), np.zeros(s_out.size)], np.r_[s_in, s_out]))


def ood_auroc(
    scores_in: Sequence[float],
    scores_out: Sequence[float],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """AUROC of telling in-distribution inputs (positive) from OOD ones by a score, with a bootstrap interval.

    The value is ``sklearn.metrics.roc_auc_score``: 1 when every
    in-distribution score is above every OOD score, 0.5 when the score does
    not tell them apart. The bootstrap resamples the two groups separately
    (stratified: each resample keeps as many items of each group), the
    in-distribution scores as ``resample_indices(len(scores_in), n_resamples,
    seed)`` and the OOD scores as ``resample_indices(len(scores_out),
    n_resamples, seed + 1)`` (:mod:`helpers.evaluation.uncertainty`): two
    scores of the same inputs are evaluated on the same resamples. Taught in
    ``course/09_evaluation.ipynb``.
    """
    s_in, s_out = _check_scores(scores_in, scores_out)
    value = _auroc(s_in, s_out)
    w_in = resample_weights(s_in.size, n_resamples, seed)
    w_out = resample_weights(s_out.size, n_resamples, seed + 1)
    return interval_from_replicates(value, _weighted_auroc(s_in, s_out, w_in, w_out), confidence)


def paired_ood_auroc(
    scores_in_a: Sequence[float],
    scores_out_a: Sequence[float],
    scores_in_b: Sequence[float],
    scores_out_b: Sequence[float],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """AUROC of score A minus AUROC of score B on the same inputs, with its interval, verdict and p-value.

    Both AUROCs are computed on the same resamples of :func:`ood_auroc` (the
    same in-distribution and OOD inputs drawn), so what the inputs have in
    common cancels out: the interval is narrower than the two separate ones.
    ``"better"``: A separates better. Taught in ``course/09_evaluation.ipynb``.
    """
    a = _check_scores(scores_in_a, scores_out_a)
    b = _check_scores(scores_in_b, scores_out_b)
    if a[0].size != b[0].size or a[1].size != b[1].size:
        raise ValueError("the two scores must be computed on the same inputs")
    w_in = resample_weights(a[0].size, n_resamples, seed)
    w_out = resample_weights(a[1].size, n_resamples, seed + 1)
    auroc_a = (_auroc(*a), _weighted_auroc(*a, w_in, w_out))
    auroc_b = (_auroc(*b), _weighted_auroc(*b, w_in, w_out))
    return paired_from_replicates(auroc_a, auroc_b, a[0].size + a[1].size, confidence)


def fpr_at_tpr(scores_in: Sequence[float], scores_out: Sequence[float], tpr: float = 0.95) -> float:
    """Share of OOD inputs accepted (score >= threshold) when the threshold keeps ``tpr`` of the in-distribution ones.

    The threshold is the highest score that keeps at least ``tpr`` of the
    in-distribution inputs (the ``ceil(tpr * n_in)``-th highest): the same
    point as the first one of ``sklearn.metrics.roc_curve`` whose true
    positive rate reaches ``tpr``. Lower is better; 0.95 at ``tpr=0.95``
    means a score that tells nothing. Taught in ``course/09_evaluation.ipynb``.
    """
    s_in, s_out = _check_scores(scores_in, scores_out)
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    kept = int(np.ceil(tpr * s_in.size - 1e-9))  # how many in-distribution inputs must pass
    threshold = np.sort(s_in)[::-1][kept - 1]
    return float(np.mean(s_out >= threshold))
