import math

import numpy as np
import pytest

from helpers.evaluation.uncertainty import bootstrap_interval, paired_bootstrap


def test_accuracy_interval_matches_the_normal_approximation_and_narrows_with_n():
    rng = np.random.default_rng(1)
    correct = rng.random(2000) < 0.7
    interval = bootstrap_interval(correct, seed=3)
    p = correct.mean()
    half_width = 1.96 * math.sqrt(p * (1 - p) / len(correct))  # binomial normal approximation
    assert interval.low < p < interval.high and interval.value == pytest.approx(p)
    assert (interval.high - interval.low) / 2 == pytest.approx(half_width, rel=0.15)
    small = bootstrap_interval(correct[:100], seed=3)
    assert small.high - small.low > 3 * (interval.high - interval.low)  # 20x fewer items: ~4.5x wider
    assert bootstrap_interval(correct, seed=3) == interval  # seeded: reproducible


def test_one_resampling_engine_gives_an_accuracy_one_interval_whatever_the_function():
    """The same predictions' accuracy: the same interval from the per-item path, the metric path (called once per
    resample) and the weighted path (all resamples at once), and a median through the generic statistic path."""
    from sklearn.metrics import accuracy_score

    from helpers.evaluation.uncertainty import bootstrap_metric

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 150)
    predictions = np.where(rng.random(150) < 0.75, labels, 1 - labels)
    per_item = bootstrap_interval(labels == predictions, seed=5)
    by_metric = bootstrap_metric(accuracy_score, labels, predictions, seed=5)

    def weighted_accuracy(y, p, weights):
        return (weights * (y == p)).sum(axis=1) / weights.sum(axis=1)

    by_weights = bootstrap_metric(weighted_accuracy, labels, predictions, seed=5, weighted=True)
    assert per_item.as_dict() == pytest.approx(by_metric.as_dict(), abs=1e-12)
    assert per_item.as_dict() == pytest.approx(by_weights.as_dict(), abs=1e-12)
    assert bootstrap_interval(labels == predictions, seed=6) != per_item  # the seed does change the resamples

    scores = rng.normal(size=150)
    median = bootstrap_interval(scores, np.median, seed=5)
    replicates = np.median(scores[np.random.default_rng(5).integers(0, 150, size=(2000, 150))], axis=1)
    assert (median.low, median.high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])))


def test_grouped_paired_bootstrap_reduces_to_the_plain_one_and_widens_with_duplicates():
    from helpers.evaluation.uncertainty import paired_bootstrap_by_group

    rng = np.random.default_rng(7)
    a, b = (rng.random(300) < 0.7).astype(float), (rng.random(300) < 0.6).astype(float)
    plain = paired_bootstrap(a, b, seed=2)
    alone = paired_bootstrap_by_group(a, b, np.arange(300), seed=2)
    assert alone.difference.as_dict() == pytest.approx(plain.difference.as_dict(), abs=1e-12)
    assert alone.verdict == plain.verdict and alone.n == 300
    # each item tested three times (three splits holding the same items): the same mean, but 300 independent
    # items, not 900; resampling the copies one by one would give an interval about sqrt(3) times too narrow
    tripled = paired_bootstrap_by_group(np.tile(a, 3), np.tile(b, 3), np.tile(np.arange(300), 3), seed=2)
    naive = paired_bootstrap(np.tile(a, 3), np.tile(b, 3), seed=2)
    width = lambda c: c.difference.high - c.difference.low  # noqa: E731
    assert tripled.difference.value == pytest.approx(plain.difference.value) and tripled.n == 300
    assert width(tripled) == pytest.approx(width(plain), rel=0.1) and width(tripled) > 1.5 * width(naive)
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_by_group(a, b, np.arange(299))


def test_constant_values_give_a_point_interval_and_bad_input_is_refused():
    assert bootstrap_interval([1, 1, 1, 1]).as_dict()["low"] == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_interval([1.0])
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1, 0, 1], [1, 0])


def test_paired_comparison_verdicts_follow_the_data():
    rng = np.random.default_rng(0)
    b = (rng.random(500) < 0.6).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:60]] = 1  # A fixes 60 of B's errors and breaks none: +0.12
    better = paired_bootstrap(a, b, seed=1)
    assert better.verdict == "better" and better.difference.value == pytest.approx(60 / 500)
    assert better.difference.low > 0 and better.n == 500
    assert paired_bootstrap(b, a, seed=1).verdict == "worse"
    assert paired_bootstrap(a, a).verdict == "indistinguishable"
    noisy = b.copy()
    flip = np.concatenate(
        [rng.choice(np.flatnonzero(b == 1), 10, replace=False), rng.choice(np.flatnonzero(b == 0), 10, replace=False)]
    )
    noisy[flip] = 1 - noisy[flip]  # 10 fixed, 10 broken: different items, no difference in accuracy
    same = paired_bootstrap(noisy, b, seed=1)
    assert same.verdict == "indistinguishable" and same.difference.low < 0 < same.difference.high


def test_pairing_detects_what_unpaired_intervals_cannot():
    # Two models that differ on few items: their separate intervals overlap, the paired test still sees it.
    rng = np.random.default_rng(2)
    b = (rng.random(1000) < 0.75).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:25]] = 1
    ia, ib = bootstrap_interval(a, seed=0), bootstrap_interval(b, seed=0)
    assert ia.low < ib.high  # overlapping intervals
    assert paired_bootstrap(a, b, seed=0).verdict == "better"


def test_seeds_interval_holds_the_seed_noise_and_reduces_to_the_items_with_one_seed():
    from helpers.evaluation.uncertainty import interval_from_replicates, resample_weights, seeds_interval

    rng = np.random.default_rng(0)
    items = 800
    agreeing = np.tile(rng.random(items) < 0.75, (3, 1)).astype(float)  # three runs, the same answers
    one = seeds_interval(agreeing[:1], seed=2)
    # One seed: the item bootstrap, the same resamples as resample_weights.
    by_hand = interval_from_replicates(agreeing[0].mean(), resample_weights(items, 2000, 2) @ agreeing[0] / items)
    assert (one.low, one.high) == pytest.approx((by_hand.low, by_hand.high))
    assert seeds_interval(agreeing, seed=2) == one  # identical runs add no noise
    # Runs that disagree (accuracies about 0.65, 0.75, 0.85): the interval widens to hold the seed spread.
    disagreeing = np.vstack([(rng.random(items) < p).astype(float) for p in (0.65, 0.75, 0.85)])
    wide = seeds_interval(disagreeing, seed=2)
    assert wide.value == pytest.approx(disagreeing.mean())
    assert wide.high - wide.low > 2.5 * (one.high - one.low)
    assert wide.low < disagreeing[0].mean() + 0.03 and wide.high > disagreeing[2].mean() - 0.03
    assert seeds_interval(disagreeing, seed=2) == wide  # seeded: reproducible
    with pytest.raises(ValueError, match="2 dimensions"):
        seeds_interval(agreeing[0])


def test_paired_seeds_verdicts_follow_the_data():
    from helpers.evaluation.uncertainty import paired_seeds

    rng = np.random.default_rng(1)
    b = (rng.random((3, 500)) < 0.6).astype(float)
    a = b.copy()
    for row in a:  # each run of A fixes 60 of B's errors and breaks none: +0.12
        row[np.flatnonzero(row == 0)[:60]] = 1
    better = paired_seeds(a, b, seed=1)
    assert better.verdict == "better" and better.difference.value == pytest.approx(0.12) and better.n == 500
    assert paired_seeds(b, a, seed=1).verdict == "worse"
    assert paired_seeds(a, a).verdict == "indistinguishable"
    # One seed of A much better, the two others much worse: the seeds disagree, no verdict either way.
    mixed = b.copy()
    mixed[0] = 1.0
    mixed[1:] = 0.0
    shifted = b.copy()
    shifted[0] = 0.0
    shifted[1:] = 1.0
    assert paired_seeds(mixed, np.full_like(b, 0.5), seed=1).verdict == "indistinguishable"
    assert paired_seeds(shifted, np.full_like(b, 0.5), seed=1).verdict == "indistinguishable"
    with pytest.raises(ValueError, match="same shape"):
        paired_seeds(a, b[:2])


def test_mcnemar_by_hand():
    from math import comb

    from helpers.evaluation.uncertainty import mcnemar

    # 30 items: 15 both right, 3 both wrong, 10 only A right, 2 only B right.
    a = np.array([1] * 15 + [0] * 3 + [1] * 10 + [0] * 2)
    b = np.array([1] * 15 + [0] * 3 + [0] * 10 + [1] * 2)
    # Exact two-sided binomial test of 10 successes in 12 at 1/2: P(X <= 2) + P(X >= 10) = 2 * (1 + 12 + 66) / 2**12.
    p_value = 2 * (comb(12, 0) + comb(12, 1) + comb(12, 2)) / 2**12
    test = mcnemar(a, b)
    assert (test.a_only, test.b_only, test.n, test.verdict) == (10, 2, 30, "better")
    assert test.p_value == pytest.approx(p_value)  # 0.0386
    assert mcnemar(b, a).verdict == "worse" and mcnemar(b, a).p_value == pytest.approx(p_value)
    assert mcnemar(a, b, confidence=0.99).verdict == "indistinguishable"  # 0.0386 > 0.01
    # Booleans work too; no discordant item: nothing to test.
    same = mcnemar(a.astype(bool), a.astype(bool))
    assert (same.a_only, same.b_only, same.p_value, same.verdict) == (0, 0, 1.0, "indistinguishable")
    # 6 against 4: far from significant.
    balanced = mcnemar([1] * 6 + [0] * 4, [0] * 6 + [1] * 4)
    assert balanced.verdict == "indistinguishable" and balanced.p_value == pytest.approx(386 / 512)
    assert balanced.as_dict()["a_only"] == 6


def test_mcnemar_refuses_bad_input():
    from helpers.evaluation.uncertainty import mcnemar

    with pytest.raises(ValueError, match="same length"):
        mcnemar([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([1, 2], [1, 0])
    with pytest.raises(ValueError, match="confidence"):
        mcnemar([1, 0], [1, 0], confidence=1.0)


def test_independent_difference_matches_the_normal_approximation_and_its_verdicts():
    from helpers.evaluation.uncertainty import independent_difference

    rng = np.random.default_rng(4)
    a, b = (rng.random(800) < 0.8).astype(float), (rng.random(500) < 0.7).astype(float)
    comparison = independent_difference(a, b, seed=2)
    pa, pb = a.mean(), b.mean()
    half_width = 1.96 * math.sqrt(pa * (1 - pa) / len(a) + pb * (1 - pb) / len(b))  # two independent proportions
    d = comparison.difference
    assert d.value == pytest.approx(pa - pb) and d.low < pa - pb < d.high
    assert (d.high - d.low) / 2 == pytest.approx(half_width, rel=0.15)
    assert (comparison.verdict, comparison.n_a, comparison.n_b) == ("better", 800, 500)
    assert independent_difference(b, a, seed=2).verdict == "worse"
    assert independent_difference(a[:30], a[30:60], seed=2).verdict == "indistinguishable"
    assert independent_difference(a, b, seed=2) == comparison  # seeded: reproducible
    assert comparison.as_dict()["n_b"] == 500
    # Groups of different sizes are fine; fewer than 2 items in a group are not.
    with pytest.raises(ValueError, match="at least 2"):
        independent_difference([1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="one score per item"):
        independent_difference([[1.0, 0.0]], [0.0, 1.0])


def test_holm_adjusted_p_values_match_a_hand_computation():
    from helpers.evaluation.uncertainty import holm_adjust

    # Sorted: 0.005, 0.01, 0.03, 0.04 -> times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running maximum
    # 0.02, 0.03, 0.06, 0.06, put back in the order given.
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # capped at 1 only when needed
    assert holm_adjust([0.7, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([0.02]) == pytest.approx([0.02])  # one comparison: nothing to correct
    with pytest.raises(ValueError, match="p-values must lie in"):
        holm_adjust([0.1, 1.5])
    with pytest.raises(ValueError, match="non-empty"):
        holm_adjust([])


def test_bootstrap_p_value_agrees_with_the_interval_and_holm_only_removes_findings():
    from helpers.evaluation.uncertainty import bootstrap_p_value, holm_verdicts, paired_bootstrap

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 300).astype(float)
    flips = lambda share: np.where(rng.random(300) < share, 1 - base, base)  # noqa: E731
    comparisons = {
        "clear": paired_bootstrap(np.maximum(base, flips(0.3)), base, seed=0),  # only gains: far above 0
        "worse": paired_bootstrap(np.minimum(base, flips(0.3)), base, seed=0),
        "null": paired_bootstrap(flips(0.2), base, seed=0),
        "same": paired_bootstrap(base, base, seed=0),
    }
    for comparison in comparisons.values():
        d = comparison.difference
        if d.low > 0 or d.high < 0:
            assert comparison.p_value < 0.05
        elif d.low < -0.01 and d.high > 0.01:  # 0 well inside the interval
            assert comparison.p_value > 0.05
    assert comparisons["clear"].p_value == pytest.approx(2 / 2001)  # no resample at or below 0
    assert comparisons["same"].p_value == 1.0 and comparisons["null"].verdict == "indistinguishable"
    assert bootstrap_p_value([0.1, 0.2, -0.1, 0.3]) == pytest.approx(2 * 2 / 5)
    holm = holm_verdicts([c.verdict for c in comparisons.values()], [c.p_value for c in comparisons.values()])
    assert holm == ["better", "worse", "indistinguishable", "indistinguishable"]
    # Twenty comparisons at p = 0.02 each: each alone is significant, none survives Holm; one at 0.001 does.
    assert holm_verdicts(["better"] * 20, [0.02] * 20) == ["indistinguishable"] * 20
    assert holm_verdicts(["worse"] + ["better"] * 19, [0.001] + [0.02] * 19)[:2] == ["worse", "indistinguishable"]
    with pytest.raises(ValueError, match="verdicts but"):
        holm_verdicts(["better"], [0.01, 0.02])
    assert comparisons["clear"].as_dict()["p_value"] == comparisons["clear"].p_value


def test_holm_table_corrects_every_measure_of_every_row_as_one_family():
    import pandas as pd

    from helpers.evaluation.uncertainty import compare_to_reference, holm_table

    rng = np.random.default_rng(3)
    base = rng.normal(size=200)
    runs = {"ref": base, "far": base + 1.0, "near": base + rng.normal(0.2, 1.0, 200), "same": base.copy()}
    table = pd.DataFrame(
        {
            name: compare_to_reference(v, runs["ref"] if name != "ref" else v, seed=0, prefix="m_")
            for name, v in runs.items()
        }
    ).T
    table["m_p"] = table["m_p"].astype(float)
    corrected = holm_table(table, ["m"])
    assert corrected.loc["ref", "m_verdict"] == "reference" and corrected.loc["far", "m_verdict"] == "better"
    expected = holm_verdicts_for(table)
    assert corrected["m_verdict"].drop("ref").tolist() == expected
    assert table.drop(columns="m_verdict").equals(corrected.drop(columns="m_verdict"))


def holm_verdicts_for(table):
    from helpers.evaluation.uncertainty import holm_verdicts

    rows = table.drop("ref")
    return holm_verdicts(rows["m_verdict"], rows["m_p"])


def test_compare_to_reference_over_seeds_resamples_seeds_and_items():
    from helpers.evaluation.uncertainty import compare_to_reference, paired_seeds, seeds_interval

    rng = np.random.default_rng(5)
    start = (rng.random(300) < 0.7).astype(float)
    # three seeds of a model that gains on some items, each seed on different ones; the start repeated on every row
    tuned = np.stack([np.maximum(start, rng.random(300) < 0.15) for _ in range(3)])
    reference = np.tile(start, (3, 1))
    row = compare_to_reference(tuned, reference, seed=0, prefix="q_")
    expected = paired_seeds(tuned, reference, seed=0)
    assert row["q_change"] == pytest.approx(expected.difference.value)
    assert (row["q_change_low"], row["q_change_high"]) == (expected.difference.low, expected.difference.high)
    assert row["q_verdict"] == expected.verdict == "better" and row["q_p"] == expected.p_value
    assert (row["q_low"], row["q_high"]) == (seeds_interval(tuned, seed=0).low, seeds_interval(tuned, seed=0).high)
    # a lower-is-better measure turns the verdict; the reference itself stays the reference
    assert compare_to_reference(tuned, reference, higher_is_better=False, seed=0)["verdict"] == "worse"
    assert compare_to_reference(reference, reference, seed=0)["verdict"] == "reference"
