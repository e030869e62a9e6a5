"""Measuring catastrophic forgetting: the target task and general ability, item by item, before and after.

A fine-tuned model can gain on its target task and lose what it knew. Both
sides are measured on the same items for every model, so that two models are
compared pair by pair (:func:`helpers.evaluation.uncertainty.paired_bootstrap`):

- **target task**: exact match of the greedy answers on the task's held-out test items;
- **general text**: the mean loss per token of each held-out general paragraph
  (``exp`` of it is the paragraph's perplexity; lower is better);
- **general questions**: token F1 (and exact match) of the greedy answers to
  held-out questions that no run is trained on;
- **general answers**: whether the model finds the *reference* answer to each
  of those questions the most likely of ``n_choices`` candidates, itself and
  the reference answers of other questions (:func:`answer_choice_correct`).
  Token F1 of a 135M model's own answers sits near its floor; this choice
  moves even when the generated answer is wrong before and after. A loss of
  the reference answer alone would not do: a run fine-tuned on short answers
  makes *every* short answer more likely (and learns when to stop), which
  would pass for knowledge; against other questions' answers of the same
  kind, that shift cancels. It is scored in the ``"qa"`` prompt style, which
  no run trains on, without the end-of-sequence token.

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
from helpers.evaluation.perplexity import response_losses, text_losses
from helpers.evaluation.uncertainty import compare_to_reference, resamples_for_holm
from helpers.models.generation import answer_instructions

__all__ = ["AbilityScores", "answer_choice_correct", "measure_abilities", "forgetting_table", "encoder_probe_correct"]


@dataclass
class AbilityScores:
    """Per-item scores of one model: target-task exact match, general-text loss, general-question F1 and EM,
    and whether each general question's reference answer is chosen among candidates (1.0) or not."""

    target_exact_match: np.ndarray
    general_text_loss: np.ndarray
    general_question_f1: np.ndarray
    general_question_exact_match: np.ndarray
    general_answer_correct: np.ndarray
    train_seconds: float | None = None
    answers: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def general_perplexity(self) -> float:
        """``exp`` of the mean per-paragraph loss (the geometric mean of the paragraphs' perplexities)."""
        return math.exp(float(np.mean(self.general_text_loss)))


def answer_choice_correct(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Dataset,
    n_choices: int = 4,
    style: str = "qa",
    device: str = "cpu",
    max_length: int = 128,
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """1.0 for each question whose reference ``output`` is the likeliest of ``n_choices`` candidate answers.

    The candidates are the question's own reference answer and those of
    ``n_choices - 1`` other questions (with a different text), drawn with
    ``seed`` (the same draw for every model, so two models are compared on
    the same choices). Each
    candidate is scored by its mean loss per token given the question
    (:func:`helpers.evaluation.perplexity.response_losses`, end token not
    scored); the likeliest has the lowest. Chance is ``1 / n_choices``.
    Not :func:`helpers.evaluation.closed_tasks.constrained_choice`: that one
    chooses among a task's fixed labels by summed loss with the end token,
    where answers of different lengths compete; here each question has its
    own candidates of various lengths, so the mean per token is compared.
    Taught in ``course/06_catastrophic_forgetting.ipynb``.
    """
    n = len(questions)
    if not 2 <= n_choices <= n:
        raise ValueError(f"n_choices must be between 2 and the number of questions ({n}), got {n_choices}")
    rng = np.random.default_rng(seed)
    answers = list(questions["output"])
    rows = []
    for i, row in enumerate(questions):
        pool = [j for j in range(n) if answers[j].strip() != answers[i].strip()]  # a distractor must differ
        if len(pool) < n_choices - 1:
            raise ValueError(f"question {i} has fewer than {n_choices - 1} other, different answers to draw")
        others = rng.choice(pool, size=n_choices - 1, replace=False)
        for answer in [answers[i], *(answers[j] for j in others)]:  # the right answer first
            rows.append({"instruction": row["instruction"], "input": row["input"], "output": answer})
    sums, counts = response_losses(
        model, tokenizer, Dataset.from_list(rows), style, device, batch_size, max_length, score_end=False
    )
    if (counts == 0).any():
        raise ValueError(f"a candidate answer is cut off by max_length={max_length}: nothing of it is scored")
    mean_loss = (sums / counts).reshape(n, n_choices)
    return (mean_loss.argmin(axis=1) == 0).astype(float)


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
    answer_style: str = "qa",
    n_choices: int = 4,
    seed: int = 0,
    choice_questions: Dataset | None = None,
) -> AbilityScores:
    """Score ``model`` on the target task's test items, general paragraphs and general questions.

    ``target_test`` and ``general_questions`` are instruction datasets
    (``task``, ``instruction``, ``input``, ``output``), answered greedily in
    ``style`` (each task with its own token budget, capped by
    ``max_new_tokens``); ``general_texts`` are scored by their loss per token,
    truncated to ``max_length`` tokens, and the general questions' reference
    answers chosen among ``n_choices`` candidates (:func:`answer_choice_correct`,
    in ``answer_style``, a style the fine-tuning does not train; the
    distractors drawn with ``seed``, the same for every model), on
    ``choice_questions`` when given (scoring answers costs far less than
    generating them, so more questions fit), else on ``general_questions``.
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
        general_answer_correct=answer_choice_correct(
            model,
            tokenizer,
            general_questions if choice_questions is None else choice_questions,
            n_choices,
            answer_style,
            device,
            max_length,
            seed,
        ),
        train_seconds=train_seconds,
        answers={"target": target_answers, "general_questions": question_answers},
    )


# (column, attribute, higher is better)
_MEASURES = (
    ("target", "target_exact_match", True),
    ("general_text", "general_text_loss", False),
    ("general_questions", "general_question_f1", True),
    ("general_answers", "general_answer_correct", True),
)


def forgetting_table(
    runs: Mapping[str, AbilityScores], reference: str, seed: int = 0, n_resamples: int | None = None
) -> pd.DataFrame:
    """One row per run: each measure with its 95% interval, and its paired change against ``reference``.

    Columns, for ``target`` (exact match), ``general_text`` (mean loss per
    token of the general paragraphs; ``general_perplexity`` is ``exp`` of it)
    ``general_questions`` (token F1) and ``general_answers`` (share of the
    questions whose reference answer is the likeliest candidate): the value,
    ``_low``/``_high`` (a bootstrap interval over items), ``_change`` with ``_change_low``/
    ``_change_high`` (run minus reference, paired over the same items) and
    ``_verdict``: ``"better"``, ``"worse"`` or ``"indistinguishable"`` (for
    the general-text loss, lower is better). Plus ``train_seconds``.
    ``n_resamples``: bootstrap resamples; by default enough for the table's
    verdicts (every run but the reference, every measure) to be read together
    after Holm (:func:`helpers.evaluation.uncertainty.resamples_for_holm`).
    """
    if reference not in runs:
        raise KeyError(f"reference {reference!r} is not one of the runs {list(runs)}")
    base = runs[reference]
    if n_resamples is None:
        n_resamples = resamples_for_holm(len(_MEASURES) * max(1, len(runs) - 1))
    rows = {}
    for name, scores in runs.items():
        row: dict[str, float | str | None] = {}
        for column, attribute, higher_is_better in _MEASURES:
            values = getattr(scores, attribute)
            reference_values = values if name == reference else getattr(base, attribute)
            row |= compare_to_reference(
                values, reference_values, higher_is_better, seed, prefix=f"{column}_", n_resamples=n_resamples
            )
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
