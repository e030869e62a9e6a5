"""Accuracy of generated answers on closed-form tasks, with intervals, against baselines.

A closed task has a fixed list of answers (a sentiment, a topic), so a
generative model's answers can be counted right or wrong like a classifier's.
:func:`item_scores` scores every answer; :func:`majority_answers` gives the
baseline that always answers the most frequent training answer of the task;
:func:`constrained_choice` scores the allowed answers instead of generating one (format apart
from content); :func:`closed_task_table` puts models side by side per task, each accuracy
with its 95% bootstrap interval and the paired difference to a reference
model, with the verdict that difference allows (``better`` / ``worse`` /
``indistinguishable``). Taught in ``course/04_gpt_instruction_tuning.ipynb``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.evaluation.metrics import exact_match, label_in_answer, rouge_l, token_f1
from helpers.evaluation.perplexity import response_losses
from helpers.evaluation.uncertainty import bootstrap_interval, paired_bootstrap


def item_scores(
    tasks: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
    closed_labels: Mapping[str, Sequence[str]],
) -> pd.DataFrame:
    """One row per answer: ``task``, ``exact_match``, ``label_in_answer`` (NaN for a free task), ``token_f1``, ``rouge_l``.

    The per-item values that intervals and paired comparisons need
    (:func:`helpers.evaluation.metrics.instruction_scores` gives their means).
    """
    if not len(tasks) == len(predictions) == len(references):
        raise ValueError(f"got {len(tasks)} tasks, {len(predictions)} predictions, {len(references)} references")
    return pd.DataFrame(
        {
            "task": list(tasks),
            "exact_match": [exact_match(p, r) for p, r in zip(predictions, references)],
            "label_in_answer": [
                label_in_answer(p, r, closed_labels[t]) if t in closed_labels else np.nan
                for t, p, r in zip(tasks, predictions, references)
            ],
            "token_f1": [token_f1(p, r) for p, r in zip(predictions, references)],
            "rouge_l": [rouge_l(p, r) for p, r in zip(predictions, references)],
        }
    )


def majority_answers(train_tasks: Sequence[str], train_outputs: Sequence[str], test_tasks: Sequence[str]) -> list[str]:
    """For every test item, the most frequent training answer of its task: the majority-class baseline."""
    counts: dict[str, Counter] = {}
    for task, output in zip(train_tasks, train_outputs):
        counts.setdefault(task, Counter())[output] += 1
    missing = sorted(set(test_tasks) - set(counts))
    if missing:
        raise ValueError(f"no training answers for the tasks {missing}")
    return [counts[task].most_common(1)[0][0] for task in test_tasks]


def constrained_choice(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    closed_labels: Mapping[str, Sequence[str]],
    style: str = "chat",
    device: str = "cpu",
    batch_size: int = 16,
) -> list[str]:
    """For each item of a closed task, the allowed answer the model finds most probable after the prompt.

    No text is generated: each allowed answer of the item's task is scored as
    the response to the item's prompt in ``style`` (the sum of the
    log-probabilities of its tokens and of the end of the answer,
    :func:`helpers.evaluation.perplexity.response_losses`) and the likeliest
    one is the prediction. The model thus answers in the right format by
    construction: its accuracy measures what it knows about the task, apart
    from whether it has learned to *write* the answer in the expected form,
    which is what separates format from content in an instruction-tuning gain.
    Every item of ``dataset`` must belong to a task of ``closed_labels``.
    Taught in ``course/04_gpt_instruction_tuning.ipynb``.
    """
    tasks = list(dataset["task"])
    unknown = sorted(set(tasks) - set(closed_labels))
    if unknown:
        raise ValueError(f"constrained choice needs closed tasks; no allowed answers for {unknown}")
    candidates = [
        {"instruction": row["instruction"], "input": row["input"], "output": label}
        for row in dataset
        for label in closed_labels[row["task"]]
    ]
    sums, _ = response_losses(model, tokenizer, Dataset.from_list(candidates), style, device, batch_size)
    choices, start = [], 0
    for task in tasks:
        labels = list(closed_labels[task])
        choices.append(labels[int(np.argmin(sums[start : start + len(labels)]))])  # lowest loss: the likeliest
        start += len(labels)
    return choices


def closed_task_table(
    scores: Mapping[str, pd.DataFrame],
    reference: str,
    tasks: Sequence[str],
    metric: str = "exact_match",
    seed: int = 0,
) -> pd.DataFrame:
    """Per task and model: ``n``, the accuracy with its 95% interval, and the paired difference to ``reference``.

    ``scores`` maps a model's name to its :func:`item_scores` on the same test
    items, in the same order. Columns: ``n``, ``accuracy``, ``low``, ``high``,
    ``vs reference``, ``diff low``, ``diff high``, ``verdict`` (the reference's
    own row has no difference). Index: ``(task, model)``.
    """
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not one of {list(scores)}")
    first = scores[reference]
    for name, frame in scores.items():
        if len(frame) != len(first) or list(frame["task"]) != list(first["task"]):
            raise ValueError(f"{name!r} was not scored on the same items as {reference!r}")
    rows = {}
    for task in tasks:
        mask = (first["task"] == task).to_numpy()
        if not mask.any():
            raise ValueError(f"no test item of task {task!r}")
        base = first.loc[mask, metric].to_numpy(dtype=float)
        for name, frame in scores.items():
            values = frame.loc[mask, metric].to_numpy(dtype=float)
            interval = bootstrap_interval(values, seed=seed)
            row = {"n": int(mask.sum()), "accuracy": interval.value, "low": interval.low, "high": interval.high}
            if name != reference:
                paired = paired_bootstrap(values, base, seed=seed)
                row |= {
                    "vs reference": paired.difference.value,
                    "diff low": paired.difference.low,
                    "diff high": paired.difference.high,
                    "verdict": paired.verdict,
                }
            rows[(task, name)] = row
    table = pd.DataFrame(rows).T
    table.index.names = ["task", "model"]
    numeric = ["n", "accuracy", "low", "high", "vs reference", "diff low", "diff high"]
    table[numeric] = table[numeric].astype(float)
    return table


def clear_gain(table: pd.DataFrame, task: str, model: str, baselines: Sequence[str], margin: float) -> bool:
    """Whether ``model`` beats every baseline on ``task`` by at least ``margin`` with non-overlapping intervals."""
    row = table.loc[(task, model)]
    return all(
        row["accuracy"] - table.loc[(task, b), "accuracy"] >= margin and row["low"] > table.loc[(task, b), "high"]
        for b in baselines
    )


__all__ = ["clear_gain", "closed_task_table", "constrained_choice", "item_scores", "majority_answers"]
