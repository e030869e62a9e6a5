"""Classification metrics and the baselines every fine-tuning result is compared with.

Metrics come from scikit-learn (one implementation, well tested); the
baselines are scikit-learn pipelines. Taught in ``course/00_introduction.ipynb``
and ``course/03_bert_classification.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.pipeline import Pipeline, make_pipeline


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], average: str | None = None) -> dict[str, float]:
    """Accuracy, precision, recall and F1.

    ``average`` defaults to ``"binary"`` for two classes and ``"macro"``
    otherwise (every class counts the same, whatever its size).
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in shape: {labels.shape} vs {predictions.shape}")
    if average is None:
        average = "binary" if set(np.union1d(labels, predictions).tolist()) <= {0, 1} else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average=average, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def fit_majority_baseline(texts: Sequence[str], labels: Sequence[int]) -> DummyClassifier:
    """Always predicts the most frequent training label: the score to beat at the very least.

    Same interface as :func:`fit_tfidf_logreg`: ``.predict(texts)``.
    """
    return DummyClassifier(strategy="most_frequent").fit(list(texts), list(labels))


def fit_tfidf_logreg(texts: Sequence[str], labels: Sequence[int], seed: int = 42) -> Pipeline:
    """TF-IDF on word 1-2 grams + logistic regression: the classic strong, cheap baseline."""
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
    )
    return pipeline.fit(list(texts), list(labels))
