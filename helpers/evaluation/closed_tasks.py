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
import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.data.causal_lm import IGNORE_INDEX, tokenize_instruction
from helpers.data.instructions import format_prompt
from helpers.evaluation.metrics import exact_match, label_in_answer, rouge_l, token_f1
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


@torch.no_grad()
def allowed_answer_losses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    closed_labels: Mapping[str, Sequence[str]],
    style: str = "chat",
    device: str = "cpu",
) -> list[np.ndarray]:
    """For each item of a closed task, the summed loss of each allowed answer as the response to its prompt.

    One array per item, in the order of ``closed_labels[task]``: minus the
    log-probability of the answer's tokens and of the end of the answer, the
    same numbers as :func:`helpers.evaluation.perplexity.response_losses`
    gives for each (item, answer) row. The prompt is computed once per item and
    its key-value cache shared by all the answers (a topic item has eleven):
    the answers alone are computed again, which is what makes the constrained
    choice affordable on a CPU. Taught in ``course/04_gpt_instruction_tuning.ipynb``.
    """
    tasks = list(dataset["task"])
    unknown = sorted(set(tasks) - set(closed_labels))
    if unknown:
        raise ValueError(f"constrained choice needs closed tasks; no allowed answers for {unknown}")
    model.eval()
    losses = []
    for row in dataset:
        labels = list(closed_labels[row["task"]])
        text = format_prompt(row["instruction"], row["input"], style, tokenizer)
        tokenized = [tokenize_instruction(text, label, tokenizer, 1_000_000, True) for label in labels]  # never cut
        starts = [
            next(i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX) for example in tokenized
        ]
        prompt = tokenized[0]["input_ids"][: starts[0]]
        answers = []
        for example, start in zip(tokenized, starts):
            if example["input_ids"][:start] != prompt:
                raise ValueError("the allowed answers of one item do not share its prompt's tokens")
            answers.append(example["input_ids"][start:])
        prompt_ids = torch.tensor([prompt], device=device)
        out = model(input_ids=prompt_ids, use_cache=True)
        first = out.logits[0, -1].double().log_softmax(-1)  # predicts every answer's first token
        width = max(map(len, answers))
        ids = torch.full((len(answers), width), tokenizer.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(answers), width), dtype=torch.long, device=device)
        for k, answer in enumerate(answers):
            ids[k, : len(answer)] = torch.tensor(answer, device=device)
            mask[k, : len(answer)] = 1
        total = torch.stack([-first[answer[0]] for answer in answers])
        if width > 1:
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(answers))
            attention = torch.cat([torch.ones((len(answers), len(prompt)), dtype=torch.long, device=device), mask], 1)
            positions = torch.arange(len(prompt), len(prompt) + width, device=device).expand(len(answers), -1)
            following = model(input_ids=ids, attention_mask=attention, cache=cache, position_ids=positions)
            log_probs = following.logits[:, :-1].double().log_softmax(-1)  # position t predicts answer token t + 1
            picked = log_probs.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]  # padding scores nothing
            total = total - picked.sum(-1)
        losses.append(total.double().cpu().numpy())
    return losses


def constrained_choice(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    closed_labels: Mapping[str, Sequence[str]],
    style: str = "chat",
    device: str = "cpu",
) -> list[str]:
    """For each item of a closed task, the allowed answer the model finds most probable after the prompt.

    No text is generated: each allowed answer of the item's task is scored as
    the response to the item's prompt in ``style`` (the sum of the
    log-probabilities of its tokens and of the end of the answer,
    :func:`allowed_answer_losses`) and the likeliest one is the prediction.
    The model thus answers in the right format by construction: its accuracy
    measures what it knows about the task, apart from whether it has learned
    to *write* the answer in the expected form, which is what separates format
    from content in an instruction-tuning gain. Every item of ``dataset`` must
    belong to a task of ``closed_labels``. Taught in
    ``course/04_gpt_instruction_tuning.ipynb``.
    """
    losses = allowed_answer_losses(model, tokenizer, dataset, closed_labels, style, device)
    return [list(closed_labels[task])[int(np.argmin(loss))] for task, loss in zip(dataset["task"], losses)]


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


__all__ = [
    "allowed_answer_losses",
    "clear_gain",
    "closed_task_table",
    "constrained_choice",
    "item_scores",
    "majority_answers",
]
