import math

import numpy as np
import pytest

from helpers.evaluation.closed_tasks import clear_gain, closed_task_table, item_scores, majority_answers

LABELS = {"sentiment": ["negative", "positive"], "topic": ["Arts", "History", "Geography"]}


def test_item_scores_strict_and_lenient_per_answer():
    scores = item_scores(
        ["sentiment", "sentiment", "sentiment", "topic", "describe"],
        ["positive", "The review is positive.", "positive or negative", "history", "a big city in France"],
        ["positive", "positive", "negative", "History", "city in France"],
        LABELS,
    )
    assert list(scores["exact_match"]) == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert list(scores["label_in_answer"][:4]) == [1.0, 1.0, 0.0, 1.0]  # naming two labels is not an answer
    assert math.isnan(scores["label_in_answer"][4])  # a free task has no label list
    assert scores["rouge_l"][4] == pytest.approx(0.75)  # LCS 3 words: precision 3/5, recall 3/3
    with pytest.raises(ValueError, match="got 2 tasks"):
        item_scores(["sentiment", "topic"], ["positive"], ["positive"], LABELS)


def test_majority_answers_is_the_most_frequent_training_answer_of_each_task():
    train_tasks = ["sentiment"] * 3 + ["topic"] * 3
    train_outputs = ["positive", "negative", "positive", "Arts", "History", "History"]
    assert majority_answers(train_tasks, train_outputs, ["topic", "sentiment", "topic"]) == [
        "History",
        "positive",
        "History",
    ]
    with pytest.raises(ValueError, match="no training answers"):
        majority_answers(train_tasks, train_outputs, ["qa"])


def _scores(tasks, correct):
    references = ["positive" if t == "sentiment" else "Arts" for t in tasks]
    answers = [r if ok else "nothing" for r, ok in zip(references, correct)]
    return item_scores(tasks, answers, references, LABELS)


def test_closed_task_table_intervals_and_paired_verdicts():
    rng = np.random.default_rng(0)
    tasks = ["sentiment"] * 60 + ["topic"] * 60
    tuned = _scores(tasks, rng.random(120) < 0.9)
    weak = _scores(tasks, rng.random(120) < 0.4)
    table = closed_task_table(
        {"tuned": tuned, "weak": weak, "same": tuned}, reference="tuned", tasks=["sentiment", "topic"]
    )
    for task in ("sentiment", "topic"):
        row = table.loc[(task, "tuned")]
        assert row["n"] == 60 and row["low"] <= row["accuracy"] <= row["high"]
        assert row["accuracy"] == tuned.loc[tuned["task"] == task, "exact_match"].mean()
        assert table.loc[(task, "weak"), "verdict"] == "worse"  # weak minus tuned is below zero
        assert table.loc[(task, "same"), "verdict"] == "indistinguishable"
        assert table.loc[(task, "same"), "vs reference"] == 0
        assert clear_gain(table, task, "tuned", ["weak"], margin=0.15)
        assert not clear_gain(table, task, "tuned", ["weak", "same"], margin=0.15)
        assert not clear_gain(table, task, "tuned", ["weak"], margin=0.9)


def test_closed_task_table_refuses_models_scored_on_other_items():
    a = _scores(["sentiment"] * 4, [True] * 4)
    b = _scores(["sentiment"] * 3, [True] * 3)
    with pytest.raises(ValueError, match="same items"):
        closed_task_table({"a": a, "b": b}, reference="a", tasks=["sentiment"])
    with pytest.raises(ValueError, match="reference"):
        closed_task_table({"a": a}, reference="b", tasks=["sentiment"])
    with pytest.raises(ValueError, match="no test item"):
        closed_task_table({"a": a}, reference="a", tasks=["topic"])
