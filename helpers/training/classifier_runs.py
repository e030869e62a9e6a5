"""One call per training run: a MiniLM classifier trained with ``Trainer`` under one setting, then its probabilities.

Lessons that compare many settings on the same budget (dropout rates,
weight decay, early stopping, class weights, focal loss, resampled data)
would otherwise repeat the same twenty lines of ``TrainingArguments`` for
each run. :func:`train_classifier` is those lines, with the current
``Trainer`` API (``eval_strategy``, ``save_strategy="best"``,
``load_best_model_at_end``, ``EarlyStoppingCallback``, ``report_to="none"``)
as taught in ``course/03_bert_classification.ipynb``:

- ``eval_sets={"train": ..., "validation": ...}`` evaluates on each data set
  at every epoch (``eval_train_loss``, ``eval_validation_accuracy``, ... in
  ``trainer.state.log_history``): the training *and* validation curves;
- ``early_stopping_patience=k`` stops after ``k`` epochs without a better
  validation accuracy **and restores the weights of the best epoch**
  (``load_best_model_at_end=True``; without it the model kept is the last
  one, already past its best);
- ``loss_fn`` trains with another loss (class-weighted cross-entropy, focal
  loss) through :class:`helpers.training.trainers.LossTrainer`.

:func:`predict_probabilities` returns the softmax probabilities in the order
of the data set. Taught in ``course/07_overfitting_imbalance.ipynb``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)

from helpers.device import FP32, Precision
from helpers.training.trainers import (
    LossFn,
    LossTrainer,
    course_training_arguments,
    release_training_precision,
    trainer_accuracy,
)

__all__ = ["ClassifierRun", "train_classifier", "predict_probabilities"]


@dataclass
class ClassifierRun:
    """A finished run: its ``Trainer`` (model, ``state.log_history``), wall time and epochs actually run."""

    trainer: Trainer
    seconds: float
    epochs: float
    examples_seen: int

    @property
    def model(self) -> PreTrainedModel:
        return self.trainer.model

    def epoch_metrics(self) -> list[dict]:
        """The evaluation rows of the log (one per epoch), without the training-loss rows."""
        return [row for row in self.trainer.state.log_history if any(k.startswith("eval_") for k in row)]


def train_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_data: Dataset,
    output_dir: str | Path,
    num_epochs: float,
    eval_sets: dict[str, Dataset] | None = None,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    weight_decay: float = 0.0,
    warmup: float = 0.1,
    early_stopping_patience: int | None = None,
    loss_fn: LossFn | None = None,
    precision: Precision = FP32,
    seed: int = 42,
    progress: bool = True,
    callbacks: list | None = None,
) -> ClassifierRun:
    """Train ``model`` on tokenized ``train_data`` with ``Trainer`` and return the run.

    ``eval_sets`` maps names to tokenized data sets evaluated at every epoch
    (one of them must be ``"validation"`` for ``early_stopping_patience``);
    without it nothing is evaluated during training. With
    ``early_stopping_patience``, training stops after that many epochs
    without a better ``validation`` accuracy and the best epoch's weights are
    restored. ``warmup`` is the share of steps of linear warmup (then linear
    decay). ``loss_fn(logits, labels)`` replaces the model's cross-entropy
    (:class:`helpers.training.trainers.LossTrainer`). ``callbacks``: more
    ``TrainerCallback`` objects. No checkpoint is kept
    unless early stopping needs one. Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    if early_stopping_patience is not None and "validation" not in (eval_sets or {}):
        raise ValueError("early stopping watches the validation accuracy: pass eval_sets={'validation': ...}")
    evaluate = bool(eval_sets)
    best = early_stopping_patience is not None
    args = course_training_arguments(
        output_dir,
        precision,
        seed=seed,
        progress=progress,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        num_train_epochs=num_epochs,
        warmup_steps=warmup,
        weight_decay=weight_decay,
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="best" if best else "no",
        save_total_limit=1 if best else None,
        load_best_model_at_end=best,
        metric_for_best_model="validation_accuracy" if best else None,
        logging_strategy="epoch",
    )
    trainer = LossTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_sets if evaluate else None,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=trainer_accuracy if evaluate else None,
        callbacks=([EarlyStoppingCallback(early_stopping_patience=early_stopping_patience)] if best else [])
        + list(callbacks or []),
        loss_fn=loss_fn,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    release_training_precision(trainer)  # scored afterwards in the starting model's precision
    epochs = float(trainer.state.epoch or 0.0)
    return ClassifierRun(trainer, seconds, epochs, round(len(train_data) * epochs))


def predict_probabilities(trainer: Trainer, data: Dataset) -> np.ndarray:
    """Softmax probabilities of ``trainer.model`` on tokenized ``data``, shape ``(N, C)``, in the data's order.

    ``Trainer.predict`` evaluates in order when training did not group by
    length (:func:`train_classifier` does not); this is checked against the
    labels. Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    output = trainer.predict(data)
    if "labels" in data.column_names and not np.array_equal(output.label_ids, np.asarray(data["labels"])):
        raise RuntimeError("predictions came back in another order than the data set (length grouping?)")
    logits = torch.as_tensor(np.asarray(output.predictions, dtype=np.float32))
    return torch.softmax(logits, dim=-1).numpy()
