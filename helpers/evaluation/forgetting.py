"""Measuring catastrophic forgetting: the target task and general ability, item by item, before and after.

A fine-tuned model can gain on its target task and lose what it knew. Both
sides are measured on the same items for every model, so that two models are
compared pair by pair (:func:`helpers.evaluation.uncertainty.paired_bootstrap`):

- **target task**: exact match of the greedy answers on the task's held-out test items;
- **general text**: the mean loss per token of each held-out general paragraph
  (``exp`` of it is the paragraph's perplexity; lower is better);
- **general questions**: token F1 (and exact match) of the greedy answers to
  held-out questions that no run is trained on.

:func:`measure_abilities` scores one model; :func:`forgetting_table` turns
several into one table with intervals and verdicts against a reference (the
model before fine-tuning, or the unremedied run).
Taught in ``course/06_catastrophic_forgetting.ipynb``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.evaluation.metrics import exact_match, token_f1
from helpers.evaluation.perplexity import text_losses
from helpers.evaluation.uncertainty import compare_to_reference
from helpers.models.generation import answer_instructions

__all__ = ["AbilityScores", "measure_abilities", "forgetting_table", "encoder_probe_correct"]


@dataclass
class AbilityScores:
    """Per-item scores of one model: target-task exact match, general-text loss, general-question F1 and EM."""

    target_exact_match: np.ndarray
    general_text_loss: np.ndarray
    general_question_f1: np.ndarray
    general_question_exact_match: np.ndarray
    train_seconds: float | None = None
    answers: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def general_perplexity(self) -> float:
        """``exp`` of the mean per-paragraph loss (the geometric mean of the paragraphs' perplexities)."""
        return math.exp(float(np.mean(self.general_text_loss)))


def measure_abilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    target_test: Dataset,
    general_texts: Sequence[str],
    general_questions: Dataset,
    device: str = "cpu",
    style: str = "chat",
    max_new_tokens: int | None = None,
    max_length: int = 128,
    train_seconds: float | None = None,
) -> AbilityScores:
    """Score ``model`` on the target task's test items, general paragraphs and general questions.

    ``target_test`` and ``general_questions`` are instruction datasets
    (``task``, ``instruction``, ``input``, ``output``), answered greedily in
    ``style`` (each task with its own token budget, capped by
    ``max_new_tokens``); ``general_texts`` are scored by their loss per token,
    truncated to ``max_length`` tokens.
    """
    if len(target_test) < 2 or len(general_texts) < 2 or len(general_questions) < 2:
        raise ValueError("each measure needs at least 2 items for an interval")
    target_answers = answer_instructions(model, tokenizer, target_test, style, device, max_new_tokens=max_new_tokens)
    question_answers = answer_instructions(
        model, tokenizer, general_questions, style, device, max_new_tokens=max_new_tokens
    )
    return AbilityScores(
        target_exact_match=np.array([exact_match(a, r) for a, r in zip(target_answers, target_test["output"])]),
        general_text_loss=text_losses(model, tokenizer, list(general_texts), device, max_length=max_length),
        general_question_f1=np.array([token_f1(a, r) for a, r in zip(question_answers, general_questions["output"])]),
        general_question_exact_match=np.array(
            [exact_match(a, r) for a, r in zip(question_answers, general_questions["output"])]
        ),
        train_seconds=train_seconds,
        answers={"target": target_answers, "general_questions": question_answers},
    )


# (column, attribute, higher is better)
_MEASURES = (
    ("target", "target_exact_match", True),
    ("general_text", "general_text_loss", False),
    ("general_questions", "general_question_f1", True),
)


def forgetting_table(runs: Mapping[str, AbilityScores], reference: str, seed: int = 0) -> pd.DataFrame:
    """One row per run: each measure with its 95% interval, and its paired change against ``reference``.

    Columns, for ``target`` (exact match), ``general_text`` (mean loss per
    token of the general paragraphs; ``general_perplexity`` is ``exp`` of it)
    and ``general_questions`` (token F1): the value, ``_low``/``_high`` (a
    bootstrap interval over items), ``_change`` with ``_change_low``/
    ``_change_high`` (run minus reference, paired over the same items) and
    ``_verdict``: ``"better"``, ``"worse"`` or ``"indistinguishable"`` (for
    the general-text loss, lower is better). Plus ``train_seconds``.
    """
    if reference not in runs:
        raise KeyError(f"reference {reference!r} is not one of the runs {list(runs)}")
    base = runs[reference]
    rows = {}
    for name, scores in runs.items():
        row: dict[str, float | str | None] = {}
        for column, attribute, higher_is_better in _MEASURES:
            values = getattr(scores, attribute)
            reference_values = values if name == reference else getattr(base, attribute)
            row |= compare_to_reference(values, reference_values, higher_is_better, seed, prefix=f"{column}_")
        row["general_perplexity"] = scores.general_perplexity
        row["train_seconds"] = scores.train_seconds
        rows[name] = row
    return pd.DataFrame(rows).T


def encoder_probe_correct(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    test_texts: Sequence[str],
    test_labels: Sequence[int],
    device: str = "cpu",
    seed: int = 42,
    max_length: int = 128,
) -> np.ndarray:
    """What an encoder still knows beyond its task: a linear probe of another task on its frozen sentence vectors.

    A fine-tuned encoder has no text loss to score; its general ability is
    how well its sentence vectors (:func:`helpers.models.inference.sentence_embeddings`,
    mean pooling) still serve a task it was not tuned for. A logistic
    regression is fitted on ``train_texts`` and scored on ``test_texts``:
    1.0 where right, one value per test text, for a paired comparison with the
    encoder before fine-tuning. A PEFT model is read with its adapters active.
    Texts are cut to ``max_length`` tokens.
    Used by ``course/11_peft.ipynb``.
    """
    from sklearn.linear_model import LogisticRegression

    from helpers.models.inference import sentence_embeddings
    from helpers.training.lora import unwrap_peft

    encoder = unwrap_peft(model)
    train_vectors = sentence_embeddings(encoder, tokenizer, list(train_texts), device, max_length=max_length)
    test_vectors = sentence_embeddings(encoder, tokenizer, list(test_texts), device, max_length=max_length)
    probe = LogisticRegression(max_iter=2000, random_state=seed).fit(train_vectors, np.asarray(train_labels))
    return (probe.predict(test_vectors) == np.asarray(test_labels)).astype(float)
