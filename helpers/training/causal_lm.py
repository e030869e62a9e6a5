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


def label_share(dataset: Dataset) -> float:
    """Share of the tokens of a tokenized dataset whose label is learned (not ``-100``)."""
    learned = sum(sum(label != IGNORE_INDEX for label in labels) for labels in dataset["labels"])
    total = sum(len(labels) for labels in dataset["labels"])
    return learned / total if total else 0.0


@torch.inference_mode()
def token_losses(model: PreTrainedModel, loader: DataLoader, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Summed cross-entropy and number of predicted tokens of every row of every batch (``labels`` != -100).

    Position ``t`` predicts the label at ``t + 1``, as in the model's own loss.
    """
    model.eval()
    sums, counts = [], []
    for batch in loader:
        batch = to_device(batch, device)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 scored in fp32
        targets = labels[:, 1:]
        # Classes on the last axis: torch's log-softmax over a middle axis ((batch, vocab, length)
        # layout) is less accurate in float32 on some CPUs (~1e-4 of a loss over 49k classes).
        losses = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(targets.shape)  # (batch, length - 1), 0 where ignored
        sums.append(losses.sum(dim=1).cpu().numpy())
        counts.append((targets != IGNORE_INDEX).sum(dim=1).cpu().numpy())
    return np.concatenate(sums), np.concatenate(counts)


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


def lm_examples(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int = 256) -> list[dict[str, list[int]]]:
    """Plain texts as causal-LM examples: every token is learned (``labels`` = ``input_ids``), truncated to ``max_length``.

    The shape of pre-training data: used to score general text (:func:`text_losses`)
    and to mix general text into a fine-tuning set (the pitfalls lesson,
    ``course/06_catastrophic_forgetting.ipynb``).
    """
    encoded = [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    return [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)} for ids in encoded]


def _text_token_losses(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], device: str, batch_size: int,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    rows = lm_examples(texts, tokenizer, max_length)
    loader = DataLoader(rows, batch_size=batch_size, collate_fn=DataCollatorForSeq2Seq(tokenizer, padding=True))
    return token_losses(model, loader, device)


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
    loader = DataLoader(tokenized, batch_size=batch_size, collate_fn=instruction_collator(tokenizer))
    sums, counts = token_losses(model, loader, device)
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
) -> tuple[Trainer, float]:
    """Fine-tune ``model`` in place with ``Trainer`` on tokenized examples; returns ``(trainer, seconds)``.

    The parameters that train are those with ``requires_grad`` (freeze
    before calling). With ``ewc`` the loss adds its penalty
    (:class:`helpers.training.regularization.EWCTrainer`). Batches are
    padded on the right by :func:`instruction_collator`; the learning-rate
    schedule is ``lr_scheduler_type`` with ``warmup`` (a share of the steps).
    Nothing is saved to ``output_dir``. ``precision`` is ``env.precision``.
    ``accumulation``: gradient accumulation steps (an update every
    ``batch_size * accumulation`` examples). With ``eval_dataset`` the
    validation loss is computed ``evaluations`` times during training (for the
    curve). ``group_by_length`` batches examples of similar length (less
    padding, lesson 02). Taught in ``course/04_gpt_instruction_tuning.ipynb``
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
    common = dict(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                  data_collator=instruction_collator(tokenizer), processing_class=tokenizer)
    trainer = EWCTrainer(**common, ewc=ewc) if ewc is not None else Trainer(**common)
    if not progress:
        trainer.remove_callback(PrinterCallback)  # without a progress bar, Trainer prints every log line
    start = time.perf_counter()
    trainer.train()
    return trainer, time.perf_counter() - start
