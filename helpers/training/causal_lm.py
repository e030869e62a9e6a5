"""Causal-LM training data: labels that teach only the response, and perplexity.

A causal LM learns to predict every position whose label is not ``-100``.
The source chapter sets ``labels = input_ids``: the model then also learns to
recite the prompt and, with ``padding="max_length"``, to predict padding.
:func:`tokenize_instruction` masks the prompt (``mask_prompt=True``), and
:func:`instruction_collator` pads on the right with ``-100`` labels (the
ecosystem's ``DataCollatorForSeq2Seq``, which pads ``labels`` too).
Taught in ``course/04_gpt_instruction_tuning.ipynb``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, concatenate_datasets
from torch.utils.data import DataLoader
from transformers import DataCollatorForSeq2Seq, PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from helpers.data.instructions import format_prompt
from helpers.device import Precision
from helpers.training.loops import to_device
from helpers.training.regularization import EWC, EWCTrainer
from helpers.training.trainers import release_training_precision

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
    pre-training. (Generation pads on the left: see :func:`helpers.generation.generate`.)
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
    Used by :func:`train_causal_lm` when the model accepts ``logits_to_keep``.
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


def lm_examples(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int = 256
) -> list[dict[str, list[int]]]:
    """Plain texts as causal-LM examples: every token is learned (``labels`` = ``input_ids``), truncated to ``max_length``.

    The shape of pre-training data: used to score general text (:func:`text_losses`)
    and to mix general text into a fine-tuning set (the pitfalls lesson,
    ``course/06_catastrophic_forgetting.ipynb``).
    """
    encoded = [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    return [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)} for ids in encoded]


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
    tokenized = tokenize_instructions(dataset, tokenizer, style, max_length, mask_prompt=True)
    sums, counts = _losses_by_length(model, tokenized, instruction_collator(tokenizer), device, batch_size)
    overall = math.exp(_mean_loss(sums, counts))
    if not by_task:
        return overall
    tasks = np.asarray(dataset["task"])
    result = {task: math.exp(_mean_loss(sums[tasks == task], counts[tasks == task])) for task in dict.fromkeys(tasks)}
    return result | {"all": overall}


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


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    precision: Precision,
    output_dir: str,
    learning_rate: float = 1e-4,
    epochs: float = 1.0,
    batch_size: int = 8,
    seed: int = 42,
    ewc: EWC | None = None,
    lr_scheduler_type: str = "constant_with_warmup",
    warmup: float = 0.1,
    progress: bool = True,
    accumulation: int = 1,
    eval_dataset: Dataset | None = None,
    evaluations: int = 4,
    group_by_length: bool = False,
    callbacks: list | None = None,
) -> tuple[Trainer, float]:
    """Fine-tune ``model`` in place with ``Trainer`` on tokenized examples; returns ``(trainer, seconds)``.

    The parameters that train are those with ``requires_grad`` (freeze
    before calling). With ``ewc`` the loss adds its penalty
    (:class:`helpers.training.regularization.EWCTrainer`). Batches are
    padded on the right by :func:`instruction_collator`, with logits only where a label is learned
    (:class:`ScoredLogitsCollator`) when the model allows it; the learning-rate
    schedule is ``lr_scheduler_type`` with ``warmup`` (a share of the steps).
    Nothing is saved to ``output_dir``. ``precision`` is ``env.precision``.
    ``accumulation``: gradient accumulation steps (an update every
    ``batch_size * accumulation`` examples). With ``eval_dataset`` the
    validation loss is computed ``evaluations`` times during training (for the
    curve). ``group_by_length`` batches examples of similar length (less
    padding, lesson 02). ``callbacks``: ``TrainerCallback`` objects added to the
    trainer (:class:`helpers.training.adaptation.TrainingStateProbe`). Taught in ``course/04_gpt_instruction_tuning.ipynb``
    and ``course/06_catastrophic_forgetting.ipynb``.
    """
    updates = max(1, -(-len(train_dataset) // (batch_size * accumulation)) * int(max(1, epochs)))
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        per_device_eval_batch_size=8,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        lr_scheduler_type=lr_scheduler_type,
        warmup_steps=warmup,  # a float below 1: a share of the training steps
        weight_decay=0.0,
        logging_steps=max(1, updates // 20),
        eval_strategy="steps" if eval_dataset is not None else "no",
        eval_steps=max(1, updates // evaluations),
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        save_strategy="no",
        report_to="none",
        seed=seed,
        disable_tqdm=not progress,
        dataloader_pin_memory=precision.device == "cuda",
        **precision.trainer_kwargs(),
    )
    collator = ScoredLogitsCollator(tokenizer) if accepts_scored_logits(model) else instruction_collator(tokenizer)
    common = dict(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer = EWCTrainer(**common, ewc=ewc) if ewc is not None else Trainer(**common)
    if not progress:
        trainer.remove_callback(PrinterCallback)  # without a progress bar, Trainer prints every log line
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    release_training_precision(trainer)  # scored afterwards in the starting model's precision
    return trainer, seconds
