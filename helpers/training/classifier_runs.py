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
  validation measure (``best_metric``: accuracy or loss) **and restores the
  weights of the best epoch** (``load_best_model_at_end=True``; without it
  the model kept is the last one, already past its best);
- ``keep_best_weights=True`` saves the best epoch's weights without stopping
  or restoring: the run ends on the last epoch, and
  :func:`restore_best_weights` loads the best one afterwards, so the same
  run can be scored both ways;
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
from safetensors.torch import load_file
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

__all__ = ["ClassifierRun", "BEST_METRICS", "train_classifier", "restore_best_weights", "predict_probabilities"]

# The validation measures that can pick the best epoch, and whether higher is better.
BEST_METRICS = {"validation_accuracy": True, "validation_loss": False}


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
    best_metric: str = "validation_accuracy",
    keep_best_weights: bool = False,
    loss_fn: LossFn | None = None,
    precision: Precision = FP32,
    seed: int = 42,
    progress: bool = True,
    callbacks: list | None = None,
) -> ClassifierRun:
    """Train ``model`` on tokenized ``train_data`` with ``Trainer`` and return the run.

    ``eval_sets`` maps names to tokenized data sets evaluated at every epoch
    (one of them must be ``"validation"`` for ``early_stopping_patience`` and
    ``keep_best_weights``); without it nothing is evaluated during training.
    ``best_metric`` (a key of :data:`BEST_METRICS`) decides which epoch is
    the best. With ``early_stopping_patience``, training stops after that
    many epochs without a better one and the best epoch's weights are
    restored. With ``keep_best_weights`` alone, the best epoch's weights are
    saved and the run keeps the last ones (:func:`restore_best_weights`
    loads the best). ``warmup`` is the share of steps of linear warmup (then linear
    decay). ``loss_fn(logits, labels)`` replaces the model's cross-entropy
    (:class:`helpers.training.trainers.LossTrainer`). ``callbacks``: more
    ``TrainerCallback`` objects. No checkpoint is kept
    unless early stopping or ``keep_best_weights`` needs one (the weights
    only, no optimizer state). Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    if best_metric not in BEST_METRICS:
        raise ValueError(f"best_metric must be one of {sorted(BEST_METRICS)}, got {best_metric!r}")
    stop_early = early_stopping_patience is not None
    best = stop_early or keep_best_weights
    if best and "validation" not in (eval_sets or {}):
        raise ValueError(f"the best epoch is chosen on {best_metric}: pass eval_sets={{'validation': ...}}")
    evaluate = bool(eval_sets)
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
        save_only_model=best,
        load_best_model_at_end=stop_early,
        metric_for_best_model=best_metric if best else None,
        greater_is_better=BEST_METRICS[best_metric] if best else None,
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
        callbacks=([EarlyStoppingCallback(early_stopping_patience=early_stopping_patience)] if stop_early else [])
        + list(callbacks or []),
        loss_fn=loss_fn,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    release_training_precision(trainer)  # scored afterwards in the starting model's precision
    epochs = float(trainer.state.epoch or 0.0)
    return ClassifierRun(trainer, seconds, epochs, round(len(train_data) * epochs))


def restore_best_weights(run: ClassifierRun) -> float:
    """Load the best epoch's saved weights into ``run.model`` and return that epoch.

    The run must have saved them (``keep_best_weights=True`` or early
    stopping in :func:`train_classifier`). Like ``load_best_model_at_end``,
    but after the last epoch has been scored: the lesson compares the two on
    the same run. Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    checkpoint = run.trainer.state.best_model_checkpoint
    if checkpoint is None:
        raise ValueError("this run saved no best weights: train it with keep_best_weights=True and a validation set")
    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"the best weights are gone: {weights} (was the output folder cleaned?)")
    device = next(run.model.parameters()).device
    missing, unexpected = run.model.load_state_dict(load_file(weights, device=str(device)), strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the model: missing {missing}, unexpected {unexpected}")
    step = int(Path(checkpoint).name.rsplit("-", 1)[1])
    return next(row["epoch"] for row in run.epoch_metrics() if row["step"] == step)


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
