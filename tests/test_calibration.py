"""Calibration: reliability table, ECE and its interval, NLL, temperature scaling, the reliability diagram."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from helpers.evaluation.calibration import (
    ece_interval,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_table,
    softmax,
)
from helpers.evaluation.uncertainty import interval_from_replicates, resample_indices

# Six items, three classes.          confidence  prediction  label  right
HAND_PROBABILITIES = np.array(
    [
        [0.40, 0.30, 0.30],  # item 1:   0.40        0           0      yes
        [0.30, 0.45, 0.25],  # item 2:   0.45        1           2      no
        [0.90, 0.05, 0.05],  # item 3:   0.90        0           0      yes
        [0.10, 0.80, 0.10],  # item 4:   0.80        1           1      yes
        [0.20, 0.10, 0.70],  # item 5:   0.70        2           0      no
        [0.05, 0.35, 0.60],  # item 6:   0.60        2           0      no
    ]
)
HAND_LABELS = np.array([0, 2, 0, 1, 0, 0])


def test_ece_and_reliability_table_match_a_hand_computation():
    # 2 bins, (0, 0.5] and (0.5, 1]:
    #   bin 1: items 1, 2: mean confidence (0.40 + 0.45) / 2 = 0.425, accuracy 1/2 -> 2/6 * 0.075 = 0.025
    #   bin 2: items 3-6: mean confidence (0.9 + 0.8 + 0.7 + 0.6) / 4 = 0.75, accuracy 2/4 -> 4/6 * 0.25 = 1/6
    #   ECE = 0.025 + 1/6
    assert expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS, n_bins=2) == pytest.approx(0.025 + 1 / 6)
    # 3 bins, (0, 1/3], (1/3, 2/3], (2/3, 1]:
    #   bin 1: empty
    #   bin 2: items 1, 2, 6: mean confidence 1.45 / 3, accuracy 1/3 -> 3/6 * (1.45 / 3 - 1 / 3) = 0.075
    #   bin 3: items 3, 4, 5: mean confidence 0.8, accuracy 2/3      -> 3/6 * (0.8 - 2 / 3) = 1/15
    assert expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS, n_bins=3) == pytest.approx(0.075 + 1 / 15)
    table = reliability_table(HAND_PROBABILITIES, HAND_LABELS, n_bins=3)
    assert list(table.columns) == ["bin_low", "bin_high", "count", "mean_confidence", "accuracy"]
    assert table["bin_low"].tolist() == pytest.approx([0, 1 / 3, 2 / 3])
    assert table["bin_high"].tolist() == pytest.approx([1 / 3, 2 / 3, 1])
    assert table["count"].tolist() == [0, 3, 3]
    assert np.isnan(table.loc[0, "mean_confidence"]) and np.isnan(table.loc[0, "accuracy"])
    assert table.loc[1:, "mean_confidence"].tolist() == pytest.approx([1.45 / 3, 0.8])
    assert table.loc[1:, "accuracy"].tolist() == pytest.approx([1 / 3, 2 / 3])
    # A confidence on a bin edge goes to the bin below it: (low, high].
    edge = reliability_table([[0.5, 0.5], [1.0, 0.0]], [0, 0], n_bins=2)
    assert edge["count"].tolist() == [1, 1]


def _calibrated_sample(n: int, seed: int, classes: int = 4, scale: float = 1.5):
    """Logits whose softmax is the true probability of each class: the labels are drawn from it."""
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((n, classes))
    p = softmax(logits)
    labels = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, np.minimum(labels, classes - 1)


def test_a_calibrated_sample_has_ece_near_zero_and_an_overconfident_one_a_large_ece():
    logits, labels = _calibrated_sample(20_000, seed=0)
    calibrated = expected_calibration_error(softmax(logits), labels)
    overconfident = expected_calibration_error(softmax(3 * logits), labels)
    assert calibrated < 0.015
    assert overconfident > 0.15
    table = reliability_table(softmax(3 * logits), labels)
    confident = table[table["bin_low"] >= 0.5]  # where most items are (sharpened logits push them up)
    assert confident["count"].sum() > 0.8 * 20_000
    assert (confident["accuracy"] < confident["mean_confidence"] - 0.05).all()  # every one of these bins overconfident
    assert table["count"].sum() == 20_000


def test_ece_interval_resamples_the_items_like_bootstrap_metric():
    logits, labels = _calibrated_sample(300, seed=1)
    probabilities = softmax(3 * logits)
    interval = ece_interval(probabilities, labels, n_bins=5, n_resamples=50, seed=4)
    by_hand = [
        expected_calibration_error(probabilities[idx], labels[idx], n_bins=5) for idx in resample_indices(300, 50, 4)
    ]
    expected = interval_from_replicates(expected_calibration_error(probabilities, labels, n_bins=5), by_hand)
    assert (interval.value, interval.low, interval.high) == pytest.approx((expected.value, expected.low, expected.high))
    assert interval.low < interval.value < interval.high
    assert ece_interval(probabilities, labels, n_bins=5, n_resamples=50, seed=4) == interval


def test_temperature_scaling_undoes_overconfidence_and_keeps_the_predictions():
    logits, labels = _calibrated_sample(5000, seed=2)
    overconfident = 3 * logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3, rel=0.1)
    before = negative_log_likelihood(overconfident, labels)
    after = negative_log_likelihood(overconfident, labels, temperature)
    assert after < before - 0.1
    assert after == pytest.approx(negative_log_likelihood(logits, labels), abs=0.01)
    assert np.array_equal(softmax(overconfident, temperature).argmax(axis=1), overconfident.argmax(axis=1))
    # An underconfident model gets T < 1.
    assert fit_temperature(logits / 2, labels) == pytest.approx(0.5, rel=0.1)


def test_softmax_and_nll_by_hand():
    assert softmax([0.0, np.log(3.0)]) == pytest.approx([0.25, 0.75])
    assert softmax([1000.0, 1000.0 + np.log(3.0)]) == pytest.approx([0.25, 0.75])  # no overflow
    root = np.sqrt(3)  # exp(log(3) / 2)
    assert softmax([0.0, np.log(3.0)], temperature=2) == pytest.approx([1 / (1 + root), root / (1 + root)])
    # Two items, true-class probabilities 0.75 and 0.25: NLL = (-log 0.75 - log 0.25) / 2.
    logits = [[0.0, np.log(3.0)], [0.0, np.log(3.0)]]
    assert negative_log_likelihood(logits, [1, 0]) == pytest.approx((-np.log(0.75) - np.log(0.25)) / 2)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be a positive"):
            softmax([1.0, 2.0], temperature=bad)
        with pytest.raises(ValueError, match="temperature must be a positive"):
            negative_log_likelihood(logits, [1, 0], temperature=bad)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="one label per item"):
        expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS[:5])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        reliability_table(HAND_PROBABILITIES, [0, 1, 2, 3, 0, 0])
    with pytest.raises(ValueError, match="integer class indices"):
        expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS.astype(float))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        expected_calibration_error(np.log(HAND_PROBABILITIES), HAND_LABELS)
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(HAND_PROBABILITIES * 0.5, HAND_LABELS)
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error(HAND_PROBABILITIES[:, 0], HAND_LABELS)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_table(HAND_PROBABILITIES, HAND_LABELS, n_bins=0)
    with pytest.raises(ValueError, match="one label per item"):
        negative_log_likelihood(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="labels must lie"):
        fit_temperature(np.zeros((2, 2)), [0, 2])


def test_reliability_diagram_draws_the_diagonal_and_one_line_per_table():
    from helpers.plots import plot_reliability

    logits, labels = _calibrated_sample(2000, seed=3)
    tables = {
        "brut": reliability_table(softmax(3 * logits), labels),
        "T ajustée": reliability_table(softmax(logits), labels),
    }
    ax = plot_reliability(tables)
    lines = ax.get_lines()
    assert len(lines) == 3
    assert list(lines[0].get_xdata()) == [0, 1] and list(lines[0].get_ydata()) == [0, 1]
    filled = tables["brut"][tables["brut"]["count"] > 0]
    assert np.allclose(lines[1].get_xdata(), filled["mean_confidence"])
    assert np.allclose(lines[1].get_ydata(), filled["accuracy"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["calibration parfaite", "brut", "T ajustée"]
    with pytest.raises(ValueError, match="no runs"):
        plot_reliability({})
