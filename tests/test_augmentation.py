"""EDA text augmentation (helpers.data.augmentation): random deletion, random swap, augmented data sets."""

import random

import pytest

from helpers.data.augmentation import augment_dataset, augment_text, random_deletion, random_swap
from helpers.data.loaders import rotten_tomatoes

TEXT = "the film is a charming and often affecting journey , but it never quite finds its footing"


def is_subsequence(small: list[str], big: list[str]) -> bool:
    words = iter(big)
    return all(word in words for word in small)


def test_random_deletion_keeps_the_order_and_at_least_one_word():
    words = TEXT.split()
    for seed in range(20):
        out = random_deletion(TEXT, 0.3, random.Random(seed))
        assert out and is_subsequence(out.split(), words)
    assert random_deletion(TEXT, 0.0, random.Random(0)) == TEXT
    for seed in range(5):
        survivor = random_deletion(TEXT, 1.0, random.Random(seed)).split()
        assert len(survivor) == 1 and survivor[0] in words
    assert random_deletion("word", 1.0, random.Random(0)) == "word"
    assert random_deletion("", 0.5, random.Random(0)) == ""  # nothing to keep: returned as is
    assert random_deletion("  spaced   out  ", 0.0, random.Random(0)) == "spaced out"


def test_random_deletion_deletes_about_a_share_p_and_is_reproducible():
    text = " ".join(f"w{i}" for i in range(1000))
    out = random_deletion(text, 0.3, random.Random(0))
    assert 600 <= len(out.split()) <= 800  # binomial(1000, 0.7): mean 700, sd 14.5
    assert out == random_deletion(text, 0.3, random.Random(0))
    assert out != random_deletion(text, 0.3, random.Random(1))
    with pytest.raises(ValueError, match="p must lie"):
        random_deletion(TEXT, 1.5, random.Random(0))


def test_random_swap_permutes_the_words():
    words = TEXT.split()
    once = random_swap(TEXT, 1, random.Random(0)).split()
    assert sorted(once) == sorted(words)
    assert sum(a != b for a, b in zip(once, words)) == 2  # one swap of two different words
    several = random_swap(TEXT, 5, random.Random(0))
    assert sorted(several.split()) == sorted(words) and several == random_swap(TEXT, 5, random.Random(0))
    assert random_swap(TEXT, 0, random.Random(0)) == " ".join(words)
    assert random_swap("alone", 3, random.Random(0)) == "alone"
    with pytest.raises(ValueError, match="n must be"):
        random_swap(TEXT, -1, random.Random(0))


def test_augment_text_draws_one_of_the_operations():
    words = TEXT.split()
    swaps = augment_text(TEXT, random.Random(0), alpha=0.2, operations=["swap"])
    assert sorted(swaps.split()) == sorted(words) and swaps != TEXT
    deletion = augment_text(TEXT, random.Random(0), alpha=0.5, operations=["deletion"])
    assert is_subsequence(deletion.split(), words) and len(deletion.split()) < len(words)
    with pytest.raises(ValueError, match="operations"):
        augment_text(TEXT, random.Random(0), operations=["synonym"])
    with pytest.raises(ValueError, match="operations"):
        augment_text(TEXT, random.Random(0), operations=[])


def test_augment_dataset_on_real_reviews():
    original = rotten_tomatoes(seed=0)["train"].select(range(20))
    augmented = augment_dataset(original, n_copies=3, seed=0, alpha=0.2)
    assert len(augmented) == 20 * 4
    assert augmented.column_names == original.column_names + ["augmented"]
    assert augmented.features["label"] == original.features["label"]  # ClassLabel kept
    assert augmented.select(range(20)).remove_columns("augmented").to_list() == original.to_list()
    assert augmented["augmented"] == [False] * 20 + [True] * 60
    for row, copy in enumerate(augmented.select(range(20, 80))):
        source = original[row // 3]
        assert copy["label"] == source["label"] and copy["movie"] == source["movie"]
        assert copy["text"].strip()
        words = copy["text"].split()
        assert is_subsequence(words, source["text"].split()) or sorted(words) == sorted(source["text"].split())
    sources = [text for text in original["text"] for _ in range(3)]
    assert sum(copy != source for copy, source in zip(augmented["text"][20:], sources)) > 30  # most copies changed
    # Reproducible for a seed, different for another; n_copies=0 only marks the originals.
    assert augment_dataset(original, 3, seed=0, alpha=0.2).to_list() == augmented.to_list()
    assert augment_dataset(original, 3, seed=1, alpha=0.2)["text"] != augmented["text"]
    assert augment_dataset(original, 0, seed=0, mark_column=None).to_list() == original.to_list()


def test_augment_dataset_never_empties_a_text_and_checks_its_arguments():
    from datasets import Dataset

    tiny = Dataset.from_dict({"text": ["one", "two words", "three small words"], "label": [0, 1, 0]})
    out = augment_dataset(tiny, n_copies=5, seed=3, alpha=1.0, operations=["deletion"])
    assert all(text.split() for text in out["text"]) and out["label"] == [0, 1, 0] + [0] * 5 + [1] * 5 + [0] * 5
    with pytest.raises(ValueError, match="n_copies"):
        augment_dataset(tiny, -1, seed=0)
    with pytest.raises(ValueError, match="no column 'review'"):
        augment_dataset(tiny, 1, seed=0, text_column="review")
    with pytest.raises(ValueError, match="already has a column 'label'"):
        augment_dataset(tiny, 1, seed=0, mark_column="label")
    with pytest.raises(ValueError, match="alpha"):
        augment_dataset(tiny, 1, seed=0, alpha=2.0)
