"""Measuring forgetting: the per-item scores, their table and verdicts, the general questions, the trade-off plot."""

import matplotlib

matplotlib.use("Agg")

import warnings

import numpy as np
import pytest

from helpers.data.instructions import general_questions
from helpers.evaluation.forgetting import AbilityScores, forgetting_table, measure_abilities


def scores(target, loss, f1, seconds=None, answer_correct=None):
    answer_correct = np.asarray(np.asarray(f1) == 1.0 if answer_correct is None else answer_correct, float)
    return AbilityScores(
        np.asarray(target, float),
        np.asarray(loss, float),
        np.asarray(f1, float),
        np.asarray(f1, float) == 1.0,
        answer_correct,
        seconds,
    )


def test_forgetting_table_verdicts_follow_the_paired_differences():
    rng = np.random.default_rng(0)
    loss = rng.uniform(2.0, 3.0, 40)
    runs = {
        "start": scores(np.zeros(40), loss, rng.uniform(0, 0.3, 40)),
        "tuned": scores(
            np.ones(40), loss + rng.uniform(0.05, 0.15, 40), np.zeros(40), 12.0, np.r_[np.ones(30), np.zeros(10)]
        ),
        "gentle": scores(np.r_[np.ones(20), np.zeros(20)], loss - rng.uniform(0.01, 0.02, 40), rng.uniform(0, 0.3, 40)),
        "same": scores(np.zeros(40), loss + rng.normal(0, 0.05, 40), rng.uniform(0, 0.3, 40)),
    }
    table = forgetting_table(runs, reference="start")
    assert list(table.index) == list(runs)
    assert (
        table.loc[
            "start", ["target_verdict", "general_text_verdict", "general_questions_verdict", "general_answers_verdict"]
        ]
        == "reference"
    ).all()
    assert table.loc["tuned", "target_verdict"] == "better"
    assert table.loc["tuned", "general_text_verdict"] == "worse"  # a higher loss is worse
    assert table.loc["tuned", "general_questions_verdict"] == "worse"
    # The answer choice is its own measure (here more right after tuning: better), higher is better.
    assert table.loc["tuned", "general_answers_verdict"] == "better"
    assert table.loc["tuned", "general_answers_change"] == pytest.approx(
        0.75 - np.mean(runs["start"].general_answer_correct)
    )
    assert table.loc["gentle", "general_text_verdict"] == "better"  # a lower loss is better
    assert table.loc["same", "general_text_verdict"] == "indistinguishable"
    row = table.loc["tuned"]
    assert row["general_text_change"] == pytest.approx(np.mean(runs["tuned"].general_text_loss - loss))
    assert row["general_text_change_low"] < row["general_text_change"] < row["general_text_change_high"]
    assert row["target"] == 1.0 and row["train_seconds"] == 12.0
    assert row["general_perplexity"] == pytest.approx(np.exp(np.mean(runs["tuned"].general_text_loss)))
    with pytest.raises(KeyError, match="reference"):
        forgetting_table(runs, reference="missing")


def test_a_clear_effect_survives_holm_in_a_table_of_many_runs():
    """14 runs x 4 measures: with the default 2,000 resamples no bootstrap p-value can pass Holm's first threshold."""
    from helpers.evaluation.uncertainty import N_RESAMPLES, holm_table, resamples_for_holm

    rng = np.random.default_rng(1)
    loss = rng.uniform(2.0, 3.0, 30)
    runs = {"start": scores(np.zeros(30), loss, rng.uniform(0, 0.3, 30))}
    for k in range(13):
        runs[f"run {k}"] = scores(np.ones(30), loss + rng.uniform(0.05, 0.15, 30), rng.uniform(0, 0.3, 30))
    measures = ["target", "general_text", "general_questions", "general_answers"]
    comparisons = len(measures) * 13
    assert 2 / (N_RESAMPLES + 1) > 0.05 / comparisons  # the floor the default table would hit
    assert 2 / (resamples_for_holm(comparisons) + 1) <= 0.05 / comparisons / 10
    with pytest.warns(RuntimeWarning, match="resamples_for_holm"):  # the starved family says so
        starved = holm_table(forgetting_table(runs, reference="start", n_resamples=N_RESAMPLES), measures)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough resamples: no warning
        corrected = holm_table(forgetting_table(runs, reference="start"), measures)
    for k in range(13):
        assert starved.loc[f"run {k}", "general_text_verdict"] == "indistinguishable"
        assert corrected.loc[f"run {k}", "general_text_verdict"] == "worse"
        assert corrected.loc[f"run {k}", "target_verdict"] == "better"
    with pytest.raises(ValueError, match="comparisons"):
        resamples_for_holm(0)


def test_general_questions_are_seeded_factual_questions():
    questions = general_questions(20, seed=3)
    assert len(questions) == 20 and set(questions["task"]) == {"general_qa"}
    assert all(q.strip().endswith("?") and len(q.split()) >= 4 for q in questions["instruction"])
    assert all(answer.strip() for answer in questions["output"])
    assert general_questions(20, seed=3)["instruction"] == questions["instruction"]
    assert general_questions(20, seed=4)["instruction"] != questions["instruction"]


def test_plot_forgetting_tradeoff_draws_one_point_per_run():
    from helpers.plots import plot_forgetting_tradeoff

    rng = np.random.default_rng(1)
    runs = {name: scores(rng.integers(0, 2, 30), rng.uniform(2, 3, 30), rng.uniform(0, 1, 30)) for name in "abc"}
    table = forgetting_table(runs, reference="a")
    ax = plot_forgetting_tradeoff(table)
    assert [text.get_text() for text in ax.texts] == ["a", "b", "c"]
    # Short labels, and a sweep joined by a line through its runs' points, in order.
    ax = plot_forgetting_tradeoff(table, labels={"b": "B"}, sweeps={"sweep": ["b", "c"]})
    assert [text.get_text() for text in ax.texts] == ["a", "B", "c"]
    (line,) = [line for line in ax.get_lines() if line.get_label() == "sweep"]
    assert list(line.get_xdata()) == [100 * table.loc[n, "target_change"] for n in "bc"]
    assert list(line.get_ydata()) == [table.loc[n, "general_text_change"] for n in "bc"]
    with pytest.raises(KeyError, match="not rows"):
        plot_forgetting_tradeoff(table, sweeps={"sweep": ["b", "z"]})


@pytest.mark.slow
def test_measure_abilities_scores_every_item(smollm):
    from helpers.data.instructions import instruction_dataset

    model, tokenizer = smollm
    test = instruction_dataset({"train": 1, "validation": 1, "test": 3}, seed=0)["test"]
    target = test.filter(lambda row: row["task"] == "sentiment")
    questions = general_questions(3, seed=0)
    texts = ["The Eiffel Tower is in Paris.", "Water boils at one hundred degrees Celsius.", "Cats are small mammals."]
    result = measure_abilities(
        model, tokenizer, target, texts, questions, max_new_tokens=4, train_seconds=1.5, n_choices=2
    )
    assert result.target_exact_match.shape == (3,) and set(result.target_exact_match) <= {0.0, 1.0}
    assert result.general_text_loss.shape == (3,) and (result.general_text_loss > 0).all()
    assert (
        result.general_question_f1.shape == (3,)
        and ((0 <= result.general_question_f1) & (result.general_question_f1 <= 1)).all()
    )
    assert len(result.answers["target"]) == 3 and len(result.answers["general_questions"]) == 3
    assert result.general_answer_correct.shape == (3,) and set(result.general_answer_correct) <= {0.0, 1.0}
    assert result.train_seconds == 1.5
    with pytest.raises(ValueError, match="at least 2 items"):
        measure_abilities(model, tokenizer, target.select([0]), texts, questions)


@pytest.mark.slow
def test_answer_choice_finds_the_answer_a_real_model_makes_likeliest(smollm):
    """Questions whose answer is in the question: SmolLM2 makes the right one the likeliest of three candidates."""
    from datasets import Dataset

    from helpers.evaluation.forgetting import answer_choice_correct

    model, tokenizer = smollm
    words = ["apple", "river", "guitar", "mountain", "yellow", "window"]
    questions = Dataset.from_list(
        [{"instruction": f"Repeat this word exactly: {w}", "input": "", "output": w} for w in words]
    )
    correct = answer_choice_correct(model, tokenizer, questions, n_choices=3, seed=1)
    assert correct.shape == (6,) and correct.mean() >= 5 / 6  # chance is 1/3
    assert (answer_choice_correct(model, tokenizer, questions, n_choices=3, seed=1) == correct).all()
    with pytest.raises(ValueError, match="n_choices"):
        answer_choice_correct(model, tokenizer, questions, n_choices=7)
    same = Dataset.from_list([{"instruction": "Say yes.", "input": "", "output": "yes"}] * 3)
    with pytest.raises(ValueError, match="different answers"):
        answer_choice_correct(model, tokenizer, same, n_choices=2)
