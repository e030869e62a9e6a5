"""Datasets of the course, built from the embedded data, and loading a student's own file.

Every loader returns a ``datasets.Dataset`` or ``DatasetDict`` and is
deterministic for a given seed. Taught in ``course/00_introduction.ipynb``
(first look) and ``course/02_data_preparation.ipynb`` (splits, leakage,
own data).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets
from sklearn.model_selection import train_test_split

from helpers.assets import asset_path, verify_asset
from helpers.data.sampling import make_imbalanced

__all__ = [
    "SENTIMENT_LABELS",
    "NEUTRAL_LABEL",
    "SPLITS",
    "DataFormatError",
    "check_fractions",
    "split_dataset",
    "subsample",
    "stratified_subsample",
    "rotten_tomatoes_frame",
    "rotten_tomatoes",
    "rotten_tomatoes_random_split",
    "SUBJECTIVITY_LABELS",
    "review_tasks",
    "Leakage",
    "film_leakage",
    "leaked_training_sets",
    "EMBEDDED_CLASSIFICATION",
    "DatasetNotAvailableError",
    "classification_data",
    "wiki_records",
    "wiki_topics",
    "wiki_text",
    "qa_pairs",
    "REQUIRED_FIELDS",
    "load_user_data",
]

SENTIMENT_LABELS = ["negative", "positive"]  # rotten = negative, fresh = positive
NEUTRAL_LABEL = "neutral"  # the plot summaries, when a third class is asked for
SPLITS = ("train", "validation", "test")


class DataFormatError(ValueError):
    """A data file or record that does not have the expected shape."""


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three positive numbers summing to 1 (train, validation, test), got {fractions}"
        )
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def split_dataset(
    dataset: Dataset,
    label_column: str | None = "label",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
) -> DatasetDict:
    """Seeded train/validation/test split, stratified on ``label_column`` (70/15/15 by default).

    Stratification keeps each class's share the same in the three splits.
    Pass ``label_column=None`` for a plain random split.
    """
    train_f, val_f, test_f = check_fractions(fractions)
    if len(dataset) < 3:
        raise ValueError(f"need at least 3 examples to make three splits, got {len(dataset)}")
    indices = list(range(len(dataset)))
    labels = dataset[label_column] if label_column else None
    train_idx, rest_idx = train_test_split(indices, train_size=train_f, random_state=seed, stratify=labels)
    rest_labels = [labels[i] for i in rest_idx] if labels is not None else None
    val_idx, test_idx = train_test_split(
        rest_idx, train_size=val_f / (val_f + test_f), random_state=seed, stratify=rest_labels
    )
    return DatasetDict(
        train=dataset.select(sorted(train_idx)),
        validation=dataset.select(sorted(val_idx)),
        test=dataset.select(sorted(test_idx)),
    )


def subsample(dataset: Dataset, n: int | None, seed: int = 42) -> Dataset:
    """A seeded random subset of ``n`` examples (the whole set if ``n`` is None or too large)."""
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def stratified_subsample(dataset: Dataset, n: int | None, seed: int = 42, label_column: str = "label") -> Dataset:
    """A seeded random subset of ``n`` examples with the class shares of the whole set (every class kept).

    A plain random subset of a few dozen examples can miss a rare class
    altogether (11 Wikipedia topics, the rarest under 3%). The whole set if
    ``n`` is None or too large; ``n`` smaller than the number of classes
    raises ``ValueError``. Used by ``course/08_multitask.ipynb``.
    """
    if n is None or n >= len(dataset):
        return dataset
    labels = dataset[label_column]
    classes = len(set(labels))
    if n < classes:
        raise ValueError(f"a stratified subset of {n} examples cannot hold all {classes} classes")
    chosen, _ = train_test_split(list(range(len(dataset))), train_size=n, stratify=labels, random_state=seed)
    return dataset.select(chosen)


# --- Rotten Tomatoes -------------------------------------------------------------


def rotten_tomatoes_frame(include_neutral: bool = False) -> pd.DataFrame:
    """The raw Rotten Tomatoes snippets, de-duplicated: columns ``text``, ``label``, ``movie``.

    ``label`` is 0 (rotten, negative) or 1 (fresh, positive), and 2 (plot
    summary, neutral) with ``include_neutral``. A text that appears several
    times (a few are quoted for two films) is kept once, with its first film.
    """
    frame = pd.read_csv(verify_asset("rotten-tomatoes"))
    categories = {"rotten": 0, "fresh": 1} | ({"plot": 2} if include_neutral else {})
    frame = frame[frame["category"].isin(categories)]
    frame = frame.assign(text=frame["text"].astype(str).str.strip(), label=frame["category"].map(categories))
    frame = frame[frame["text"] != ""].drop_duplicates("text", keep="first")
    return frame.rename(columns={"movie_name": "movie"})[["text", "label", "movie"]].reset_index(drop=True)


def _split_by_group(groups: pd.Series, fractions: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
    """Assign whole groups (films) to splits so that the example counts approach ``fractions``."""
    sizes = groups.value_counts().sort_index()
    order = list(sizes.index)
    random.Random(seed).shuffle(order)
    total, cumulative = len(groups), 0
    bounds = (fractions[0] * total, (fractions[0] + fractions[1]) * total)
    assignment: dict[str, str] = {}
    for group in order:
        # A film goes to the split in which the middle of its examples falls.
        middle = cumulative + sizes[group] / 2
        assignment[group] = "train" if middle < bounds[0] else "validation" if middle < bounds[1] else "test"
        cumulative += sizes[group]
    split_of_row = groups.map(assignment)
    return {name: list(split_of_row.index[split_of_row == name]) for name in SPLITS}


def rotten_tomatoes(
    seed: int = 42, fractions: Sequence[float] = (0.7, 0.15, 0.15), include_neutral: bool = False
) -> DatasetDict:
    """Rotten Tomatoes sentiment, split so that no film appears in two splits.

    Columns ``text``, ``label`` (``negative``/``positive``, plus ``neutral``
    plot summaries with ``include_neutral``) and ``movie``. Snippets of one
    film share names and vocabulary: a random split would let the test set
    reuse films seen in training (see :func:`film_leakage`).
    """
    fractions = check_fractions(fractions)
    frame = rotten_tomatoes_frame(include_neutral)
    names = SENTIMENT_LABELS + ([NEUTRAL_LABEL] if include_neutral else [])
    features = Features({"text": Value("string"), "label": ClassLabel(names=names), "movie": Value("string")})
    rows = _split_by_group(frame["movie"], fractions, seed)
    return DatasetDict(
        {
            name: Dataset.from_pandas(frame.loc[idx].reset_index(drop=True), features=features, preserve_index=False)
            for name, idx in rows.items()
        }
    )


def rotten_tomatoes_random_split(seed: int = 42, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> DatasetDict:
    """The naive alternative: a stratified random split that ignores films (to measure leakage)."""
    frame = rotten_tomatoes_frame()
    features = Features(
        {"text": Value("string"), "label": ClassLabel(names=SENTIMENT_LABELS), "movie": Value("string")}
    )
    return split_dataset(Dataset.from_pandas(frame, features=features, preserve_index=False), "label", fractions, seed)


SUBJECTIVITY_LABELS = ["objective", "subjective"]  # a plot summary, a critic's opinion


def review_tasks(seed: int = 42, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> dict[str, DatasetDict]:
    """Two tasks on the same films, from one split by film: ``"sentiment"`` and ``"subjectivity"``.

    ``"sentiment"`` is :func:`rotten_tomatoes` (negative/positive reviews);
    ``"subjectivity"`` tells a plot summary (objective) from a review
    (subjective), the task of Pang & Lee (2004), whose data came from the same
    two sources; plot summaries are rare here, so each split keeps all of them
    and as many reviews drawn at random (``seed``): a balanced task. Both come
    from the split of
    ``rotten_tomatoes(include_neutral=True)``, so a film's texts are in the
    same split for both tasks: a model trained on the two never sees a test
    text of one task as a training text of the other. Columns ``text``,
    ``label``, ``movie``. Taught in ``course/08_multitask.ipynb``.
    """
    splits = rotten_tomatoes(seed=seed, fractions=fractions, include_neutral=True)
    neutral = splits["train"].features["label"].names.index(NEUTRAL_LABEL)
    sentiment_features = Features(
        {"text": Value("string"), "label": ClassLabel(names=SENTIMENT_LABELS), "movie": Value("string")}
    )
    subjectivity_features = Features(
        {"text": Value("string"), "label": ClassLabel(names=SUBJECTIVITY_LABELS), "movie": Value("string")}
    )
    sentiment, subjectivity = {}, {}
    for name, split in splits.items():
        reviews = split.filter(lambda row: row["label"] != neutral)
        sentiment[name] = reviews.cast(sentiment_features)
        labelled = split.map(lambda row: {"label": int(row["label"] != neutral)}).cast(subjectivity_features)
        plots = sum(label == 0 for label in labelled["label"])
        subjectivity[name] = make_imbalanced(labelled, {0: plots, 1: plots}, seed=seed)
    return {"sentiment": DatasetDict(sentiment), "subjectivity": DatasetDict(subjectivity)}


@dataclass(frozen=True)
class Leakage:
    """How much of a test split comes from films that also appear in training."""

    test_films: int
    test_films_in_train: int
    test_examples: int
    test_examples_from_train_films: int

    @property
    def film_share(self) -> float:
        return self.test_films_in_train / self.test_films if self.test_films else 0.0

    @property
    def example_share(self) -> float:
        return self.test_examples_from_train_films / self.test_examples if self.test_examples else 0.0


def film_leakage(splits: DatasetDict, group_column: str = "movie") -> Leakage:
    """Measure how many test films (and test examples) also appear in ``train``."""
    train_films = set(splits["train"][group_column])
    test_groups = splits["test"][group_column]
    test_films = set(test_groups)
    return Leakage(
        test_films=len(test_films),
        test_films_in_train=len(test_films & train_films),
        test_examples=len(test_groups),
        test_examples_from_train_films=sum(g in train_films for g in test_groups),
    )


def leaked_training_sets(
    splits: DatasetDict, train_size: int, seed: int = 42, group_column: str = "movie"
) -> tuple[Dataset, Dataset, Dataset]:
    """Two training sets that differ only by a leak, and the test items to score them on: ``(clean, leaky, test)``.

    What a split that ignores films is worth, measured on the *same* test
    items (paired) rather than on two test sets drawn differently: each test
    film's texts (of a split by film, such as :func:`rotten_tomatoes`) are
    shuffled and cut in two halves (``seed``); the first halves leak, the
    second halves are the test, kept only for films that have leaked texts.
    ``clean`` is ``train_size`` texts of ``splits["train"]``; ``leaky`` is as
    many texts, the leaked ones and the rest from the same training texts, so
    both train on the same budget. Taught in
    ``course/02_data_preparation.ipynb``.
    """
    test = splits["test"]
    groups = np.asarray(test[group_column])
    rng = np.random.default_rng(seed)
    leaked, kept = [], []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        half = len(members) // 2
        if half:  # a film with one text cannot leak and be tested at once
            leaked += members[:half].tolist()
            kept += members[half:].tolist()
    if not 0 < len(leaked) < train_size:
        raise ValueError(f"train_size ({train_size}) must exceed the {len(leaked)} leaked texts, which must exist")
    leak = test.select(sorted(leaked))
    clean = subsample(splits["train"], train_size, seed=seed)
    leaky = concatenate_datasets([subsample(splits["train"], train_size - len(leak), seed=seed), leak])
    return clean, leaky, test.select(sorted(kept))


# --- Any classification set: the embedded default or one from the Hub ------------------------------------

EMBEDDED_CLASSIFICATION = "rotten-tomatoes"


class DatasetNotAvailableError(OSError):
    """A dataset name that is neither embedded nor loadable from the Hub right now."""


def classification_data(
    name: str = EMBEDDED_CLASSIFICATION, seed: int = 42, validation_share: float = 0.1
) -> DatasetDict:
    """``train``/``validation``/``test`` with ``text`` and ``label`` columns, from the embedded set or the Hub.

    ``"rotten-tomatoes"`` is the embedded set split by film (:func:`rotten_tomatoes`).
    Any other name is loaded with ``datasets.load_dataset`` (e.g. ``"imdb"``,
    which needs the internet); when it has no validation split, a stratified
    ``validation_share`` of ``train`` becomes one. That split is random: a
    Hub set without a group column (IMDb has no film identifier) can have
    texts of one film on both sides, a leak this function cannot remove
    (IMDb's own test is made of other films than its train). Taught in
    ``course/03_bert_classification.ipynb`` (the switch to BERT-base and IMDb).
    """
    if name == EMBEDDED_CLASSIFICATION:
        return rotten_tomatoes(seed=seed)
    from datasets import load_dataset

    from helpers.environment import is_offline
    from helpers.hub import hub_reachable

    if is_offline() or not hub_reachable():
        why = (
            "the Hugging Face Hub is switched off here (HF_HUB_OFFLINE=1)"
            if is_offline()
            else "the Hub cannot be reached"
        )
        raise DatasetNotAvailableError(
            f"{name!r} is not embedded and {why}. The embedded classification set is {EMBEDDED_CLASSIFICATION!r}."
        )
    loaded = load_dataset(name)
    if "train" not in loaded or "test" not in loaded:
        raise DataFormatError(f"{name!r} has splits {sorted(loaded)}; a 'train' and a 'test' split are needed")
    for column in ("text", "label"):
        if column not in loaded["train"].column_names:
            raise DataFormatError(f"{name!r} has no {column!r} column (columns: {loaded['train'].column_names})")
    if "validation" in loaded:
        return DatasetDict(train=loaded["train"], validation=loaded["validation"], test=loaded["test"])
    parts = loaded["train"].train_test_split(test_size=validation_share, seed=seed, stratify_by_column="label")
    return DatasetDict(train=parts["train"], validation=parts["test"], test=loaded["test"])


# --- Wikipedia ---------------------------------------------------------------------


def wiki_records() -> list[dict]:
    """Every Wikipedia lead paragraph with ``title``, ``text``, ``topic`` and ``description`` (may be empty)."""
    with open(verify_asset("wiki-summaries"), encoding="utf-8") as handle:
        data = json.load(handle)
    return [
        {
            "title": str(v.get("title") or key),
            "text": str(v.get("extract") or "").strip(),
            "topic": str(v.get("topic") or ""),
            "description": str(v.get("description") or "").strip(),
        }
        for key, v in data.items()
        if str(v.get("extract") or "").strip()
    ]


def wiki_topics(seed: int = 42, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> DatasetDict:
    """Topic classification of Wikipedia lead paragraphs: 11 classes ("Uncategorized" dropped).

    Columns ``title``, ``text``, ``label``; stratified seeded split.
    """
    records = [r for r in wiki_records() if r["topic"] and r["topic"] != "Uncategorized"]
    names = sorted({r["topic"] for r in records})
    features = Features({"title": Value("string"), "text": Value("string"), "label": ClassLabel(names=names)})
    dataset = Dataset.from_list(
        [{"title": r["title"], "text": r["text"], "label": names.index(r["topic"])} for r in records], features=features
    )
    return split_dataset(dataset, "label", fractions, seed)


def wiki_text(max_paragraphs: int | None = None, seed: int = 42) -> Dataset:
    """General English paragraphs (Wikipedia leads, all topics) for perplexity and forgetting.

    Columns ``title``, ``text``, ``topic``, ``description``. ``max_paragraphs`` takes a seeded random subset.
    """
    return subsample(Dataset.from_list(wiki_records()), max_paragraphs, seed)


# --- Question/answer pairs ------------------------------------------------------------


def qa_pairs() -> Dataset:
    """Unique (question, answer) pairs from the chatterbot corpus, with their topic.

    Each conversation ``[a, b, c]`` gives the adjacent pairs ``(a, b)`` and ``(b, c)``.
    Columns ``question``, ``answer``, ``topic`` (the corpus file, e.g. ``"science"``).
    """
    import yaml

    seen: set[tuple[str, str]] = set()
    rows = []
    for path in sorted(asset_path("chatterbot-corpus").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations", []):
            turns = [str(turn).strip() for turn in conversation]
            for question, answer in zip(turns, turns[1:]):
                if question and answer and (question, answer) not in seen:
                    seen.add((question, answer))
                    rows.append({"question": question, "answer": answer, "topic": path.stem})
    return Dataset.from_list(rows)


# --- A student's own data ----------------------------------------------------------------

REQUIRED_FIELDS = {"classification": ("text", "label"), "instruction": ("instruction", "output")}


def _read_text(path: Path) -> str:
    """The file's text, decoded as UTF-8, with the newlines of ``read_text`` (``\\r\\n`` and ``\\r`` become ``\\n``).

    A leading byte-order mark (as Excel and Notepad write) is dropped.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        # A file saved as latin-1/cp1252 ("ANSI"): say where and how to fix it, not a bare codec error.
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}: not valid UTF-8 text (byte 0x{raw[error.start]:02x} at byte {error.start}, line {line}); "
            "it was probably saved as latin-1/cp1252. Re-save it as UTF-8 "
            "(Excel: Save As > 'CSV UTF-8'; a text editor: choose the encoding UTF-8 when saving)"
        ) from error
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _csv_delimiter(text: str) -> str:
    """``,``, ``;`` (French Excel) or tab, guessed from the first lines; ``,`` when unsure."""
    sample = text[:16384]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only: a cut line would blur the counts
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","
    # The header must contain it: quoted words between semicolons in a comma file can fool the sniffer.
    return delimiter if delimiter in text.split("\n", 1)[0] else ","


def _read_records(path: Path) -> list[tuple[int, dict]]:
    """Records of a JSON, JSONL or CSV file, each with the line it starts on."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl", ".csv"):
        raise DataFormatError(f"{path}: unsupported file type {suffix!r}; use .json, .jsonl or .csv")
    text = _read_text(path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataFormatError(
                f'{path}: expected a JSON list of records (or {{"data": [...]}}), got {type(data).__name__}'
            )
        # Line numbers of list items are not kept by the json module; report row numbers.
        return [(0, record) for record in data]
    if suffix == ".jsonl":
        records = []
        # Split on "\n" only: str.splitlines() also splits on U+2028/U+2029, which JSON allows raw inside strings.
        for line_number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((line_number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{path}: invalid JSON on line {line_number}: {error.msg}") from None
        return records
    # CSV. A file-like reader (not a list of lines) lets a quoted field span several lines;
    # each row then starts on the line after the one where the previous row ended.
    reader = csv.reader(io.StringIO(text), delimiter=_csv_delimiter(text))
    records = []
    try:
        header = next(reader, [])
        row_start = reader.line_num + 1
        for row in reader:
            if row:  # blank lines are skipped, as csv.DictReader does
                if len(row) != len(header):
                    raise DataFormatError(
                        f"{path}: line {row_start} does not have the {len(header)} fields of the header ({', '.join(header)})"
                    )
                records.append((row_start, dict(zip(header, row))))
            row_start = reader.line_num + 1
    except csv.Error as error:
        raise DataFormatError(f"{path}: malformed CSV at line {reader.line_num}: {error}") from None
    return records


def _as_int_label(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def load_user_data(path: str | Path, task: str = "classification") -> tuple[Dataset, dict[str, int] | None]:
    """Load and validate a student's own data from JSON, JSONL or CSV.

    ``task="classification"`` needs ``text`` and ``label`` in every record;
    ``task="instruction"`` needs ``instruction`` and ``output`` (``input`` is
    optional). Returns ``(dataset, label2id)``: string labels are mapped to
    integers with ``label2id`` (sorted names); integer labels are kept and
    ``label2id`` is None. Errors name the file and the line or row.
    """
    if task not in REQUIRED_FIELDS:
        raise ValueError(f"task must be one of {sorted(REQUIRED_FIELDS)}, got {task!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    records = _read_records(path)
    if not records:
        raise DataFormatError(f"{path}: contains no examples")
    required = REQUIRED_FIELDS[task]
    for row_number, (line_number, record) in enumerate(records, start=1):
        where = f"row {row_number}" + (f" (line {line_number})" if line_number else "")
        if not isinstance(record, dict):
            raise DataFormatError(
                f"{path}: {where} is a {type(record).__name__}, expected an object with fields {required}"
            )
        for name in required:
            if name not in record:
                raise DataFormatError(f"{path}: {where} has no {name!r} field (required: {', '.join(required)})")
            if name != "label" and (not isinstance(record[name], str) or not record[name].strip()):
                raise DataFormatError(
                    f"{path}: {where} field {name!r} must be a non-empty string, got {record[name]!r}"
                )

    if task == "instruction":
        rows = [
            {"instruction": r["instruction"], "input": str(r.get("input") or ""), "output": r["output"]}
            for _, r in records
        ]
        return Dataset.from_list(rows), None

    raw_labels = [record["label"] for _, record in records]
    int_labels = [_as_int_label(label) for label in raw_labels]
    if all(label is not None for label in int_labels):
        if min(int_labels) < 0:
            raise DataFormatError(f"{path}: integer labels must be >= 0, found {min(int_labels)}")
        label2id = None
        labels = int_labels
    else:
        for row_number, label in enumerate(raw_labels, start=1):
            if (
                not isinstance(label, (str, int))
                or isinstance(label, bool)
                or (isinstance(label, str) and not label.strip())
            ):
                raise DataFormatError(
                    f"{path}: row {row_number} has label {label!r}; labels must be integers or non-empty strings"
                )
        names = sorted({str(label).strip() for label in raw_labels})
        label2id = {name: i for i, name in enumerate(names)}
        labels = [label2id[str(label).strip()] for label in raw_labels]
    rows = [{"text": record["text"], "label": label} for (_, record), label in zip(records, labels)]
    return Dataset.from_list(rows), label2id
