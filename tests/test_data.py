import json

import pytest

from helpers.data.loaders import (
    DataFormatError,
    film_leakage,
    load_user_data,
    qa_pairs,
    rotten_tomatoes,
    rotten_tomatoes_frame,
    rotten_tomatoes_random_split,
    split_dataset,
    subsample,
    wiki_text,
    wiki_topics,
)


@pytest.fixture(scope="module")
def rt():
    return rotten_tomatoes(seed=42)


def test_rotten_tomatoes_counts_and_labels(rt):
    frame = rotten_tomatoes_frame()
    assert frame["text"].is_unique
    assert sum(len(part) for part in rt.values()) == len(frame)
    assert len(frame) == frame["text"].nunique()
    assert set(frame["label"]) == {0, 1}
    assert rt["train"].features["label"].names == ["negative", "positive"]
    shares = {name: len(part) / len(frame) for name, part in rt.items()}
    assert 0.65 < shares["train"] < 0.75 and 0.1 < shares["validation"] < 0.2 and 0.1 < shares["test"] < 0.2


def test_no_film_in_two_splits(rt):
    films = {name: set(part["movie"]) for name, part in rt.items()}
    assert not films["train"] & films["validation"]
    assert not films["train"] & films["test"]
    assert not films["validation"] & films["test"]
    assert film_leakage(rt).test_films_in_train == 0


def test_naive_random_split_leaks_films(rt):
    naive = film_leakage(rotten_tomatoes_random_split(seed=42))
    assert naive.test_films_in_train > 0.5 * naive.test_films
    assert naive.example_share > 0.5


def test_leaked_training_sets_differ_only_by_the_leak(rt):
    from collections import Counter

    from helpers.data.loaders import leaked_training_sets

    clean, leaky, test = leaked_training_sets(rt, 3000, seed=3)
    assert len(clean) == len(leaky) == 3000
    train_texts, test_texts = set(rt["train"]["text"]), set(rt["test"]["text"])
    leaked = [text for text in leaky["text"] if text not in train_texts]
    assert leaked and set(leaked) <= test_texts and not set(leaked) & set(test["text"])  # never a test item itself
    assert set(leaky["text"]) - set(leaked) <= set(clean["text"])  # the rest: clean texts, nothing else
    assert not set(clean["text"]) & test_texts
    # every test item's film leaked, with as many texts as kept (one more kept for an odd count)
    leaked_films = Counter(rt["test"]["movie"][i] for i, t in enumerate(rt["test"]["text"]) if t in set(leaked))
    kept_films = Counter(test["movie"])
    assert set(kept_films) == set(leaked_films)
    assert all(kept_films[film] - leaked_films[film] in (0, 1) for film in kept_films)
    again = leaked_training_sets(rt, 3000, seed=3)
    assert again[1]["text"] == leaky["text"] and again[2]["text"] == test["text"]
    with pytest.raises(ValueError, match="must exceed"):
        leaked_training_sets(rt, 10, seed=3)


def test_split_is_deterministic_for_a_seed(rt):
    again = rotten_tomatoes(seed=42)
    other = rotten_tomatoes(seed=1)
    assert again["test"]["text"] == rt["test"]["text"]
    assert set(other["test"]["movie"]) != set(rt["test"]["movie"])


def test_neutral_third_class():
    three = rotten_tomatoes(include_neutral=True)
    assert three["train"].features["label"].names == ["negative", "positive", "neutral"]
    assert {label for part in three.values() for label in part["label"]} == {0, 1, 2}
    neutral = sum(label == 2 for part in three.values() for label in part["label"])
    assert neutral == len(rotten_tomatoes_frame(include_neutral=True)) - len(rotten_tomatoes_frame())


def test_wiki_topics_has_eleven_classes_without_uncategorized():
    topics = wiki_topics(seed=0)
    names = topics["train"].features["label"].names
    assert len(names) == 11 and "Uncategorized" not in names
    for part in topics.values():
        assert set(part["label"]) == set(range(11))
    total = sum(len(part) for part in topics.values())
    assert total == len(wiki_text()) - sum(t == "Uncategorized" for t in wiki_text()["topic"])


def test_wiki_text_paragraphs():
    paragraphs = wiki_text()
    assert len(paragraphs) > 10_000 - 100
    assert all(len(text.split()) > 5 for text in paragraphs.select(range(200))["text"])
    assert wiki_text(max_paragraphs=50, seed=3)["title"] == wiki_text(max_paragraphs=50, seed=3)["title"]
    assert len(wiki_text(max_paragraphs=50)) == 50


def test_qa_pairs_are_unique_with_topics():
    pairs = qa_pairs()
    keys = list(zip(pairs["question"], pairs["answer"]))
    assert len(keys) == len(set(keys)) > 1000
    assert all(q.strip() and a.strip() for q, a in keys)
    assert len(set(pairs["topic"])) == 21


def test_split_dataset_is_stratified_and_seeded():
    from datasets import Dataset

    data = Dataset.from_dict({"text": [f"t{i}" for i in range(1000)], "label": [int(i % 10 == 0) for i in range(1000)]})
    splits = split_dataset(data, seed=5)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [700, 150, 150]
    for part in splits.values():
        assert sum(part["label"]) / len(part) == pytest.approx(0.1, abs=0.01)
    assert split_dataset(data, seed=5)["test"]["text"] == splits["test"]["text"]
    assert split_dataset(data, seed=6)["test"]["text"] != splits["test"]["text"]
    assert not set(splits["train"]["text"]) & set(splits["test"]["text"])
    with pytest.raises(ValueError, match="summing to 1"):
        split_dataset(data, fractions=(0.8, 0.15, 0.15))


def test_subsample():
    from datasets import Dataset

    data = Dataset.from_dict({"x": list(range(10))})
    assert len(subsample(data, 3)) == 3 and subsample(data, 3)["x"] == subsample(data, 3)["x"]
    assert len(subsample(data, None)) == 10 and len(subsample(data, 50)) == 10


# --- a student's own files -------------------------------------------------------


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_with_string_labels_is_mapped(tmp_path):
    records = [
        {"text": "great", "label": "positive"},
        {"text": "bad", "label": "negative"},
        {"text": "ok", "label": "neutral"},
    ]
    data, label2id = load_user_data(write(tmp_path, "d.json", json.dumps(records)))
    assert label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert data["label"] == [2, 0, 1] and data["text"] == ["great", "bad", "ok"]


def test_csv_and_jsonl_with_integer_labels(tmp_path):
    data, label2id = load_user_data(write(tmp_path, "d.csv", 'text,label\nfine,1\n"bad, really",0\n'))
    assert label2id is None and data["label"] == [1, 0] and data["text"][1] == "bad, really"
    data, label2id = load_user_data(
        write(tmp_path, "d.jsonl", '{"text": "a", "label": 0}\n\n{"text": "b", "label": 1}\n')
    )
    assert label2id is None and len(data) == 2


def test_instruction_records(tmp_path):
    records = [
        {"instruction": "Translate", "input": "Bonjour", "output": "Hello"},
        {"instruction": "Say hi", "output": "Hi"},
    ]
    data, mapping = load_user_data(write(tmp_path, "i.json", json.dumps(records)), task="instruction")
    assert mapping is None and data["input"] == ["Bonjour", ""]


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "bad.json",
            '[\n  {"text": "a", "label": 1},\n  {"text": "b" "label": 0}\n]',
            r"bad\.json: invalid JSON at line 3",
        ),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', r"bad\.jsonl: invalid JSON on line 2"),
        ("bad.csv", "text,label\ngood,1\ntoo,many,fields\n", r"bad\.csv: line 3 does not have the 2 fields"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, name, content, message):
    with pytest.raises(DataFormatError, match=message):
        load_user_data(write(tmp_path, name, content))


def test_missing_field_names_field_and_row(tmp_path):
    path = write(tmp_path, "m.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataFormatError, match=r"row 2 \(line 2\) has no 'label' field"):
        load_user_data(path)
    path = write(tmp_path, "m.json", json.dumps([{"instruction": "x", "input": "y"}]))
    with pytest.raises(DataFormatError, match=r"row 1 has no 'output' field"):
        load_user_data(path, task="instruction")


def test_empty_data_and_bad_values(tmp_path):
    with pytest.raises(DataFormatError, match="contains no examples"):
        load_user_data(write(tmp_path, "e.json", "[]"))
    with pytest.raises(DataFormatError, match="contains no examples"):
        load_user_data(write(tmp_path, "e.csv", "text,label\n"))
    with pytest.raises(DataFormatError, match="'text' must be a non-empty string"):
        load_user_data(write(tmp_path, "t.json", json.dumps([{"text": "  ", "label": 1}])))
    with pytest.raises(DataFormatError, match="unsupported file type"):
        load_user_data(write(tmp_path, "d.txt", "hello"))
    with pytest.raises(FileNotFoundError):
        load_user_data(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="task must be one of"):
        load_user_data(write(tmp_path, "ok.json", "[]"), task="summarisation")


@pytest.mark.parametrize(
    "name, content",
    [
        ("bom.csv", "text,label\nfine,1\n"),
        ("bom.json", json.dumps([{"text": "fine", "label": 1}])),
        ("bom.jsonl", '{"text": "fine", "label": 1}\n'),
    ],
    ids=["csv", "json", "jsonl"],
)
def test_utf8_byte_order_mark_is_accepted(tmp_path, name, content):
    # Excel's "CSV UTF-8" and Notepad write a BOM: the first column must still be "text", not "\ufefftext".
    path = tmp_path / name
    path.write_text(content, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    data, label2id = load_user_data(path)
    assert data["text"] == ["fine"] and data["label"] == [1] and label2id is None


def test_csv_quoted_field_over_several_lines(tmp_path):
    content = 'text,label\n"first line\nsecond line, with a comma",1\nshort,0\n"a\nb\nc",1\n'
    data, _ = load_user_data(write(tmp_path, "multi.csv", content))
    assert data["text"] == ["first line\nsecond line, with a comma", "short", "a\nb\nc"]
    assert data["label"] == [1, 0, 1]
    # Rows after a multi-line record are still reported with their own row and physical line.
    bad = write(tmp_path, "bad.csv", content + "too,many,fields\n")
    with pytest.raises(DataFormatError, match=r"bad\.csv: line 8 does not have the 2 fields"):
        load_user_data(bad)
    empty = write(tmp_path, "empty.csv", 'text,label\n"a\nb",1\n"  ",0\n')
    with pytest.raises(DataFormatError, match=r"row 2 \(line 4\) field 'text' must be a non-empty string"):
        load_user_data(empty)


def test_csv_with_semicolons_as_french_excel_writes(tmp_path):
    content = 'text;label\nc\'est bien, vraiment;positif\n"mauvais; très";négatif\n'
    data, label2id = load_user_data(write(tmp_path, "fr.csv", content))
    assert data["text"] == ["c'est bien, vraiment", "mauvais; très"]
    assert label2id == {"négatif": 0, "positif": 1} and data["label"] == [1, 0]
    # A comma file with quoted words between semicolons in its text is still read with commas.
    data, _ = load_user_data(write(tmp_path, "en.csv", "text,label\nx;'y';z,1\nu;'v';w,0\n"))
    assert data["text"] == ["x;'y';z", "u;'v';w"]


def test_jsonl_string_with_line_separator_is_one_record(tmp_path):
    # JSON allows a raw U+2028 inside a string; str.splitlines() would cut the record in two.
    text = "before\u2028after \u2029 and \x85"
    line = json.dumps({"text": text, "label": 1}, ensure_ascii=False)
    assert "\u2028" in line
    path = write(tmp_path, "sep.jsonl", line + "\n" + json.dumps({"text": "b", "label": 0}) + '\n{"text": "c"}\n')
    with pytest.raises(DataFormatError, match=r"row 3 \(line 3\) has no 'label' field"):
        load_user_data(path)
    path.write_text(line + "\n" + json.dumps({"text": "b", "label": 0}) + "\n", encoding="utf-8")
    data, _ = load_user_data(path)
    assert data["text"] == [text, "b"]


@pytest.mark.parametrize("name", ["latin1.csv", "latin1.json", "latin1.jsonl"])
def test_file_not_in_utf8_names_file_position_and_fix(tmp_path, name):
    content = {
        "latin1.csv": "text,label\nfine,1\ncafé,0\n",
        "latin1.json": '[{"text": "fine", "label": 1},\n {"text": "café", "label": 0}]',
        "latin1.jsonl": '{"text": "fine", "label": 1}\n{"text": "café", "label": 0}\n',
    }[name]
    path = tmp_path / name
    path.write_bytes(content.encode("cp1252"))
    position = content.encode("cp1252").index(b"\xe9")
    line = content[:position].count("\n") + 1
    message = rf"{name}: not valid UTF-8 .*byte 0xe9 at byte {position}, line {line}\)"
    with pytest.raises(DataFormatError, match=message) as caught:
        load_user_data(path)
    assert "Re-save it as UTF-8" in str(caught.value)
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)


def test_classification_data_embedded_default_is_the_film_split(rt):
    from helpers.data.loaders import classification_data

    data = classification_data("rotten-tomatoes", seed=42)
    assert {name: len(split) for name, split in data.items()} == {name: len(split) for name, split in rt.items()}
    assert data["train"].features["label"].names == ["negative", "positive"]


def test_classification_data_from_the_hub_fails_at_once_offline(monkeypatch):
    from helpers.data.loaders import DatasetNotAvailableError, classification_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetNotAvailableError, match="'imdb' is not embedded.*HF_HUB_OFFLINE=1.*'rotten-tomatoes'"):
        classification_data("imdb")


def test_classification_data_with_an_unreachable_hub(monkeypatch):
    from helpers.data.loaders import DatasetNotAvailableError, classification_data
    from helpers.hub import hub_reachable

    if hub_reachable():
        pytest.skip("the Hub is reachable from this machine")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DatasetNotAvailableError, match="cannot be reached"):
        classification_data("imdb")
