"""Imbalance metrics (equal to scikit-learn's on every bootstrap resample), metric bootstraps, thresholds, resampling."""

import functools

import numpy as np
import pytest
from datasets import Dataset
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
)

from helpers.data.sampling import class_counts, make_imbalanced, random_oversample, random_undersample
from helpers.evaluation.imbalance import (
    accuracy,
    balanced_accuracy,
    choose_threshold,
    class_recall,
    imbalance_table,
    macro_f1,
    pr_auc,
    predict_with_threshold,
)
from helpers.evaluation.uncertainty import (
    bootstrap_metric,
    paired_bootstrap_metric,
    resample_indices,
    resample_weights,
)


def skewed_predictions(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.15).astype(int)  # class 1 is the minority
    scores = np.round(np.clip(0.35 * labels + 0.75 * rng.random(n), 0, 1), 2)  # rounded: ties, as real scores have
    return labels, scores, (scores >= 0.5).astype(int)


def test_resample_weights_count_the_resampled_indices():
    indices = resample_indices(10, n_resamples=5, seed=3)
    weights = resample_weights(10, n_resamples=5, seed=3)
    assert weights.shape == (5, 10) and (weights.sum(axis=1) == 10).all()
    for row, counts in zip(indices, weights):
        assert (np.bincount(row, minlength=10) == counts).all()
    assert (resample_indices(10, 5, seed=3) == indices).all()  # seeded
    with pytest.raises(ValueError, match="at least 2"):
        resample_indices(1)


@pytest.mark.parametrize("row", range(4))
def test_every_metric_equals_scikit_learn_on_a_resample(row):
    labels, scores, predictions = skewed_predictions()
    weights = resample_weights(len(labels), n_resamples=4, seed=7)
    w = weights[row]
    indices = resample_indices(len(labels), n_resamples=4, seed=7)[row]
    y_r, p_r, s_r = labels[indices], predictions[indices], scores[indices]  # the resample itself
    assert accuracy(labels, predictions, weights)[row] == pytest.approx(accuracy_score(y_r, p_r))
    for cls in (0, 1):
        assert class_recall(labels, predictions, weights, cls=cls, num_classes=2)[row] == pytest.approx(
            recall_score(y_r, p_r, pos_label=cls)
        )
    assert macro_f1(labels, predictions, weights, num_classes=2)[row] == pytest.approx(
        f1_score(y_r, p_r, average="macro")
    )
    assert balanced_accuracy(labels, predictions, weights, num_classes=2)[row] == pytest.approx(
        balanced_accuracy_score(y_r, p_r)
    )
    assert pr_auc(labels, scores, weights, cls=1)[row] == pytest.approx(average_precision_score(y_r, s_r))
    assert pr_auc(labels, scores, weights, cls=1)[row] == pytest.approx(
        average_precision_score(labels, scores, sample_weight=w)
    )


def test_metrics_without_weights_and_with_three_classes():
    rng = np.random.default_rng(1)
    labels, predictions = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    predictions[:20] = 2
    assert macro_f1(labels, predictions, num_classes=3)[0] == pytest.approx(
        f1_score(labels, predictions, average="macro")
    )
    assert balanced_accuracy(labels, predictions, num_classes=3)[0] == pytest.approx(
        balanced_accuracy_score(labels, predictions)
    )
    # A class never predicted and never present counts 0 in the macro-F1, as scikit-learn's labels= does.
    assert macro_f1(labels, predictions, num_classes=4)[0] == pytest.approx(
        f1_score(labels, predictions, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    )
    assert np.isnan(pr_auc(np.zeros(5, int), np.arange(5.0), cls=1)[0])  # no positive: undefined


def test_weighted_bootstrap_equals_the_plain_loop_on_the_same_resamples():
    labels, scores, predictions = skewed_predictions()
    plain = bootstrap_metric(balanced_accuracy_score, labels, predictions, n_resamples=300, seed=5)
    fast = bootstrap_metric(
        functools.partial(balanced_accuracy, num_classes=2), labels, predictions, n_resamples=300, seed=5, weighted=True
    )
    assert fast.value == pytest.approx(plain.value)
    assert (fast.low, fast.high) == pytest.approx((plain.low, plain.high))
    assert plain.low < plain.value < plain.high


def test_paired_metric_comparison_finds_a_real_difference_and_no_false_one():
    labels, scores, predictions = skewed_predictions(n=600)
    better = predictions.copy()
    missed = np.flatnonzero((labels == 1) & (predictions == 0))
    better[missed[: len(missed) // 2]] = 1  # finds half of the missed minority items, breaks nothing
    recall_1 = functools.partial(class_recall, cls=1, num_classes=2)
    comparison = paired_bootstrap_metric(recall_1, labels, better, predictions, seed=0, weighted=True)
    assert comparison.verdict == "better" and comparison.difference.low > 0
    assert paired_bootstrap_metric(recall_1, labels, predictions, better, seed=0, weighted=True).verdict == "worse"
    assert (
        paired_bootstrap_metric(recall_1, labels, predictions, predictions, weighted=True).verdict
        == "indistinguishable"
    )


def test_imbalance_table_shows_why_accuracy_misleads():
    labels, scores, predictions = skewed_predictions(n=500)
    constant = np.zeros_like(labels)
    table = imbalance_table(
        labels,
        {"model": (predictions, scores), "always 0": (constant, np.full(len(labels), 0.5))},
        num_classes=2,
        minority=1,
        reference="model",
        n_resamples=500,
    )
    row = table.loc["always 0"]
    assert row["accuracy"] == pytest.approx(np.mean(labels == 0))  # high accuracy...
    assert row["recall 1"] == 0 and row["balanced accuracy"] == pytest.approx(0.5)  # ...and nothing found
    assert row["recall 1 vs model"] == "worse" and row["recall 1 low"] <= row["recall 1"] <= row["recall 1 high"]
    assert row["PR-AUC"] == pytest.approx(np.mean(labels == 1))  # a constant score ranks at random
    with pytest.raises(ValueError, match="reference"):
        imbalance_table(labels, {"model": (predictions, scores)}, 2, 1, reference="nothing")


def test_threshold_is_chosen_on_the_given_data_and_applied():
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    minority_scores = np.array([0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.15, 0.35])  # every 1 above every 0, all below 0.5
    threshold = choose_threshold(labels, minority_scores, minority=1)
    assert threshold == pytest.approx(0.3)
    probabilities = np.c_[1 - minority_scores, minority_scores]
    assert (predict_with_threshold(probabilities, 1, threshold) == labels).all()
    assert (predict_with_threshold(probabilities, 1, 0.5) == probabilities.argmax(1)).all()
    with pytest.raises(ValueError, match="binary"):
        choose_threshold([0, 0, 0], [0.1, 0.2, 0.3], minority=1)


def toy_dataset():
    return Dataset.from_dict(
        {"text": [f"t{i}" for i in range(100)], "label": [0] * 80 + [1] * 20, "film": [f"f{i % 7}" for i in range(100)]}
    )


def test_make_imbalanced_keeps_the_asked_counts_and_the_columns():
    data = toy_dataset()
    skewed = make_imbalanced(data, {0: 45, 1: 5}, seed=1)
    assert class_counts(skewed) == {0: 45, 1: 5}
    assert len(set(skewed["text"])) == 50 and skewed.column_names == data.column_names
    assert make_imbalanced(data, {0: 45, 1: 5}, seed=1)["text"] == skewed["text"]  # seeded
    with pytest.raises(ValueError, match="asked for 30"):
        make_imbalanced(data, {1: 30})


def test_over_and_under_sampling_balance_the_classes():
    data = toy_dataset()
    over, under = random_oversample(data, seed=0), random_undersample(data, seed=0)
    assert class_counts(over) == {0: 80, 1: 80} and class_counts(under) == {0: 20, 1: 20}
    assert set(over["text"]) == set(data["text"])  # every original kept, the minority repeated
    assert len(set(under["text"])) == 40
    texts = dict(zip(data["text"], data["label"]))
    assert all(texts[t] == label for t, label in zip(over["text"], over["label"]))  # rows stay whole
    assert over["label"][:80] != [0] * 80  # shuffled: the copies are not all at the end
    with pytest.raises(ValueError, match="two classes"):
        random_oversample(data.filter(lambda r: r["label"] == 0))
