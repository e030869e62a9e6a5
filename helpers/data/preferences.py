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
``kind`` of its rejected answer. For the preference-tuning lesson of issue 34
(not written yet); :mod:`helpers.training.preference` trains on these pairs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from helpers.data.instructions import CLOSED_TASKS, closed_labels, format_prompt

__all__ = ["REJECTION_KINDS", "closed_task_pairs", "off_format_answer"]

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
