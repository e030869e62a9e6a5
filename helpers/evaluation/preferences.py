"""What preference tuning changed, per held-out item: the pairs' log-probabilities and rewards, the answers' form.

For the preference-tuning lesson (issue 34). :func:`pair_scores` reads a
trained model on preference pairs it never trained on, against the frozen
reference (the SFT model): the implicit rewards DPO optimises, their margin, whether
the chosen answer ranks first (TRL's "reward accuracy"), and the probability
the model gives the chosen answer, which DPO alone can lower (likelihood
displacement). :func:`answer_table` reads the model's own (greedy) answers:
right or wrong, in the requested format or not, and their length in tokens
(DPO is known to lengthen answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.device import Precision
from helpers.evaluation.metrics import exact_match

__all__ = ["answer_table", "pair_scores", "preference_measures"]


def pair_scores(
    policy: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor], beta: float
) -> pd.DataFrame:
    """One row per preference pair: a trained model's log-probabilities of both answers, and DPO's view of them.

    ``policy`` and ``reference``: the ``(chosen, rejected)`` summed
    log-probabilities of the same pairs under the trained model and under the
    frozen reference (both from
    :func:`helpers.training.preference.reference_logprobs`, so the same tokens
    are scored). Columns: ``chosen_logp``, ``rejected_logp``,
    ``chosen_reward`` and ``rejected_reward`` (``beta`` times the log-ratio
    to the reference), ``margin`` (their difference), ``ranked_right`` (1.0
    where the margin is positive: 0.0 for the reference itself, whose margins
    are all zero) and ``chosen_probability`` (``exp(chosen_logp)``: for a
    one-word label, the chance that sampling at temperature 1 writes exactly
    it, end of answer included).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    sizes = {len(t) for t in (*policy, *reference)}
    if len(sizes) != 1:
        raise ValueError(f"policy and reference must score the same pairs, got lengths {sorted(sizes)}")
    chosen, rejected = (t.detach().float().cpu() for t in policy)
    chosen_reward = beta * (chosen - reference[0].float().cpu())
    rejected_reward = beta * (rejected - reference[1].float().cpu())
    margin = chosen_reward - rejected_reward
    return pd.DataFrame(
        {
            "chosen_logp": chosen.numpy(),
            "rejected_logp": rejected.numpy(),
            "chosen_reward": chosen_reward.numpy(),
            "rejected_reward": rejected_reward.numpy(),
            "margin": margin.numpy(),
            "ranked_right": (margin > 0).float().numpy(),
            "chosen_probability": chosen.exp().numpy(),
        }
    )


def answer_table(
    tasks: Sequence[str],
    answers: Sequence[str],
    references: Sequence[str],
    closed_labels: Mapping[str, Sequence[str]],
    tokenizer: PreTrainedTokenizerBase,
) -> pd.DataFrame:
    """One row per answer: ``task``, ``right`` (exact match), ``in_format`` (the answer is one of its task's
    labels, right or wrong) and ``tokens`` (its length). Closed tasks only: a free task is refused."""
    if not len(tasks) == len(answers) == len(references):
        raise ValueError(f"got {len(tasks)} tasks, {len(answers)} answers, {len(references)} references")
    free = sorted(set(tasks) - set(closed_labels))
    if free:
        raise ValueError(f"tasks {free} have no closed label set: their format cannot be checked")
    return pd.DataFrame(
        {
            "task": list(tasks),
            "right": [exact_match(a, r) for a, r in zip(answers, references)],
            "in_format": [
                float(any(exact_match(a, label) for label in closed_labels[t])) for t, a in zip(tasks, answers)
            ],
            "tokens": np.array([len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers], float),
        }
    )


def preference_measures(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Dataset,
    pairs: Dataset,
    reference: tuple[torch.Tensor, torch.Tensor],
    beta: float,
    closed_labels: Mapping[str, Sequence[str]],
    style: str = "chat",
    device: str = "cpu",
    precision: Precision | None = None,
    logprobs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """One model read on held-out closed-task ``questions`` and their ``pairs`` (one pair per question, in order).

    Returns ``answers`` (greedy, :func:`helpers.models.generation.answer_instructions`),
    ``table`` (:func:`answer_table` of them) and ``pairs``
    (:func:`pair_scores` against ``reference``). ``logprobs``: the model's own
    log-probabilities of the pairs when already known (the reference model's
    are ``reference``). The measure of the preference-tuning lesson and its
    benchmark (issue 34).
    """
    from helpers.models.generation import answer_instructions
    from helpers.training.preference import reference_logprobs

    if len(pairs) != len(questions):
        raise ValueError(f"{len(pairs)} pairs for {len(questions)} questions: one pair per question is expected")
    answers = answer_instructions(model, tokenizer, questions, style, device, batch_size=32)
    if logprobs is None:
        logprobs = reference_logprobs(model, tokenizer, pairs, device, precision=precision)
    return {
        "answers": answers,
        "table": answer_table(questions["task"], answers, questions["output"], closed_labels, tokenizer),
        "pairs": pair_scores(logprobs, reference, beta),
    }
