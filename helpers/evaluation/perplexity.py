"""How well a causal LM predicts text: token losses, per-text losses and perplexity.

Position ``t`` predicts the label at ``t + 1`` (as in the model's own loss);
only labelled positions (not ``-100``) are scored, and every token counts the
same. :func:`text_losses` gives one value per text (for intervals and paired
comparisons), :func:`perplexity` the ``exp`` of the mean loss,
:func:`response_perplexity` the perplexity of reference answers given their
prompt. Taught in ``course/04_gpt_instruction_tuning.ipynb`` and
``course/06_catastrophic_forgetting.ipynb``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import DataCollatorForSeq2Seq, PreTrainedModel, PreTrainedTokenizerBase

from helpers.data.causal_lm import IGNORE_INDEX, instruction_collator, lm_examples, tokenize_instructions
from helpers.device import to_device

__all__ = ["token_losses", "mean_token_loss", "text_losses", "perplexity", "response_losses", "response_perplexity"]


def _scored_logits(model: PreTrainedModel, batch: dict, scored: torch.Tensor) -> torch.Tensor:
    """Logits at the positions ``scored`` (a ``(batch, length - 1)`` mask of positions whose next token is scored).

    The output layer (49k classes for SmolLM2: a fifth of the model's work per
    token) is applied only where a loss is read, from the decoder's last hidden
    states; the full forward pass is the fallback for a model that does not
    expose them that way or rescales its logits.
    """
    decoder, head = getattr(model, "get_decoder", lambda: None)(), model.get_output_embeddings()
    if decoder is None or head is None or getattr(model.config, "final_logit_softcapping", None):
        return model(**batch).logits[:, :-1][scored]
    hidden = decoder(**batch).last_hidden_state[:, :-1]
    return head(hidden[scored])


@torch.inference_mode()
def token_losses(model: PreTrainedModel, loader: DataLoader, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Summed cross-entropy and number of predicted tokens of every row of every batch (``labels`` != -100).

    Position ``t`` predicts the label at ``t + 1``, as in the model's own loss.
    """
    model.eval()
    sums, counts = [], []
    for batch in loader:
        batch = to_device(batch, device)
        targets = batch.pop("labels")[:, 1:]
        scored = targets != IGNORE_INDEX
        logits = _scored_logits(model, batch, scored)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 scored in fp32
        losses = torch.zeros(targets.shape, dtype=logits.dtype, device=logits.device)
        losses[scored] = F.cross_entropy(logits, targets[scored], reduction="none")  # classes on the last axis
        sums.append(losses.sum(dim=1).cpu().numpy())
        counts.append(scored.sum(dim=1).cpu().numpy())
    return np.concatenate(sums), np.concatenate(counts)


def _losses_by_length(
    model: PreTrainedModel,
    rows: Sequence[dict] | Dataset,
    collator,
    device: str,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`token_losses` of ``rows`` in batches of similar lengths (little padding), returned in ``rows``' order."""
    order = np.argsort(
        [len(ids) for ids in rows["input_ids"]]
        if isinstance(rows, Dataset)
        else [len(row["input_ids"]) for row in rows],
        kind="stable",
    )
    ordered = rows.select(order) if isinstance(rows, Dataset) else [rows[i] for i in order]
    sums, counts = token_losses(model, DataLoader(ordered, batch_size=batch_size, collate_fn=collator), device)
    unsorted_sums, unsorted_counts = np.empty_like(sums), np.empty_like(counts)
    unsorted_sums[order], unsorted_counts[order] = sums, counts
    return unsorted_sums, unsorted_counts


def mean_token_loss(model: PreTrainedModel, loader: DataLoader, device: str = "cpu") -> tuple[float, int]:
    """Mean cross-entropy per predicted token over batches with ``labels``, and the number of tokens.

    Every token counts the same, whatever its batch (a mean of batch means would
    over-weight short batches).
    """
    sums, counts = token_losses(model, loader, device)
    return _mean_loss(sums, counts), int(counts.sum())


def _mean_loss(sums: np.ndarray, counts: np.ndarray) -> float:
    if counts.sum() == 0:
        raise ValueError("no labelled tokens to score")
    return float(sums.sum() / counts.sum())


def _text_token_losses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: str,
    batch_size: int,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    rows = lm_examples(texts, tokenizer, max_length)
    return _losses_by_length(model, rows, DataCollatorForSeq2Seq(tokenizer, padding=True), device, batch_size)


def text_losses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 8,
    max_length: int = 256,
) -> np.ndarray:
    """Mean cross-entropy per predicted token of each text, one value per text (``exp`` of it: its perplexity).

    Per-item values for a bootstrap interval or a paired comparison of two
    models on the same texts (``course/06_catastrophic_forgetting.ipynb``).
    """
    sums, counts = _text_token_losses(model, tokenizer, texts, device, batch_size, max_length)
    if (counts == 0).any():
        raise ValueError("a text has fewer than 2 tokens: nothing to predict")
    return sums / counts


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 8,
    max_length: int = 256,
) -> float:
    """Perplexity of ``texts``: ``exp`` of the mean loss per predicted token (lower is better).

    Each text is scored on its own (truncated to ``max_length`` tokens);
    padding is never scored. Every token counts the same (a long text weighs
    more than a short one; :func:`text_losses` gives one value per text).
    """
    sums, counts = _text_token_losses(model, tokenizer, texts, device, batch_size, max_length)
    return math.exp(_mean_loss(sums, counts))


def response_losses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    style: str = "chat",
    device: str = "cpu",
    batch_size: int = 8,
    max_length: int = 256,
    score_end: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed loss and token count of the reference ``output`` of each instruction, given its prompt, one per item.

    ``sums / counts`` is each response's mean loss (nats per token): the
    per-item scores with which two prompt formats are compared on the same
    items (paired); ``exp(sums.sum() / counts.sum())`` is
    :func:`response_perplexity`. With ``score_end=False`` the
    end-of-sequence token after each response is not scored: only the
    answer's own tokens count (a model that has learned *when to stop* would
    otherwise look as if it knew the answers better). Taught in
    ``course/04_gpt_instruction_tuning.ipynb`` (the choice of the format).
    """
    tokenized = tokenize_instructions(dataset, tokenizer, style, max_length, mask_prompt=True)
    if not score_end:  # every response ends with the end-of-sequence token: leave it out of the loss
        tokenized = tokenized.map(lambda row: {"labels": row["labels"][:-1] + [IGNORE_INDEX]})
    return _losses_by_length(model, tokenized, instruction_collator(tokenizer), device, batch_size)


def response_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    style: str = "chat",
    device: str = "cpu",
    batch_size: int = 8,
    max_length: int = 256,
    by_task: bool = False,
) -> float | dict[str, float]:
    """Perplexity of the reference ``output`` of each instruction, given its prompt (prompt tokens not scored).

    With ``by_task`` (needs a ``task`` column): ``{task: perplexity, ..., "all": perplexity}``
    from one pass over the data.
    """
    sums, counts = response_losses(model, tokenizer, dataset, style, device, batch_size, max_length)
    overall = math.exp(_mean_loss(sums, counts))
    if not by_task:
        return overall
    tasks = np.asarray(dataset["task"])
    result = {task: math.exp(_mean_loss(sums[tasks == task], counts[tasks == task])) for task in dict.fromkeys(tasks)}
    return result | {"all": overall}
