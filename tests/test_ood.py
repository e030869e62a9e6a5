"""Out-of-distribution detection: MSP and energy scores, AUROC with its interval, FPR at a TPR, the histogram plot."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from helpers.evaluation.ood import energy_score, fpr_at_tpr, max_softmax_probability, ood_auroc
from helpers.evaluation.uncertainty import interval_from_replicates, resample_indices


def test_scores_by_hand_higher_means_in_distribution():
    # logsumexp(log 1, log 3) = log 4; at T = 2: 2 * logsumexp(log 1 / 2, log 3 / 2) = 2 * log(1 + sqrt 3).
    logits = np.array([[0.0, np.log(3.0)], [1000.0, 1000.0 + np.log(3.0)]])
    assert energy_score(logits) == pytest.approx([np.log(4.0), 1000 + np.log(4.0)])
    assert energy_score(logits[:1], temperature=2) == pytest.approx([2 * np.log(1 + np.sqrt(3))])
    assert max_softmax_probability(logits) == pytest.approx([0.75, 0.75])
    confident, unsure = [[8.0, 0.0, 0.0]], [[0.1, 0.0, 0.0]]
    assert max_softmax_probability(confident) > max_softmax_probability(unsure)
    assert energy_score(confident) > energy_score(unsure)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        energy_score(logits, temperature=0)
    with pytest.raises(ValueError, match="shape"):
        max_softmax_probability([1.0, 2.0])


def test_auroc_of_separated_identical_and_overlapping_scores():
    rng = np.random.default_rng(0)
    separated = ood_auroc(rng.normal(5, 1, 200).clip(3), rng.normal(0, 1, 300).clip(None, 2), n_resamples=200)
    assert (separated.value, separated.low, separated.high) == (1.0, 1.0, 1.0)
    same = ood_auroc(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000), n_resamples=200, seed=1)
    assert same.value == pytest.approx(0.5, abs=0.03) and same.low < 0.5 < same.high
    tied = ood_auroc(np.ones(10), np.ones(7), n_resamples=20)  # every pair tied: counts 1/2
    assert (tied.value, tied.low, tied.high) == (0.5, 0.5, 0.5)
    swapped = ood_auroc([0.0, 0.1], [1.0, 2.0], n_resamples=20)  # OOD scored higher: the score is backwards
    assert swapped.value == 0.0


def test_auroc_interval_resamples_each_group_and_is_reproducible():
    rng = np.random.default_rng(2)
    scores_in = np.round(rng.normal(1, 1, 120), 1)  # rounded: ties between and within groups
    scores_out = np.round(rng.normal(0, 1, 80), 1)
    interval = ood_auroc(scores_in, scores_out, n_resamples=60, seed=5)
    by_hand = []
    for i, o in zip(resample_indices(120, 60, 5), resample_indices(80, 60, 6)):
        by_hand.append(roc_auc_score(np.r_[np.ones(120), np.zeros(80)], np.r_[scores_in[i], scores_out[o]]))
    expected = interval_from_replicates(
        roc_auc_score(np.r_[np.ones(120), np.zeros(80)], np.r_[scores_in, scores_out]), by_hand
    )
    assert (interval.value, interval.low, interval.high) == pytest.approx((expected.value, expected.low, expected.high))
    assert interval.low < interval.value < interval.high
    assert ood_auroc(scores_in, scores_out, n_resamples=60, seed=5) == interval
    assert ood_auroc(scores_in, scores_out, n_resamples=60, seed=6) != interval
    with pytest.raises(ValueError, match="at least one in each group"):
        ood_auroc(scores_in, [])


def test_fpr_at_tpr_by_hand_and_against_roc_curve():
    scores_in = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    scores_out = [0.05, 0.2, 0.35, 0.5]
    # Keeping 80% of the in-distribution inputs: the 8 highest, threshold 0.3; OOD at or above 0.3: 0.35 and 0.5.
    assert fpr_at_tpr(scores_in, scores_out, tpr=0.8) == 0.5
    # Keeping all: threshold 0.1, every OOD input but 0.05 passes.
    assert fpr_at_tpr(scores_in, scores_out, tpr=1.0) == 0.75
    # Keeping 75% means 8 of 10 (7.5 rounded up): threshold 0.3 again.
    assert fpr_at_tpr(scores_in, scores_out, tpr=0.75) == 0.5
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(2, 1, 500), rng.normal(0, 1, 400)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(500), np.zeros(400)], np.r_[s_in, s_out], drop_intermediate=False)
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])
    with pytest.raises(ValueError, match="tpr must lie"):
        fpr_at_tpr(scores_in, scores_out, tpr=0)


def test_score_histograms_share_their_bins():
    from helpers.plots import plot_score_distributions

    rng = np.random.default_rng(4)
    ax = plot_score_distributions({"in": rng.normal(2, 1, 300), "OOD": rng.normal(0, 1, 100)}, "énergie", bins=20)
    assert len(ax.patches) == 40
    first, second = ax.patches[:20], ax.patches[20:]
    assert [p.get_x() for p in first] == pytest.approx([p.get_x() for p in second])  # common bins
    width = first[0].get_width()
    assert sum(p.get_height() for p in first) * width == pytest.approx(1.0)  # densities
    assert sum(p.get_height() for p in second) * width == pytest.approx(1.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["in", "OOD"] and ax.get_xlabel() == "énergie"
    with pytest.raises(ValueError, match="no scores"):
        plot_score_distributions({"in": [1.0], "OOD": []}, "x")


def test_knn_score_by_hand_is_the_distance_to_the_kth_neighbour_in_direction():
    from helpers.evaluation.ood import knn_score

    train = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.1]])
    # Lengths do not count: [5, 0] points like [1, 0]; its nearest directions are [1, 0] (0) and [2, 0.1] (small).
    first, second = knn_score(train, [[5.0, 0.0]], k=1), knn_score(train, [[5.0, 0.0]], k=2)
    assert first == pytest.approx([0.0], abs=1e-12)
    unit = np.array([2.0, 0.1]) / np.hypot(2.0, 0.1)
    assert second == pytest.approx([-np.hypot(1 - unit[0], unit[1])])
    assert knn_score(train, [[-1.0, -1.0]], k=1) < knn_score(train, [[1.0, 1.0]], k=1)  # pointing away: far
    with pytest.raises(ValueError, match="k must lie"):
        knn_score(train, [[1.0, 0.0]], k=4)
    with pytest.raises(ValueError, match="same width"):
        knn_score(train, [[1.0, 0.0, 0.0]])


def test_mahalanobis_score_counts_distance_in_units_of_the_spread():
    from helpers.evaluation.ood import mahalanobis_score

    rng = np.random.default_rng(0)
    # Two classes spread widely along x, hardly along y: a step along y is far, the same step along x is not.
    spread = np.array([10.0, 0.1])
    train = np.concatenate([rng.normal([0, 0], spread, (500, 2)), rng.normal([0, 5], spread, (500, 2))])
    labels = np.r_[np.zeros(500, int), np.ones(500, int)]
    along_x, along_y = mahalanobis_score(train, labels, [[3.0, 0.0], [0.0, 1.0]])
    assert along_x > along_y
    near_second_class = mahalanobis_score(train, labels, [[0.0, 5.0]])[0]
    assert near_second_class == pytest.approx(mahalanobis_score(train, labels, [[0.0, 0.0]])[0], abs=0.2)
    with pytest.raises(ValueError, match="one label per training vector"):
        mahalanobis_score(train, labels[:10], [[0.0, 0.0]])


def test_feature_scores_find_inputs_that_logit_scores_cannot():
    """Vectors off the training data's plane but on the head's decision side: MSP ranks them with the in-distribution
    inputs, the distance scores put them apart (AUROC near 1), and the paired comparison says so."""
    from helpers.evaluation.ood import knn_score, mahalanobis_score, paired_ood_auroc

    rng = np.random.default_rng(1)
    train = np.c_[rng.normal(0, 1, (400, 2)), np.zeros((400, 1))] + rng.normal(0, 0.01, (400, 3))
    labels = (train[:, 0] > 0).astype(int)
    inside = np.c_[rng.normal(0, 1, (200, 2)), np.zeros((200, 1))]
    outside = np.c_[rng.normal(0, 1, (200, 2)), np.full((200, 1), 3.0)]  # a dimension the reviews never use
    head = lambda v: np.c_[-v[:, 0], v[:, 0]]  # noqa: E731  (logits read only the first dimension)
    msp_in, msp_out = max_softmax_probability(head(inside)), max_softmax_probability(head(outside))
    assert ood_auroc(msp_in, msp_out, n_resamples=200).low < 0.5 < ood_auroc(msp_in, msp_out, n_resamples=200).high
    for score in (lambda v: knn_score(train, v, k=5), lambda v: mahalanobis_score(train, labels, v)):
        s_in, s_out = score(inside), score(outside)
        assert ood_auroc(s_in, s_out, n_resamples=200).low > 0.95
        paired = paired_ood_auroc(s_in, s_out, msp_in, msp_out, n_resamples=200)
        assert paired.verdict == "better" and paired.difference.low > 0.3
    same = paired_ood_auroc(msp_in, msp_out, msp_in, msp_out, n_resamples=200)
    assert same.difference.value == 0 and same.verdict == "indistinguishable"
    with pytest.raises(ValueError, match="same inputs"):
        paired_ood_auroc(msp_in, msp_out, msp_in[:10], msp_out)
