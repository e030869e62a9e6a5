"""Causal-LM fine-tuning with ``Trainer``: :func:`train_causal_lm`, the course's recipe for SmolLM2.

The data side (labels that teach only the response, the collators) is
:mod:`helpers.data.causal_lm`; perplexity and per-text losses are
:mod:`helpers.evaluation.perplexity`. Taught in
``course/04_gpt_instruction_tuning.ipynb`` and
``course/06_catastrophic_forgetting.ipynb``.
"""

from __future__ import annotations

import time

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from helpers.data.causal_lm import ScoredLogitsCollator, accepts_scored_logits, instruction_collator
from helpers.device import Precision
from helpers.training.regularization import EWC, EWCTrainer
from helpers.training.trainers import release_training_precision

__all__ = ["train_causal_lm"]


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
    padded on the right by :func:`helpers.data.causal_lm.instruction_collator`, with logits only where a label is learned
    (:class:`helpers.data.causal_lm.ScoredLogitsCollator`) when the model allows it; the learning-rate
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
