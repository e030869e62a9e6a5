"""The French verdict sentences (helpers.evaluation.reporting): chosen by the interval, one vocabulary."""

import numpy as np
import pytest

from helpers.evaluation.reporting import describe, difference_text, verdict_for, versus
from helpers.evaluation.uncertainty import Interval, PairedComparison, paired_bootstrap


def test_the_sentence_follows_the_interval_not_the_point():
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.6).astype(float)
    clearly_better = np.where(rng.random(400) < 0.3, 1.0, base)  # ~12 points up, same items
    barely = base.copy()
    barely[np.flatnonzero(base == 0)[:2]] = 1.0  # +0.5 point on 400 items: within the noise
    up = paired_bootstrap(clearly_better, base)
    tiny = paired_bootstrap(barely, base)
    assert up.verdict == "better" and tiny.verdict == "indistinguishable" and tiny.difference.value > 0

    said = describe(up, "A", "B")
    assert "entièrement au-dessus de 0" in said and "A fait mieux que B" in said
    said = describe(tiny, "A", "B")
    assert "contient 0" in said and "indiscernable de B" in said and "ni confirmé, ni réfuté" in said
    assert "mieux que" not in said  # a positive point estimate inside the noise is not called better
    said = describe(paired_bootstrap(base, clearly_better), "A", "B")
    assert "entièrement au-dessous de 0" in said and "moins bien que B" in said


def test_lower_is_better_swaps_the_words_and_numbers_are_scaled():
    lower_loss = PairedComparison(Interval(-0.05, -0.08, -0.02), "worse", 100)  # A's loss below B's
    said = describe(lower_loss, "A", "B", measure="la perte", higher_is_better=False)
    assert "A fait mieux que B sur la perte" in said and "au-dessous de 0" in said
    assert verdict_for("better", higher_is_better=False) == "worse"
    assert verdict_for("indistinguishable", higher_is_better=False) == "indistinguishable"
    assert difference_text(Interval(0.037, 0.003, 0.073), scale=100, unit="points", digits=1) == (
        "+3.7 [+0.3, +7.3] points"
    )
    assert describe(lower_loss, "A", "B").startswith("A − B = -0.050 [-0.080, -0.020] (95 %)")
    assert describe(lower_loss, "la tête", "B").startswith("La tête − B")


def test_phrases_contract_and_bad_verdicts_are_refused():
    assert versus("indistinguishable", "le départ") == "indiscernable du départ"
    assert versus("indistinguishable", "les autres") == "indiscernable des autres"
    assert versus("better", "le départ") == "mieux que le départ"
    with pytest.raises(ValueError, match="verdict must be one of"):
        versus("confirmed", "B")


def test_tables_are_shown_in_french_without_changing_the_library_table():
    import pandas as pd

    from helpers.evaluation.reporting import in_french

    table = pd.DataFrame({"accuracy": [0.8], "low": [0.7], "vs reference": [0.1], "verdict": ["better"]})
    shown = in_french(table)
    assert list(shown.columns) == ["accuracy", "bas", "écart à la référence", "verdict"]
    assert shown["verdict"].tolist() == ["mieux"] and table["verdict"].tolist() == ["better"]


def test_identical_results_on_every_item_are_said_to_be_identical():
    same = paired_bootstrap(np.array([1.0, 0.0, 1.0, 1.0]), np.array([1.0, 0.0, 1.0, 1.0]))
    said = describe(same, "générer", "choisir", measure="ces questions")
    assert "exactement pareil" in said and "ni confirmé" not in said
