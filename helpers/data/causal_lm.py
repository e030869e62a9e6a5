"""Causal-LM training data: labels that teach only the response, collation, general text.

A causal LM learns to predict every position whose label is not ``-100``.
The source chapter sets ``labels = input_ids``: the model then also learns to
recite the prompt and, with ``padding="max_length"``, to predict padding.
:func:`tokenize_instruction` masks the prompt (``mask_prompt=True``), and
:func:`instruction_collator` pads on the right with ``-100`` labels (the
ecosystem's ``DataCollatorForSeq2Seq``, which pads ``labels`` too).
:func:`lm_examples` turns plain text into examples where every token is
learned, and :func:`mix_general_text` mixes them into a fine-tuning set.
Taught in ``course/04_gpt_instruction_tuning.ipynb`` and
``course/06_catastrophic_forgetting.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from datasets import Dataset, concatenate_datasets
from transformers import DataCollatorForSeq2Seq, PreTrainedModel, PreTrainedTokenizerBase

from helpers.data.instructions import format_prompt

__all__ = [
    "IGNORE_INDEX",
    "tokenize_instruction",
    "tokenize_instructions",
    "instruction_collator",
    "ScoredLogitsCollator",
    "accepts_scored_logits",
    "label_share",
    "lm_examples",
    "mix_general_text",
]

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy (and transformers) skips


def tokenize_instruction(
    prompt: str,
    response: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 256,
    mask_prompt: bool = True,
) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` of one prompt + response.

    The response is followed by the end-of-sequence token (so the model learns
    to stop). With ``mask_prompt`` the prompt's labels are ``-100``; without,
    ``labels`` is a copy of ``input_ids`` (the source chapter's choice). Too
    long examples lose the end of their prompt, never their response.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(response_ids) >= max_length:
        raise ValueError(f"the response alone has {len(response_ids)} tokens, more than max_length={max_length}")
    prompt_ids = prompt_ids[: max_length - len(response_ids)]
    input_ids = prompt_ids + response_ids
    labels = ([IGNORE_INDEX] * len(prompt_ids) if mask_prompt else list(prompt_ids)) + response_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def tokenize_instructions(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    style: str = "chat",
    max_length: int = 256,
    mask_prompt: bool = True,
) -> Dataset:
    """:func:`tokenize_instruction` over an instruction dataset (columns ``instruction``, ``input``, ``output``)."""

    def encode(row: dict) -> dict:
        prompt = format_prompt(row["instruction"], row["input"], style, tokenizer)
        return tokenize_instruction(prompt, row["output"], tokenizer, max_length, mask_prompt)

    return dataset.map(encode, remove_columns=dataset.column_names)


def instruction_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorForSeq2Seq:
    """Pads ``input_ids`` with the pad token and ``labels`` with ``-100``, on the right.

    Right padding for training: each sequence starts at position 0, as in
    pre-training. (Generation pads on the left: see :func:`helpers.models.generation.generate`.)
    """
    if tokenizer.padding_side != "right":
        raise ValueError(
            f"the tokenizer pads on the {tokenizer.padding_side}; training batches must be padded on the right "
            "(pass padding_side='left' to the tokenizer call for generation instead of changing the tokenizer)"
        )
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


class ScoredLogitsCollator:
    """:func:`instruction_collator`'s batches, with the output layer asked only where a label is learned.

    Position ``t`` predicts the label at ``t + 1``; with ``-100`` on the prompt,
    most positions predict nothing that the loss reads, yet a causal LM
    computes its output layer (49k classes for SmolLM2) everywhere. This adds
    ``logits_to_keep`` (the positions whose next label is learned in some row
    of the batch) and ``shift_labels`` (those labels) to the batch: the
    model's own loss is then the same number from fewer logits, and training
    is faster (measured in ``course/04_gpt_instruction_tuning.ipynb``'s
    benchmark). A batch where every position is learned is left as it is.
    Used by :func:`helpers.training.causal_lm.train_causal_lm` when the model accepts ``logits_to_keep``.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.collator = instruction_collator(tokenizer)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        targets = batch["labels"][:, 1:]
        keep = torch.nonzero((targets != IGNORE_INDEX).any(dim=0)).flatten()
        if 0 < len(keep) < targets.shape[1]:
            batch["logits_to_keep"] = keep
            batch["shift_labels"] = targets[:, keep].contiguous()
        return batch


def accepts_scored_logits(model: PreTrainedModel) -> bool:
    """True when ``model``'s forward takes ``logits_to_keep`` and its loss takes ``shift_labels`` (causal LMs of
    transformers 5), so that :class:`ScoredLogitsCollator` can serve it."""
    import inspect

    from peft import PeftModel

    if isinstance(model, PeftModel):  # PEFT passes extra keywords through to the model it wraps
        model = model.get_base_model()
    return (
        "logits_to_keep" in inspect.signature(model.forward).parameters
        and getattr(model, "loss_type", None) == "ForCausalLM"
    )


def label_share(dataset: Dataset) -> float:
    """Share of the tokens of a tokenized dataset whose label is learned (not ``-100``)."""
    learned = sum(sum(label != IGNORE_INDEX for label in labels) for labels in dataset["labels"])
    total = sum(len(labels) for labels in dataset["labels"])
    return learned / total if total else 0.0


def lm_examples(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int = 256
) -> list[dict[str, list[int]]]:
    """Plain texts as causal-LM examples: every token is learned (``labels`` = ``input_ids``), truncated to ``max_length``.

    The shape of pre-training data: used to score general text (:func:`helpers.evaluation.perplexity.text_losses`)
    and to mix general text into a fine-tuning set (the pitfalls lesson,
    ``course/06_catastrophic_forgetting.ipynb``).
    """
    encoded = [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    return [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)} for ids in encoded]


def mix_general_text(
    task_examples: Dataset,
    general_examples: Sequence[dict[str, list[int]]] | Dataset,
    general_share: float = 0.2,
    seed: int = 42,
) -> Dataset:
    """A training set of the same size as ``task_examples``, of which ``general_share`` is general text.

    The replay remedy against forgetting (the source chapter's "80 % task,
    20 % general"): ``round(general_share * n)`` task examples are replaced by
    as many general examples (from :func:`lm_examples`), so the compute
    budget stays the same. Both must be tokenized (``input_ids``,
    ``attention_mask``, ``labels``); the result is shuffled with ``seed``.
    Taught in ``course/06_catastrophic_forgetting.ipynb``.
    """
    if not 0 <= general_share < 1:
        raise ValueError(f"general_share must be in [0, 1), got {general_share}")
    columns = ["input_ids", "attention_mask", "labels"]
    general = general_examples if isinstance(general_examples, Dataset) else Dataset.from_list(list(general_examples))
    n_general = round(general_share * len(task_examples))
    if n_general > len(general):
        raise ValueError(f"{n_general} general examples needed, only {len(general)} given")
    task = task_examples.shuffle(seed=seed).select(range(len(task_examples) - n_general)).select_columns(columns)
    general = general.shuffle(seed=seed).select(range(n_general)).select_columns(columns).cast(task.features)
    return concatenate_datasets([task, general]).shuffle(seed=seed)
