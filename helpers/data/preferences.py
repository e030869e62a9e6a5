"""Preference pairs with a verifiable winner, in TRL's ``prompt``/``chosen``/``rejected`` format.

Preference tuning (DPO and its variants) learns from pairs of answers to one
prompt, one preferred. Human or model judges are not needed where the task
has a checkable answer: on lesson 04's closed tasks (sentiment, topic) the
preferred answer is the reference label, in the requested format, and the
rejected one is verifiably worse:

- ``"wrong_label"``: another allowed label, drawn with a seed (wrong content,
  right format);
- ``"off_format"``: the right label inside a sentence (right content, but not
  the one word the instruction asks for, so an exact-match scorer rejects it).

Pairs are built from the splits of :func:`helpers.data.instructions.instruction_dataset`,
which are already split by film and by article, so no prompt is in two splits.
Each row keeps the item it came from (``source``), its ``task`` and the
``kind`` of its rejected answer. :func:`preference_questions` gives the
questions: training ones the SFT model never saw, and held-out ones. For
the preference-tuning lesson (issue 34); :mod:`helpers.training.preference`
trains on these pairs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from helpers.data.instructions import CLOSED_TASKS, TASKS, closed_labels, format_prompt, instruction_dataset

__all__ = ["REJECTION_KINDS", "closed_task_pairs", "off_format_answer", "preference_questions"]

REJECTION_KINDS = ("wrong_label", "off_format")


def off_format_answer(label: str) -> str:
    """The right ``label`` inside a sentence: the content is right, the one-word format the task asks for is not."""
    return f"I think the answer is {label}, based on the text."


def closed_task_pairs(
    instructions: Dataset,
    tokenizer: PreTrainedTokenizerBase | None = None,
    style: str = "chat",
    kinds: Sequence[str] = REJECTION_KINDS,
    seed: int = 42,
) -> Dataset:
    """One preference pair per closed-task item of ``instructions`` and per rejection kind.

    ``instructions``: rows with ``task``, ``instruction``, ``input`` and
    ``output`` (one split of :func:`helpers.data.instructions.instruction_dataset`);
    free-form tasks are skipped (their answers cannot be checked exactly).
    ``prompt`` is :func:`helpers.data.instructions.format_prompt` in ``style``
    (``tokenizer`` is needed for ``"chat"``), ``chosen`` the reference label.
    Columns: ``prompt``, ``chosen``, ``rejected``, ``task``, ``kind``,
    ``source`` (the item's row in ``instructions``). Deterministic for a ``seed``.
    """
    unknown = set(kinds) - set(REJECTION_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {REJECTION_KINDS}, got {list(kinds)}")
    missing = {"task", "instruction", "input", "output"} - set(instructions.column_names)
    if missing:
        raise ValueError(f"instructions lacks the columns {sorted(missing)}")
    labels = closed_labels()
    rng = random.Random(seed)
    rows = []
    for index, row in enumerate(instructions):
        if row["task"] not in CLOSED_TASKS:
            continue
        allowed = labels[row["task"]]
        if row["output"] not in allowed:
            raise ValueError(f"item {index}: {row['output']!r} is not an allowed {row['task']} label {allowed}")
        prompt = format_prompt(row["instruction"], row["input"], style, tokenizer)
        wrong = rng.choice([label for label in allowed if label != row["output"]])
        rejected = {"wrong_label": wrong, "off_format": off_format_answer(row["output"])}
        for kind in kinds:
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": row["output"],
                    "rejected": rejected[kind],
                    "task": row["task"],
                    "kind": kind,
                    "source": index,
                }
            )
    if not rows:
        raise ValueError(f"instructions holds no closed-task item ({', '.join(CLOSED_TASKS)})")
    return Dataset.from_list(rows)


def preference_questions(
    sft_train_sizes: Mapping[str, int],
    per_task: Mapping[str, int],
    held_out_per_task: Mapping[str, int],
    held_out_split: str = "test",
    seed: int = 42,
    max_words: int = 30,
) -> tuple[Dataset, Dataset]:
    """Closed-task questions to build preference pairs on, and held-out questions to measure on.

    The first: ``per_task`` questions of each closed task from the training
    split of :func:`helpers.data.instructions.instruction_dataset`, none of
    which the SFT model trained on (it saw ``instruction_dataset({"train":
    sft_train_sizes}, seed, max_words)["train"]``, the recipe of
    :func:`helpers.training.reference.instruction_model`; a task left out
    has none there, as in its recipe). The second:
    ``held_out_per_task`` questions of ``held_out_split`` (``"validation"`` to
    choose a recipe, ``"test"`` to report), split by film and article, so no
    text is in both.
    """
    if held_out_split not in ("validation", "test"):
        raise ValueError(f"held_out_split must be 'validation' or 'test', got {held_out_split!r}")
    for sizes in (per_task, held_out_per_task):
        unknown = set(sizes) - set(CLOSED_TASKS)
        if unknown:
            raise ValueError(f"tasks {sorted(unknown)} are not closed tasks {list(CLOSED_TASKS)}")
    no_free = {task: 0 for task in TASKS if task not in CLOSED_TASKS}  # answers that cannot be checked
    other = "test" if held_out_split == "validation" else "validation"
    held_out = {task: held_out_per_task.get(task, 0) for task in CLOSED_TASKS} | no_free  # a task left out: none
    sft_sizes = {task: int(sft_train_sizes.get(task, 0)) for task in TASKS}  # as instruction_model reads them
    data = instruction_dataset(
        {"train": dict.fromkeys(CLOSED_TASKS) | no_free, other: 0, held_out_split: held_out},
        seed=seed,
        max_words=max_words,
    )
    seen = set(
        instruction_dataset({"train": sft_sizes, "validation": 0, "test": 0}, seed=seed, max_words=max_words)["train"][
            "input"
        ]
    )
    unseen = data["train"].filter(lambda row: row["input"] not in seen)
    tasks = unseen["task"]
    parts = []
    for task, n in per_task.items():
        rows = [i for i, name in enumerate(tasks) if name == task]
        if n > len(rows):
            raise ValueError(f"{n} {task} questions asked, {len(rows)} unseen ones exist")
        parts.append(unseen.select(rows[:n]))
    return concatenate_datasets(parts), data[held_out_split]
