"""From tokenized examples to batches: the three padding strategies and how much they waste.

``padding="max_length", max_length=512`` (as the source chapter does) pads a
20-token review to 512 positions; dynamic padding pads each batch only to its
longest text; length grouping puts texts of similar length together so that
even that padding shrinks. Taught in ``course/02_data_preparation.ipynb``;
the loaders are reused by the training lessons.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

__all__ = ["PADDING_STRATEGIES", "tokenize_for_classification", "make_loader", "padding_share", "batches_by_length"]

PADDING_STRATEGIES = ("max_length", "dynamic", "length_grouped")


def tokenize_for_classification(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int = 128, text_column: str = "text"
) -> Dataset:
    """Tokenize without padding (a collator pads per batch) and keep only model inputs and ``labels``."""
    tokenized = dataset.map(
        lambda batch: tokenizer(batch[text_column], truncation=True, max_length=max_length), batched=True
    )
    if "label" in tokenized.column_names:
        tokenized = tokenized.rename_column("label", "labels")
    keep = {"input_ids", "attention_mask", "token_type_ids", "labels"}
    return tokenized.remove_columns([c for c in tokenized.column_names if c not in keep])


def make_loader(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 32,
    padding: str = "dynamic",
    max_length: int = 512,
    shuffle: bool = True,
    seed: int = 42,
) -> DataLoader:
    """A DataLoader over a tokenized dataset with one of :data:`PADDING_STRATEGIES`.

    ``"max_length"`` pads every batch to ``max_length``; ``"dynamic"`` pads to the
    longest text of each batch; ``"length_grouped"`` also draws batches of
    similar lengths (transformers' ``LengthGroupedSampler``, seeded).
    """
    if padding not in PADDING_STRATEGIES:
        raise ValueError(f"padding must be one of {PADDING_STRATEGIES}, got {padding!r}")
    if padding == "max_length":
        collate = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_length)
    else:
        collate = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    if padding == "length_grouped":
        lengths = [len(ids) for ids in dataset["input_ids"]]
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate)


def padding_share(loader: DataLoader) -> float:
    """Share of the positions the model computes that are padding (attention mask 0)."""
    padded = total = 0
    for batch in loader:
        mask = batch["attention_mask"]
        padded += int((mask == 0).sum())
        total += mask.numel()
    return padded / total if total else 0.0


def batches_by_length(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: str | torch.device,
    batch_size: int,
    max_length: int | None,
    progress: bool,
    desc: str,
    return_tensors: str = "pt",
) -> Iterator[tuple[np.ndarray, Any]]:
    """``(indices, tokenized batch)`` pairs, texts sorted by length so that each batch pads little.

    Used for inference (:mod:`helpers.models.inference`, the ONNX export, linear probes): the
    predictions are put back in the texts' order with the indices.

    ``return_tensors="np"`` gives numpy batches (for onnxruntime); ``device`` then does not apply.
    """
    order = np.argsort([len(text) for text in texts], kind="stable")
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors=return_tensors,
        )
        yield idx, batch.to(device) if return_tensors == "pt" else batch
