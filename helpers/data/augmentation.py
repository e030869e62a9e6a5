"""Simple text augmentation against over-fitting: random deletion and random swap (EDA).

Wei & Zou 2019 ("EDA: Easy Data Augmentation Techniques for Boosting
Performance on Text Classification Tasks") make new training examples from
old ones with four cheap edits: synonym replacement, random insertion (of a
synonym), random swap and random deletion. Their gains are largest on small
training sets (a few hundred examples) and shrink with more data or a
pretrained model; an edit can also flip the meaning ("not good" -> "good"),
so the label is kept on trust.

Only the two edits that need no lexicon are here: :func:`random_deletion`
and :func:`random_swap`. Synonym replacement and random insertion need a
synonym source, and none ships offline through pip: NLTK's WordNet corpus is
downloaded at run time (``nltk.download("wordnet")``), the ``wn`` package
downloads its wordnets at run time too (``wn.download("oewn:2024")``), and
``wordnet-lookup`` only says whether a word exists. The course runs offline,
so it does without them.

Words are what ``str.split()`` gives (punctuation stays on its word) and are
joined again with single spaces. Every function takes a ``random.Random`` so
that a seed gives the same augmentation everywhere. Augment the *training*
split only, after splitting: an augmented copy of a test example in the
training set is a leak.

Taught in the pitfalls lessons (issue 11: over-fitting and class imbalance).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset, Features, Value

__all__ = ["OPERATIONS", "random_deletion", "random_swap", "augment_text", "augment_dataset"]

OPERATIONS = ("deletion", "swap")


def random_deletion(text: str, p: float, rng: random.Random) -> str:
    """Delete each word with probability ``p``; at least one word is always kept.

    If every word is drawn for deletion, one word chosen at random stays (as
    in EDA). A text without any word is returned unchanged. The remaining
    words keep their order. Taught in the pitfalls lessons (issue 11).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    words = text.split()
    if not words:
        return text
    kept = [word for word in words if rng.random() >= p]
    if not kept:
        kept = [words[rng.randrange(len(words))]]
    return " ".join(kept)


def random_swap(text: str, n: int, rng: random.Random) -> str:
    """Swap two words chosen at random, ``n`` times (the same words, in another order).

    A text of fewer than two words is returned unchanged. Each swap draws two
    different positions. Taught in the pitfalls lessons (issue 11).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    words = text.split()
    if len(words) < 2:
        return text
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def augment_text(text: str, rng: random.Random, alpha: float = 0.1, operations: Sequence[str] = OPERATIONS) -> str:
    """One EDA edit, drawn among ``operations``, with EDA's strength ``alpha``.

    ``"deletion"`` deletes each word with probability ``alpha``; ``"swap"``
    makes ``max(1, int(alpha * number_of_words))`` swaps. The result may equal
    the text (nothing drawn for deletion, or two equal words swapped).
    Taught in the pitfalls lessons (issue 11).
    """
    operations = _check_operations(operations)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    operation = rng.choice(operations)
    if operation == "deletion":
        return random_deletion(text, alpha, rng)
    return random_swap(text, max(1, int(alpha * len(text.split()))), rng)


def _check_operations(operations: Sequence[str]) -> tuple[str, ...]:
    operations = tuple(operations)
    unknown = [op for op in operations if op not in OPERATIONS]
    if not operations or unknown:
        raise ValueError(f"operations must be a non-empty selection of {OPERATIONS}, got {operations!r}")
    return operations


def augment_dataset(
    dataset: Dataset,
    n_copies: int,
    seed: int,
    text_column: str = "text",
    alpha: float = 0.1,
    operations: Sequence[str] = OPERATIONS,
    mark_column: str | None = "augmented",
) -> Dataset:
    """The originals followed by ``n_copies`` augmented copies of each, with the same labels.

    Row ``i`` of the result is row ``i`` of ``dataset``; then come the copies,
    example by example (``n_copies`` of the first one, then of the second, ...).
    A copy keeps every column of its original (label, film, ...) except
    ``text_column``, which gets one :func:`augment_text` edit. The same
    ``seed`` gives the same result. With ``mark_column`` (default
    ``"augmented"``) a boolean column says which rows are copies.
    Taught in the pitfalls lessons (issue 11).
    """
    if n_copies < 0:
        raise ValueError(f"n_copies must be >= 0, got {n_copies}")
    if text_column not in dataset.column_names:
        raise ValueError(f"no column {text_column!r} in the dataset (columns: {dataset.column_names})")
    if mark_column is not None and mark_column in dataset.column_names:
        raise ValueError(f"the dataset already has a column {mark_column!r}; pass another mark_column or None")
    operations = _check_operations(operations)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rng = random.Random(seed)
    columns = dataset.to_dict()
    sources = [i for i in range(len(dataset)) for _ in range(n_copies)]
    result = {name: list(values) + [values[i] for i in sources] for name, values in columns.items()}
    result[text_column] = list(columns[text_column]) + [
        augment_text(columns[text_column][i], rng, alpha, operations) for i in sources
    ]
    features = dict(dataset.features)
    if mark_column is not None:
        result[mark_column] = [False] * len(dataset) + [True] * len(sources)
        features[mark_column] = Value("bool")
    return Dataset.from_dict(result, features=Features(features))
