from collections import Counter

import pytest

from helpers.data.batching import make_loader, padding_share, tokenize_for_classification
from helpers.data.loaders import rotten_tomatoes
from helpers.models.loading import load_tokenizer


@pytest.fixture(scope="module")
def tokenized():
    tokenizer = load_tokenizer("minilm")
    data = rotten_tomatoes(seed=0)["train"].select(range(256))
    return tokenize_for_classification(data, tokenizer, max_length=128), tokenizer


def test_tokenized_columns_and_no_padding(tokenized):
    data, _ = tokenized
    assert set(data.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    lengths = [len(ids) for ids in data["input_ids"]]
    assert len(set(lengths)) > 10 and max(lengths) <= 128


@pytest.mark.parametrize("padding", ["max_length", "dynamic", "length_grouped"])
def test_every_example_appears_once(tokenized, padding):
    data, tokenizer = tokenized
    loader = make_loader(data, tokenizer, batch_size=32, padding=padding, max_length=128, seed=1)
    seen = Counter()
    for batch in loader:
        for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
            seen[tuple(i for i, m in zip(ids, mask) if m)] += 1
    assert seen == Counter(tuple(ids) for ids in data["input_ids"])
    if padding == "max_length":
        assert next(iter(loader))["input_ids"].shape[1] == 128


def test_padding_waste_shrinks_from_max_length_to_grouped(tokenized):
    data, tokenizer = tokenized
    shares = {
        p: padding_share(make_loader(data, tokenizer, 32, padding=p, max_length=512, seed=0))
        for p in ("max_length", "dynamic", "length_grouped")
    }
    assert shares["max_length"] > 0.9  # review snippets are ~25 tokens long
    assert shares["length_grouped"] < shares["dynamic"] < shares["max_length"]


def test_length_grouped_order_is_seeded(tokenized):
    data, tokenizer = tokenized
    first = [b["labels"].tolist() for b in make_loader(data, tokenizer, 32, padding="length_grouped", seed=3)]
    again = [b["labels"].tolist() for b in make_loader(data, tokenizer, 32, padding="length_grouped", seed=3)]
    assert first == again
    with pytest.raises(ValueError, match="padding must be one of"):
        make_loader(data, tokenizer, padding="longest")
