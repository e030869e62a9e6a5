"""Direct Preference Optimization (DPO) written out, and TRL's ``DPOConfig`` set for this machine.

DPO (Rafailov et al. 2023) trains a policy on pairs (prompt, chosen,
rejected) against a frozen reference model, usually the SFT model it starts
from. With :math:`\\log \\pi(y|x)` the summed log-probability of an answer's
tokens, the implicit reward of an answer is
``beta * (log pi_policy(y|x) - log pi_ref(y|x))`` and the loss of a pair is
``-log sigmoid(reward(chosen) - reward(rejected))``: it pushes the chosen
answer's log-ratio above the rejected one's, and ``beta`` says how far the
policy may move from the reference for a given margin.

:func:`completion_logprobs` and :func:`dpo_loss` are that formula in a few
lines; ``tests/test_preference.py`` checks that they give the loss of
``trl.DPOTrainer`` on the same batch. :func:`dpo_config_for` is the library
way, set explicitly where TRL's defaults do not fit a laptop (as
:func:`helpers.training.lora.sft_config_for`). For the preference-tuning
lesson of issue 34 (not written yet); the pairs come from
:mod:`helpers.data.preferences`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig

from helpers.data.instructions import format_prompt
from helpers.device import Precision
from helpers.models.generation import answer_instructions
from helpers.training.lora import trl_training_settings

__all__ = [
    "DPOLoss",
    "completion_logprobs",
    "dpo_config_for",
    "dpo_loss",
    "on_policy_pairs",
    "preferred_answer",
    "prompt_completion_ids",
]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def prompt_completion_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str
) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` and of ``completion`` followed by the end-of-sequence token, as TRL cuts them.

    The two texts are tokenized together and the completion starts where that
    tokenization stops agreeing with the prompt's own, so that a token merged
    across the boundary is not counted twice (TRL's DPO data preparation does
    the same; a prompt that ends on a token boundary, as the chat template's
    assistant header, is cut exactly at its end).
    """
    end = tokenizer.eos_token
    text = completion if completion.endswith(end) else completion + end
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joint = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
    cut = _common_prefix(prompt_ids, joint)
    return prompt_ids[:cut], joint[cut:]


def _summed_logprobs(
    model: PreTrainedModel, rows: list[tuple[list[int], list[int]]], device: str, pad_id: int
) -> torch.Tensor:
    """Sum of log p(completion token | what precedes it) for each (prompt ids, completion ids), one batch."""
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (prompt, completion) in enumerate(rows):  # right padding: positions count from the start
        ids = prompt + completion
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        scored[i, len(prompt) : len(ids)] = True
    input_ids, attention, scored = input_ids.to(device), attention.to(device), scored.to(device)
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
    # the token at position t is predicted by the logits at t - 1
    token_logprobs = torch.gather(F.log_softmax(logits, dim=-1), 2, input_ids[:, 1:, None]).squeeze(2)
    return (token_logprobs * scored[:, 1:]).sum(dim=1)


def completion_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    device: str = "cpu",
    batch_size: int = 8,
    grad: bool = False,
) -> torch.Tensor:
    """``log pi(completion | prompt)`` of each pair: the summed log-probabilities of the completion's tokens.

    The end-of-sequence token is part of each completion (the model must also
    learn to stop), tokens cut as :func:`prompt_completion_ids`. With
    ``grad=True`` the result keeps the graph (for a loss); otherwise it is
    computed without gradients. Returns a float tensor, one value per pair.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    if not prompts:
        raise ValueError("no pair to score")
    rows = [prompt_completion_ids(tokenizer, p, c) for p, c in zip(prompts, completions)]
    empty = [i for i, (_, completion) in enumerate(rows) if not completion]
    if empty:
        raise ValueError(f"pairs {empty[:5]} have an empty completion")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.set_grad_enabled(grad):
        parts = [
            _summed_logprobs(model, rows[i : i + batch_size], device, pad_id) for i in range(0, len(rows), batch_size)
        ]
    return torch.cat(parts)


class DPOLoss(NamedTuple):
    """The mean DPO loss of a batch, and each pair's implicit rewards (``beta`` times the log-ratio)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
) -> DPOLoss:
    """The DPO loss from summed log-probabilities (:func:`completion_logprobs`) of the policy and the reference.

    ``-log sigmoid(beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)))``,
    averaged over pairs. At the start, when the policy is the reference, every
    log-ratio is 0 and the loss is ``log 2``. ``chosen_rewards`` and
    ``rejected_rewards`` are detached (TRL logs their mean, their margin and
    how often the chosen one is higher: its "reward accuracy").
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape, got {sorted(shapes)}")
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return DPOLoss(losses.mean(), beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def dpo_config_for(
    output_dir: str | Path,
    precision: Precision,
    device: str,
    max_steps: int,
    beta: float = 0.1,
    lr: float = 1e-6,
    batch_size: int = 8,
    seed: int = 42,
    max_length: int = 256,
    progress: bool = True,
    **settings: Any,
) -> DPOConfig:
    """A ``trl.DPOConfig`` set explicitly for this machine (current TRL API: no ``max_prompt_length``).

    Explicit where TRL's defaults do not fit: the precision flags of
    ``precision`` (TRL turns bf16 on by default; ``use_cpu=True`` on a CPU),
    activation checkpointing off (TRL turns it on), ``loss_type="sigmoid"``
    (the DPO loss of :func:`dpo_loss`), ``precompute_ref_log_probs=True`` (the
    reference's log-probabilities are computed once before training instead
    of at every step: one model in memory and half the forward passes),
    ``max_length`` (prompt and answer together), no ``pad_to_multiple_of``,
    ``report_to="none"``, nothing saved. ``lr`` defaults to TRL's 1e-6 (DPO
    moves a model far with little); a lesson chooses it on validation pairs.
    ``settings`` go on top (``loss_type`` for a variant...).
    """
    config = {
        **trl_training_settings(
            DPOConfig, output_dir, precision, device, max_steps, lr, batch_size, seed, max_length, progress
        ),
        "beta": beta,
        "loss_type": ["sigmoid"],
        "precompute_ref_log_probs": True,
    }
    return DPOConfig(**{**config, **settings})


def preferred_answer(first: str, second: str, reference: str, judge: Callable[[str, str], float]) -> int | None:
    """Which of two answers a verifiable rule prefers: 0, 1, or ``None`` when it cannot tell them apart.

    The rule: the higher ``judge(answer, reference)`` (e.g. exact match)
    wins; at equal scores, the shorter answer (in characters) wins; two
    answers of equal score and length make no pair.
    """
    scores = (judge(first, reference), judge(second, reference))
    if scores[0] != scores[1]:
        return 0 if scores[0] > scores[1] else 1
    if len(first) != len(second):
        return 0 if len(first) < len(second) else 1
    return None


def on_policy_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instructions: Dataset,
    judge: Callable[[str, str], float],
    style: str = "chat",
    device: str = "cpu",
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 42,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
) -> Dataset:
    """Preference pairs from the model's own answers: two samples per item, ranked by :func:`preferred_answer`.

    ``instructions``: rows with ``task``, ``instruction``, ``input`` and
    ``output`` (the reference ``judge`` compares with). Each item is answered
    twice by sampling (seeds ``seed`` and ``seed + 1``, through
    :func:`helpers.models.generation.answer_instructions`); an item whose two
    answers the rule cannot tell apart gives no pair. Columns: ``prompt``,
    ``chosen``, ``rejected``, ``task``, ``source`` (the item's row),
    ``chosen_score`` and ``rejected_score`` (the judge's). The pairs say what
    the model itself produces: DPO then moves probability between answers it
    actually gives, not towards texts it would never write.
    """
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
    draws = [
        answer_instructions(
            model, tokenizer, instructions, style, device, batch_size, max_new_tokens, seed=seed + k, **sampling
        )
        for k in range(2)
    ]
    rows = []
    for index, (row, first, second) in enumerate(zip(instructions, *draws)):
        winner = preferred_answer(first, second, row["output"], judge)
        if winner is None:
            continue
        chosen, rejected = (first, second) if winner == 0 else (second, first)
        rows.append(
            {
                "prompt": format_prompt(row["instruction"], row["input"], style, tokenizer),
                "chosen": chosen,
                "rejected": rejected,
                "task": row["task"],
                "source": index,
                "chosen_score": float(judge(chosen, row["output"])),
                "rejected_score": float(judge(rejected, row["output"])),
            }
        )
    columns = ["prompt", "chosen", "rejected", "task", "source", "chosen_score", "rejected_score"]
    return Dataset.from_list(rows) if rows else Dataset.from_dict({c: [] for c in columns})
