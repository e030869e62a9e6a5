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
``trl.DPOTrainer`` on the same batch. :class:`DPOObjective` makes the policy
return that loss, so that the course's own loop
(:func:`helpers.training.loops.train_loop`) trains it: :func:`train_dpo`,
with the reference's log-probabilities computed once
(:func:`reference_logprobs`). Rows are padded on the left and only the
positions that predict an answer token are projected on the vocabulary: with
one-word answers after a 60-token prompt, a training step costs about half of
TRL's on a CPU (measured on SmolLM2-135M).
:func:`dpo_config_for` is the library way, set explicitly where TRL's
defaults do not fit a laptop (as :func:`helpers.training.lora.sft_config_for`).
For the preference-tuning lesson (issue 34), with RPO's supervised term
(:func:`chosen_nll`), SimPO (:func:`simpo_config_for`) and GRPO (:func:`grpo_config_for`); the pairs
come from :mod:`helpers.data.preferences` and :func:`on_policy_pairs`.
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
from helpers.device import FP32, Precision
from helpers.models.generation import answer_instructions
from helpers.training.lora import trl_training_settings

__all__ = [
    "DPOLoss",
    "DPOObjective",
    "chosen_nll",
    "completion_logprobs",
    "dpo_config_for",
    "dpo_loss",
    "grpo_config_for",
    "on_policy_pairs",
    "pad_pairs_left",
    "preference_batches",
    "preferred_answer",
    "prompt_completion_ids",
    "reference_logprobs",
    "sequence_logprobs",
    "simpo_config_for",
    "train_dpo",
    "trl_pair_loss",
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


def pad_pairs_left(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``completion_mask`` of (prompt ids, completion ids) rows, padded left.

    Left padding puts every completion at the end of its row, so the logits
    of the last ``completion_mask.shape[1] - first scored column`` positions
    are all the loss needs (:func:`sequence_logprobs`). Rotary positions only
    enter attention as differences, so a left-padded row scores as the same
    row unpadded (tested against TRL, which pads right).
    """
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        start = width - len(prompt) - len(answer)
        input_ids[i, start:] = torch.tensor(prompt + answer)
        attention[i, start:] = 1
        completion[i, width - len(answer) :] = 1
    return input_ids, attention, completion


def sequence_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """Summed log-probability of the tokens marked by ``completion_mask`` in each left-padded row.

    Only the positions that predict a completion token get logits
    (``logits_to_keep``): with one-word answers after a 60-token prompt, the
    vocabulary projection of every prompt position would cost more than the
    answers themselves.
    """
    answer_width = int(completion_mask.sum(dim=1).max())
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=answer_width + 1).logits
    logits = logits[:, :-1].float()  # the logits at position t predict the token at t + 1
    targets = input_ids[:, -answer_width:]
    token_logprobs = torch.gather(F.log_softmax(logits, dim=-1), 2, targets[:, :, None]).squeeze(2)
    return (token_logprobs * completion_mask[:, -answer_width:]).sum(dim=1)


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


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
    with torch.set_grad_enabled(grad):
        return _rows_logprobs(model, rows, _pad_id(tokenizer), device, batch_size)


def _rows_logprobs(
    model: PreTrainedModel, rows: list[tuple[list[int], list[int]]], pad_id: int, device: str, batch_size: int
) -> torch.Tensor:
    """:func:`sequence_logprobs` of (prompt ids, completion ids) rows, ``batch_size`` rows at a time."""
    parts = []
    for i in range(0, len(rows), batch_size):
        tensors = pad_pairs_left(rows[i : i + batch_size], pad_id)
        parts.append(sequence_logprobs(model, *(t.to(device) for t in tensors)))
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


def chosen_nll(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """The chosen answers' negative log-likelihood per token over a batch: ``-sum(log pi(chosen)) / tokens``.

    The supervised term that RPO (Pang et al. 2024) adds to DPO, TRL's
    ``loss_type="sft"``: summed log-probabilities (:func:`completion_logprobs`)
    and each chosen answer's token count (its end-of-sequence token included).
    """
    if policy_chosen.shape != chosen_tokens.shape:
        raise ValueError(f"{tuple(policy_chosen.shape)} log-probabilities for {tuple(chosen_tokens.shape)} counts")
    return -policy_chosen.sum() / chosen_tokens.sum()


class DPOObjective(torch.nn.Module):
    """A policy whose forward pass on a batch of pairs returns the DPO loss: what a training loop needs.

    Wraps ``model`` (the policy; its parameters with ``requires_grad`` are
    the ones trained) so that :func:`helpers.training.loops.train_loop`, the
    course's loop of lesson 03, trains it unchanged: warmup and decay,
    clipping, precision. A batch (from :func:`preference_batches`) holds each
    pair's chosen then rejected row, left-padded, and the reference's
    log-probabilities of both, computed once before training
    (:func:`reference_logprobs`), as TRL's ``precompute_ref_log_probs`` does.

    The loss is ``dpo_weight * DPO + sft_weight * NLL(chosen)``
    (:func:`chosen_nll`): ``sft_weight=0`` is DPO, ``sft_weight > 0`` RPO
    (TRL: ``loss_type=["sigmoid", "sft"]``, ``loss_weights=[dpo_weight,
    sft_weight]``), ``dpo_weight=0`` supervised training on the chosen
    answers alone, on the same batches (the control that tells what the
    preference term adds).
    """

    def __init__(self, model: PreTrainedModel, beta: float, sft_weight: float = 0.0, dpo_weight: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if sft_weight < 0 or dpo_weight < 0 or sft_weight + dpo_weight == 0:
            raise ValueError(f"weights must be >= 0 and not both 0, got sft {sft_weight}, dpo {dpo_weight}")
        self.model, self.beta, self.sft_weight, self.dpo_weight = model, beta, sft_weight, dpo_weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        reference_chosen: torch.Tensor,
        reference_rejected: torch.Tensor,
    ) -> DPOLoss:
        logps = sequence_logprobs(self.model, input_ids, attention_mask, completion_mask)
        chosen, rejected = logps.chunk(2)  # the batch is [chosen rows, rejected rows]
        result = dpo_loss(chosen, rejected, reference_chosen.to(logps), reference_rejected.to(logps), self.beta)
        loss = self.dpo_weight * result.loss
        if self.sft_weight:
            loss = loss + self.sft_weight * chosen_nll(chosen, completion_mask.chunk(2)[0].sum(dim=1))
        return result._replace(loss=loss)


def _pair_rows(tokenizer: PreTrainedTokenizerBase, pairs: Dataset) -> list[tuple[list[int], list[int], list[int]]]:
    rows = []
    for prompt, chosen, rejected in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]):
        prompt_ids, chosen_ids = prompt_completion_ids(tokenizer, prompt, chosen)
        rejected_prompt, rejected_ids = prompt_completion_ids(tokenizer, prompt, rejected)
        if rejected_prompt != prompt_ids:  # the two answers must be scored after the same prompt tokens
            cut = _common_prefix(prompt_ids, rejected_prompt)
            chosen_ids, rejected_ids = prompt_ids[cut:] + chosen_ids, rejected_prompt[cut:] + rejected_ids
            prompt_ids = prompt_ids[:cut]
        rows.append((prompt_ids, chosen_ids, rejected_ids))
    return rows


def preference_batches(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Dataset,
    reference: tuple[torch.Tensor, torch.Tensor],
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int = 42,
) -> torch.utils.data.DataLoader:
    """Batches of ``batch_size`` pairs for :class:`DPOObjective`: chosen rows, then rejected rows, left-padded.

    ``reference``: the reference model's ``(chosen, rejected)``
    log-probabilities of every pair (:func:`reference_logprobs`), in the
    order of ``pairs``. Shuffled with ``seed`` when ``shuffle``.
    """
    rows = _pair_rows(tokenizer, pairs)
    if len(reference[0]) != len(rows) or len(reference[1]) != len(rows):
        raise ValueError(f"reference has {len(reference[0])} values for {len(rows)} pairs")
    pad_id = _pad_id(tokenizer)

    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        sequences = [(rows[i][0], rows[i][1]) for i in indices] + [(rows[i][0], rows[i][2]) for i in indices]
        input_ids, attention, completion = pad_pairs_left(sequences, pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "completion_mask": completion,
            "reference_chosen": reference[0][indices],
            "reference_rejected": reference[1][indices],
        }

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        list(range(len(rows))), batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate
    )


def reference_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Dataset,
    device: str = "cpu",
    batch_size: int = 16,
    precision: Precision | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log pi(chosen | prompt), log pi(rejected | prompt))`` of every pair under ``model``, without gradients.

    Computed once, before training, with the model that will be the frozen
    reference (the SFT model): a β sweep on the same pairs reuses them. The
    tokens scored are exactly those :class:`DPOObjective` scores in training
    (the rows of :func:`preference_batches`, both answers after the same
    prompt tokens), in ``precision``'s arithmetic (fp32 when ``None``): at the
    first update the policy is the reference and the loss is ``log 2``.
    """
    rows, pad_id = _pair_rows(tokenizer, pairs), _pad_id(tokenizer)
    with torch.no_grad(), (precision or FP32).autocast(device):
        chosen = _rows_logprobs(model, [(prompt, answer) for prompt, answer, _ in rows], pad_id, device, batch_size)
        rejected = _rows_logprobs(model, [(prompt, answer) for prompt, _, answer in rows], pad_id, device, batch_size)
    return chosen.float().cpu(), rejected.float().cpu()


def train_dpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Dataset,
    reference: tuple[torch.Tensor, torch.Tensor],
    beta: float = 0.1,
    lr: float = 1e-4,
    epochs: int = 1,
    batch_size: int = 8,
    seed: int = 42,
    device: str = "cpu",
    precision: Precision | None = None,
    warmup_ratio: float = 0.1,
    progress: bool = True,
    sft_weight: float = 0.0,
    dpo_weight: float = 1.0,
) -> dict:
    """Train ``model`` in place with the DPO loss on ``pairs``; returns :func:`helpers.training.loops.train_loop`'s history.

    The parameters with ``requires_grad`` train (freeze before calling), with
    AdamW (:func:`helpers.training.freezing.optimizer_for`, no weight decay),
    ``warmup_ratio`` of warmup then a linear decay, gradients clipped at 1.
    ``reference``: :func:`reference_logprobs` of the starting model on the
    same ``pairs``. ``sft_weight`` and ``dpo_weight`` weigh the supervised
    and preference terms (:class:`DPOObjective`: RPO, or the chosen answers
    alone). The history's ``loss`` is the training loss of each update.
    For the preference-tuning lesson (issue 34).
    """
    from helpers.training.freezing import optimizer_for
    from helpers.training.loops import train_loop

    torch.manual_seed(seed)
    objective = DPOObjective(model, beta, sft_weight, dpo_weight)
    loader = preference_batches(tokenizer, pairs, reference, batch_size, shuffle=True, seed=seed)
    optimizer = optimizer_for(model, lr, weight_decay=0.0)
    history = train_loop(
        objective,
        loader,
        optimizer,
        num_epochs=epochs,
        device=device,
        precision=precision or FP32,
        warmup_ratio=warmup_ratio,
        progress=progress,
    )
    model.eval()
    return history


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


def simpo_config_for(
    output_dir: str | Path,
    precision: Precision,
    device: str,
    max_steps: int,
    beta: float = 2.0,
    gamma: float = 1.0,
    lr: float = 1e-6,
    batch_size: int = 8,
    seed: int = 42,
    max_length: int = 256,
    progress: bool = True,
    **settings: Any,
) -> Any:
    """A ``CPOConfig`` for SimPO (Meng et al. 2024), TRL's reference-free variant, set for this machine.

    SimPO compares the answers' **mean** log-probability per token, scaled by
    ``beta``, and asks the chosen one to win by a margin ``gamma``:
    ``-log sigmoid(beta * (mean log pi(chosen) - mean log pi(rejected)) - gamma)``.
    No reference model: half the forward passes of DPO, and no anchor either.
    TRL runs it in its experimental ``CPOTrainer`` (``loss_type="simpo"``,
    ``cpo_alpha=0``: no supervised term); the import may move, so
    ``tests/test_api_drift.py`` checks it. The paper's settings are a
    ``beta`` of 2 to 2.5 and ``gamma / beta`` near 0.5. Settings shared with
    :func:`dpo_config_for` (precision flags, no checkpointing, nothing saved).
    """
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # this docstring says it is experimental, once
    from trl.experimental.cpo import CPOConfig

    config = trl_training_settings(
        CPOConfig, output_dir, precision, device, max_steps, lr, batch_size, seed, max_length, progress
    )
    config.pop("pad_to_multiple_of")  # CPOConfig has no such field
    config |= {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": beta, "simpo_gamma": gamma}
    return CPOConfig(**{**config, **settings})


def grpo_config_for(
    output_dir: str | Path,
    precision: Precision,
    device: str,
    max_steps: int,
    lr: float = 1e-6,
    prompts_per_step: int = 2,
    generations: int = 8,
    max_completion_length: int = 8,
    temperature: float = 1.0,
    seed: int = 42,
    progress: bool = True,
    **settings: Any,
) -> Any:
    """A ``trl.GRPOConfig`` set for this machine: ``generations`` sampled answers for each of ``prompts_per_step``
    questions per step, answers of at most ``max_completion_length`` tokens, no KL term (``beta=0``, TRL's default).

    GRPO (Shao et al. 2024) scores every answer of a group with a reward
    function and moves each by its advantage: its reward minus the group's
    mean, divided by the group's spread; a group whose answers all score
    alike gives no signal. Settings shared with :func:`dpo_config_for`
    (precision flags, no checkpointing, nothing saved), but ``max_length``.
    For the preference-tuning benchmark (issue 34).
    """
    from trl import GRPOConfig

    batch_size = prompts_per_step * generations  # GRPO's batch counts answers
    config = trl_training_settings(
        GRPOConfig, output_dir, precision, device, max_steps, lr, batch_size, seed, None, progress
    )
    config.pop("max_length")  # GRPOConfig bounds the answers only (max_completion_length)
    config |= {
        "num_generations": generations,
        "max_completion_length": max_completion_length,
        "temperature": temperature,
        "beta": 0.0,
        "logging_steps": 1,
    }
    return GRPOConfig(**{**config, **settings})


def trl_pair_loss(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Dataset,
    config: DPOConfig,
) -> float:
    """TRL's own loss on ``pairs`` as one batch (``DPOTrainer.compute_loss``), to check a loss written by hand.

    ``config`` (e.g. :func:`dpo_config_for`, with ``loss_type`` and
    ``loss_weights`` for RPO) sets β and the loss; the reference model runs on
    the batch itself. Both models are scored in eval mode, without gradients.
    TRL gets copies: Accelerate replaces the ``forward`` of the models a
    trainer prepares, and a later ``copy.deepcopy`` of such a model would run
    the original's weights (its copies would get no gradient).
    """
    import copy

    from trl import DPOTrainer

    config = copy.deepcopy(config)
    config.precompute_ref_log_probs, config.per_device_eval_batch_size = False, len(pairs)
    policy, reference = copy.deepcopy(policy), copy.deepcopy(reference)
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        train_dataset=pairs,
        eval_dataset=pairs,
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_eval_dataloader()))  # in order: the pairs as given
    policy.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def preferred_answer(first: str, second: str, reference: str, judge: Callable[[str, str], float]) -> int | None:
    """Which of two answers a verifiable rule prefers: 0, 1, or ``None`` when it cannot tell them apart.

    The rule: the higher ``judge(answer, reference)`` (e.g. exact match)
    wins; at equal scores, the shorter answer (in characters) wins; two
    answers of equal score and length make no pair.
    """
    return _ranked(first, second, judge(first, reference), judge(second, reference))


def _ranked(first: str, second: str, first_score: float, second_score: float) -> int | None:
    if first_score != second_score:
        return 0 if first_score > second_score else 1
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
        scores = (float(judge(first, row["output"])), float(judge(second, row["output"])))  # once per answer
        winner = _ranked(first, second, *scores)
        if winner is None:
            continue
        rows.append(
            {
                "prompt": format_prompt(row["instruction"], row["input"], style, tokenizer),
                "chosen": (first, second)[winner],
                "rejected": (first, second)[1 - winner],
                "task": row["task"],
                "source": index,
                "chosen_score": scores[winner],
                "rejected_score": scores[1 - winner],
            }
        )
    columns = ["prompt", "chosen", "rejected", "task", "source", "chosen_score", "rejected_score"]
    return Dataset.from_list(rows) if rows else Dataset.from_dict({c: [] for c in columns})
