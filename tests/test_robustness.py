"""CheckList-style behavioural tests (helpers.evaluation.robustness): perturbations, templates, the runner."""

import math
import random
import re

import numpy as np
import pytest

from helpers.evaluation.robustness import (
    FIRST_NAMES,
    NEGATIVE_ADJECTIVES,
    NEGATIVE_PHRASES,
    NEGATIVE_VERBS,
    PERTURBATIONS,
    POSITIVE_ADJECTIVES,
    POSITIVE_PHRASES,
    POSITIVE_VERBS,
    QWERTY_NEIGHBOURS,
    add_intensifier,
    add_negative_phrase,
    add_positive_phrase,
    add_typo,
    change_names,
    change_numbers,
    change_punctuation,
    has_name,
    has_number,
    keyboard_typo,
    mft_examples,
    run_checklist,
    worst_failures,
)

TEXT = "Despite a charming cast, the movie never finds its footing and the script feels terribly rushed."
WORD = re.compile(r"[A-Za-z]+")


def changed_words(old: str, new: str) -> list[tuple[str, str]]:
    """The (old, new) pairs of words that differ, for two texts with the same number of words."""
    a, b = WORD.findall(old), WORD.findall(new)
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


@pytest.mark.parametrize("perturb", [spec[1] for spec in PERTURBATIONS.values()])
def test_perturbations_are_reproducible_for_a_seed(perturb):
    text = "John saw it 3 times in 2002: a good film, great acting, and a bad ending."
    outputs = [perturb(text, random.Random(seed)) for seed in range(8)]
    assert outputs == [perturb(text, random.Random(seed)) for seed in range(8)]
    assert all(out != text for out in outputs)  # every perturbation applies to this text


def test_add_typo_swaps_two_adjacent_letters_of_one_long_word():
    outputs = set()
    for seed in range(30):
        out = add_typo(TEXT, random.Random(seed))
        ((old, new),) = changed_words(TEXT, out)
        assert len(old) >= 4 and sorted(old) == sorted(new)
        diff = [i for i in range(len(old)) if old[i] != new[i]]
        assert len(diff) == 2 and diff[1] == diff[0] + 1 and old[diff[0]] == new[diff[1]]
        outputs.add(out)
    assert len(outputs) > 10  # the word and the place are drawn
    assert add_typo("A bad one, so sad.", random.Random(0)) == "A bad one, so sad."  # no word of 4 letters
    assert add_typo("Ooo aaaa.", random.Random(0)) == "Ooo aaaa."  # no two different adjacent letters


def test_qwerty_neighbours_match_the_keyboard():
    assert set(QWERTY_NEIGHBOURS["g"]) == set("tyfhvb")
    assert set(QWERTY_NEIGHBOURS["a"]) == set("qwsz")
    assert set(QWERTY_NEIGHBOURS["m"]) == set("njk")
    assert set(QWERTY_NEIGHBOURS["p"]) == set("ol")
    assert len(QWERTY_NEIGHBOURS) == 26
    assert all(a in QWERTY_NEIGHBOURS[b] for a in QWERTY_NEIGHBOURS for b in QWERTY_NEIGHBOURS[a])  # symmetric


def test_keyboard_typo_replaces_one_letter_by_a_neighbouring_key():
    for seed in range(30):
        out = keyboard_typo(TEXT, random.Random(seed))
        ((old, new),) = changed_words(TEXT, out)
        diff = [i for i in range(len(old)) if old[i] != new[i]]
        assert len(old) >= 4 and len(diff) == 1
        i = diff[0]
        assert new[i].lower() in QWERTY_NEIGHBOURS[old[i].lower()] and new[i].isupper() == old[i].isupper()
    assert keyboard_typo("It is so bad.", random.Random(0)) == "It is so bad."


def test_change_punctuation_toggles_the_final_mark_only():
    rng = random.Random(0)
    assert change_punctuation("A fine film.", rng) == "A fine film"
    assert change_punctuation("Wow, what a film!!", rng) == "Wow, what a film"
    assert change_punctuation("Really? ", rng) == "Really"
    assert change_punctuation("A fine film", rng) == "A fine film."
    assert change_punctuation("...", rng) == "..."
    assert change_punctuation("", rng) == ""


def test_change_names_swaps_one_name_everywhere_and_nothing_else():
    text = "John and Mary star; John's charm carries it, unlike Johnson's script."
    assert has_name(text) and not has_name("Jackie Chan and Robin Williams, Johnson.")
    replaced = set()
    for seed in range(20):
        out = change_names(text, random.Random(seed))
        pairs = changed_words(text, out)  # "Johnson" is another word: it must stay
        old, new = pairs[0]
        assert old in {"John", "Mary"} and new in FIRST_NAMES and new not in {"John", "Mary"}
        assert pairs == [(old, new)] * WORD.findall(text).count(old)
        replaced.add(old)
    assert replaced == {"John", "Mary"}
    assert change_names("Robin Williams is great.", random.Random(0)) == "Robin Williams is great."


def test_change_numbers_changes_one_whole_integer():
    text = "It runs 90 minutes, rates 3.5 stars and is the 2nd sequel."
    assert has_number(text) and not has_number("Rated 3.5 by the 2nd critic.")
    values = set()
    for seed in range(20):
        out = change_numbers(text, random.Random(seed))
        match = re.fullmatch(r"It runs (\d+) minutes, rates 3\.5 stars and is the 2nd sequel\.", out)
        assert match and 81 <= int(match.group(1)) <= 99 and int(match.group(1)) != 90  # within 10%
        values.add(int(match.group(1)))
    assert len(values) > 5
    assert change_numbers("0 stars.", random.Random(0)) == "1 stars."  # never below zero
    assert change_numbers("No number here.", random.Random(0)) == "No number here."


def test_directional_phrases_are_appended_after_the_text():
    for seed in range(10):
        negative = add_negative_phrase("A fine film.", random.Random(seed))
        positive = add_positive_phrase("A fine film", random.Random(seed))
        assert negative.startswith("A fine film. ") and negative[len("A fine film. ") :] in NEGATIVE_PHRASES
        assert positive.startswith("A fine film. ") and positive[len("A fine film. ") :] in POSITIVE_PHRASES


def test_add_intensifier_strengthens_an_unnegated_sentiment_adjective():
    outputs = {add_intensifier("A good film with a dull ending.", random.Random(seed)) for seed in range(20)}
    assert outputs == {f"A {word} good film with a dull ending." for word in ("really", "very")} | {
        f"A good film with a {word} dull ending." for word in ("really", "very")
    }
    for text in ("It was not good.", "It isn't bad.", "Too dull, very funny.", "A feel-good film.", "Good."):
        assert add_intensifier(text, random.Random(0)) == text


def test_mft_examples_have_the_expected_labels():
    examples = mft_examples()
    expected = {
        "positive adjective": (1, POSITIVE_ADJECTIVES, False),
        "negative adjective": (0, NEGATIVE_ADJECTIVES, False),
        "negated positive": (0, POSITIVE_ADJECTIVES, True),
        "negated negative": (1, NEGATIVE_ADJECTIVES, True),
        "positive verb": (1, POSITIVE_VERBS, False),
        "negative verb": (0, NEGATIVE_VERBS, False),
    }
    assert {e["test"] for e in examples} == set(expected)
    for e in examples:
        label, words, negated = expected[e["test"]]
        tokens = WORD.findall(e["text"].lower())
        assert e["label"] == label and len(set(tokens) & set(words)) == 1
        assert negated == bool({"not", "t"} & set(tokens))
    assert len(examples) == len({e["text"] for e in examples}) == 4 * 96 + 2 * 60
    sample = mft_examples(seed=3, n_per_test=5)
    assert sample == mft_examples(seed=3, n_per_test=5) != mft_examples(seed=4, n_per_test=5)
    assert len(sample) == 30 and all(e in examples for e in sample)
    with pytest.raises(ValueError, match="n_per_test"):
        mft_examples(n_per_test=0)


@pytest.fixture(scope="module")
def bag_of_words():
    """TF-IDF + logistic regression fitted on the course's Rotten Tomatoes training split, and 300 test snippets."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from helpers.data.loaders import rotten_tomatoes

    splits = rotten_tomatoes()
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    model.fit(splits["train"]["text"], splits["train"]["label"])
    test = splits["test"].select(range(300))
    return model, list(test["text"]), list(test["label"])


@pytest.fixture(scope="module")
def bag_of_words_result(bag_of_words):
    model, texts, labels = bag_of_words
    calls = []

    def predict_proba(batch):
        calls.append(len(batch))
        return model.predict_proba(batch)

    return run_checklist(predict_proba, texts, labels, seed=0, tolerance=0.1, n_mft=20), calls


def test_run_checklist_table_on_a_bag_of_words_model(bag_of_words, bag_of_words_result):
    _, texts, _ = bag_of_words
    result, calls = bag_of_words_result
    table = result.table.set_index("test")
    assert list(table.index) == [e for e in dict.fromkeys(e["test"] for e in mft_examples())] + list(PERTURBATIONS)
    assert list(table["type"]) == ["MFT"] * 6 + ["INV"] * 5 + ["DIR"] * 3
    assert (table.loc[table["type"] == "MFT", "n"] == 20).all()
    assert table.loc["punctuation", "n"] == table.loc["typo", "n"] == len(texts)
    assert table.loc["change names", "n"] == sum(map(has_name, texts)) > 0
    assert table.loc["change numbers", "n"] == sum(map(has_number, texts)) > 0
    for name, row in table.iterrows():
        assert 0 <= row["failure_rate"] <= 1 and row["failure_rate"] == row["failures"] / row["n"]
        assert row["interval"].low <= row["failure_rate"] <= row["interval"].high
        counted = result.cases[result.cases["test"] == name]
        assert len(counted) == row["n"] and counted["failed"].sum() == row["failures"]
    assert len(calls) == 1 + 1 + len(PERTURBATIONS)  # originals, MFT sentences, one batch per perturbation
    # TfidfVectorizer's tokens ignore punctuation: the features, hence the predictions, are the same.
    assert table.loc["punctuation", "failures"] == 0
    assert (result.cases.loc[result.cases["test"] == "punctuation", "severity"] == 0).all()
    # A bag of words reads "not bad" as two negative words.
    assert table.loc["negated negative", "failure_rate"] > table.loc["negative adjective", "failure_rate"]


def test_run_checklist_cases_follow_the_model(bag_of_words, bag_of_words_result):
    model, texts, labels = bag_of_words
    result, _ = bag_of_words_result
    cases = result.cases
    p = dict(zip(texts, model.predict_proba(texts)[:, 1]))
    perturbed = cases[cases["type"] != "MFT"]
    assert np.allclose(perturbed["p_original"], perturbed["original"].map(p))
    assert np.allclose(perturbed["p_perturbed"], model.predict_proba(list(perturbed["perturbed"]))[:, 1])
    assert (perturbed["original"] != perturbed["perturbed"]).all()
    assert (perturbed["label"].to_numpy() == perturbed["original"].map(dict(zip(texts, labels)))).all()
    inv = cases[cases["type"] == "INV"]
    assert (inv["failed"] == ((inv["p_original"] > 0.5) != (inv["p_perturbed"] > 0.5))).all()
    direction = cases[cases["type"] == "DIR"]
    assert (direction["failed"] == (direction["severity"] > 0.1)).all()
    negative = cases[cases["test"] == "add negative phrase"]
    positive = cases[cases["test"] == "add positive phrase"]
    assert negative["p_perturbed"].mean() < negative["p_original"].mean()  # the model learned "hated", "terrible"
    assert positive["p_perturbed"].mean() > positive["p_original"].mean()
    moved_up = negative["p_perturbed"] - negative["p_original"]
    assert np.allclose(negative["severity"], moved_up.clip(lower=0))
    mft = cases[cases["type"] == "MFT"]
    assert (mft["failed"] == ((mft["p_original"] > 0.5).astype(int) != mft["label"])).all()
    assert mft["p_perturbed"].isna().all()


def test_worst_failures_are_the_most_severe_failed_cases(bag_of_words_result):
    result, _ = bag_of_words_result
    worst = worst_failures(result, "typo", k=3)
    failed = result.cases[(result.cases["test"] == "typo") & result.cases["failed"]]
    assert len(failed) >= 3 and len(worst) == 3 and worst["failed"].all() and (worst["test"] == "typo").all()
    assert list(worst["severity"]) == sorted(failed["severity"], reverse=True)[:3]
    assert worst_failures(result, "punctuation").empty
    with pytest.raises(ValueError, match="no test"):
        worst_failures(result, "sarcasm")


def test_run_checklist_is_reproducible_and_rejects_bad_input(bag_of_words):
    model, texts, labels = bag_of_words
    texts, labels = texts[:20], labels[:20]
    a = run_checklist(model.predict_proba, texts, labels, seed=1, n_mft=3)
    b = run_checklist(model.predict_proba, texts, labels, seed=1, n_mft=3)
    assert a.cases.equals(b.cases)
    assert not a.cases.equals(run_checklist(model.predict_proba, texts, labels, seed=2, n_mft=3).cases)
    with pytest.raises(ValueError, match="same length"):
        run_checklist(model.predict_proba, texts, labels[:-1])
    with pytest.raises(ValueError, match="0 \\(negative\\) or 1"):
        run_checklist(model.predict_proba, texts, [2] * len(texts))
    with pytest.raises(ValueError, match="shape"):
        run_checklist(lambda batch: model.predict_proba(batch)[:, 1], texts, labels)
    with pytest.raises(ValueError, match="softmax"):
        run_checklist(lambda batch: model.decision_function(batch)[:, None] * np.array([-1.0, 1.0]), texts, labels)
    with pytest.raises(ValueError, match="tolerance"):
        run_checklist(model.predict_proba, texts, labels, tolerance=1.5)


def test_a_single_case_gets_a_nan_interval(bag_of_words):
    model, _, _ = bag_of_words
    result = run_checklist(model.predict_proba, ["Mary's 2 films are fine"], [1], n_mft=1)
    row = result.table.set_index("test").loc["change names"]
    assert row["n"] == 1 and math.isnan(row["interval"].low) and math.isnan(row["interval"].high)
    assert row["failure_rate"] in (0.0, 1.0)
    assert result.table.set_index("test").loc["add intensifier", "n"] == 0  # no sentiment adjective
    assert math.isnan(result.table.set_index("test").loc["add intensifier", "failure_rate"])


@pytest.mark.slow
def test_run_checklist_end_to_end_with_minilm(minilm_shared):
    from scipy.special import softmax

    from helpers.data.loaders import rotten_tomatoes
    from helpers.models.inference import predict_logits

    model, tokenizer = minilm_shared
    test = rotten_tomatoes()["test"].select(range(8))

    def predict_proba(texts):
        return softmax(predict_logits(model, tokenizer, texts, progress=False), axis=1)

    result = run_checklist(predict_proba, test["text"], test["label"], n_mft=2)
    assert len(result.table) == 14 and (result.table.loc[result.table["type"] == "MFT", "n"] == 2).all()
    rates = result.table["failure_rate"].dropna()
    assert ((rates >= 0) & (rates <= 1)).all()
    p = predict_proba(list(test["text"]))[:, 1]
    typo = result.cases[result.cases["test"] == "typo"]
    assert np.allclose(typo["p_original"], p[[list(test["text"]).index(t) for t in typo["original"]]], atol=1e-5)
