"""Class imbalance in the data: a skewed training set built from real data, random over- and under-sampling.

- :func:`make_imbalanced` keeps a chosen number of examples of each class
  (seeded): a 9-to-1 training set from a balanced one, or a long tail;
- :func:`random_oversample` repeats examples of the small classes (drawn
  with replacement) until every class is as large as the largest;
- :func:`random_undersample` keeps, of every class, as many examples as the
  smallest class has, and drops the rest.

The draws come from ``imbalanced-learn`` (``RandomOverSampler``,
``RandomUnderSampler``), the scikit-learn companion for imbalanced data: it
works offline and picks *which rows* to keep (``sample_indices_``); the rows
themselves are then taken with ``Dataset.select``, so every column (text,
label, film, ...) follows. Resample the *training* set only: the validation
and test sets keep the class frequencies the model meets in use.

Taught in ``course/07_overfitting_imbalance.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from datasets import Dataset

__all__ = ["class_counts", "make_imbalanced", "random_oversample", "random_undersample"]


def class_counts(dataset: Dataset, label_column: str = "label") -> dict[int, int]:
    """Number of examples of each class present, ``{class: count}``, in class order.

    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    _check_column(dataset, label_column)
    labels, counts = np.unique(np.asarray(dataset[label_column]), return_counts=True)
    return {int(label): int(count) for label, count in zip(labels, counts)}


def make_imbalanced(
    dataset: Dataset, counts: Mapping[int, int], seed: int = 42, label_column: str = "label"
) -> Dataset:
    """A seeded subset with ``counts[c]`` examples of each class ``c`` (classes not in ``counts`` are dropped).

    The examples of each class are drawn at random without replacement; the
    result is shuffled (seeded). Asking for more examples of a class than the
    data set holds raises ``ValueError``. Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    _check_column(dataset, label_column)
    labels = np.asarray(dataset[label_column])
    rng = np.random.default_rng(seed)
    chosen = []
    for cls, count in counts.items():
        available = np.flatnonzero(labels == cls)
        if count < 0 or count > available.size:
            raise ValueError(f"class {cls}: asked for {count} examples, the data set has {available.size}")
        chosen.append(rng.choice(available, size=count, replace=False))
    indices = np.concatenate(chosen) if chosen else np.array([], dtype=int)
    return dataset.select(rng.permutation(indices).tolist())


def random_oversample(dataset: Dataset, seed: int = 42, label_column: str = "label") -> Dataset:
    """Every class repeated at random (with replacement) up to the size of the largest class.

    ``imblearn.over_sampling.RandomOverSampler`` chooses the rows: all the
    originals, then the drawn repeats. The result is shuffled (seeded) so
    that the copies do not come last. Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    from imblearn.over_sampling import RandomOverSampler

    return _resample(dataset, RandomOverSampler(random_state=seed), seed, label_column)


def random_undersample(dataset: Dataset, seed: int = 42, label_column: str = "label") -> Dataset:
    """As many examples of each class as the smallest class has, drawn at random without replacement.

    ``imblearn.under_sampling.RandomUnderSampler`` chooses the rows; the
    result is shuffled (seeded). The examples left out are lost to training.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    from imblearn.under_sampling import RandomUnderSampler

    return _resample(dataset, RandomUnderSampler(random_state=seed), seed, label_column)


def _resample(dataset: Dataset, sampler, seed: int, label_column: str) -> Dataset:
    _check_column(dataset, label_column)
    labels = np.asarray(dataset[label_column])
    if np.unique(labels).size < 2:
        raise ValueError("resampling needs at least two classes")
    sampler.fit_resample(np.arange(len(labels)).reshape(-1, 1), labels)  # only which rows; columns follow below
    indices = np.asarray(sampler.sample_indices_)
    return dataset.select(np.random.default_rng(seed).permutation(indices).tolist())


def _check_column(dataset: Dataset, label_column: str) -> None:
    if label_column not in dataset.column_names:
        raise ValueError(f"no column {label_column!r} in the dataset (columns: {dataset.column_names})")
