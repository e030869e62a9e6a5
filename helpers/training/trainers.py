"""``Trainer`` with a loss of your choice: class-weighted cross-entropy, focal loss, any ``loss_fn(logits, labels)``.

A Hugging Face model computes its own loss (plain cross-entropy for a
classifier) when the batch holds ``labels``. To train with another loss,
:class:`LossTrainer` overrides ``Trainer.compute_loss``: it takes the labels
out of the batch, runs the model, and returns ``loss_fn(logits, labels)``::

    weights = balanced_class_weights(train["label"], num_classes=2)
    trainer = LossTrainer(model=model, args=args, train_dataset=..., data_collator=...,
                          loss_fn=functools.partial(F.cross_entropy, weight=weights))
    trainer = LossTrainer(..., loss_fn=functools.partial(focal_loss, gamma=2.0, alpha=weights))

The evaluation loss (``eval_loss``) is computed with the same ``loss_fn``.

``Trainer(compute_loss_func=...)`` is the library's other hook for the same
thing, with the signature ``(outputs, labels, num_items_in_batch)``. Beware:
``Trainer`` then assumes that the loss is already divided by the number of
items of the whole accumulated batch, and no longer divides it by
``gradient_accumulation_steps``; a per-batch mean such as
``F.cross_entropy(...)`` is then ``gradient_accumulation_steps`` times too
large. :class:`LossTrainer` declares its loss a per-batch mean
(``loss_is_scaled_for_ga = False``), so gradient accumulation averages it as
the plain ``Trainer`` does.

Taught in the pitfalls lessons (issue 11: over-fitting and class imbalance);
:class:`helpers.training.regularization.EWCTrainer` builds on it (catastrophic forgetting).

:func:`course_training_arguments` holds the ``TrainingArguments`` every
``Trainer`` run of the library shares (no online tracker, the precision's
flags, gradient clipping, a linear schedule).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from helpers.device import Precision

__all__ = [
    "trainer_accuracy",
    "LossFn",
    "course_training_arguments",
    "course_training_settings",
    "release_training_precision",
    "StepTimer",
    "LossTrainer",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def trainer_accuracy(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for ``Trainer``: the accuracy that early stopping and the searches watch (``eval_accuracy``).

    Training needs only this number; the full set of classification metrics is
    :func:`helpers.evaluation.metrics.trainer_classification_metrics` (the evaluation layer, above this one).
    """
    logits, labels = eval_prediction
    return {"accuracy": float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(labels)))}


def course_training_arguments(
    output_dir: str | Path, precision: Precision, seed: int = 42, progress: bool = True, **settings: Any
) -> TrainingArguments:
    """``TrainingArguments`` with what the library's ``Trainer`` runs share, then ``settings`` on top.

    Shared: ``report_to="none"`` (no online tracker), the flags of
    ``precision`` (a :class:`helpers.device.Precision`; ``use_cpu`` on a CPU),
    gradient clipping at 1, a linear schedule, evaluation batches of 64, no
    pinned memory, ``seed`` and a progress bar unless ``progress=False``.
    Used by :mod:`helpers.training.classifier_runs` and
    :mod:`helpers.training.search`.
    """
    return TrainingArguments(**{**course_training_settings(output_dir, precision, seed, progress), **settings})


def course_training_settings(
    output_dir: str | Path, precision: Precision, seed: int = 42, progress: bool = True
) -> dict:
    """The keyword arguments of :func:`course_training_arguments`' shared part, for any ``TrainingArguments`` subclass.

    ``trl.SFTConfig`` is one (:func:`helpers.training.lora.sft_config_for`).
    """
    return dict(
        output_dir=str(output_dir),
        per_device_eval_batch_size=64,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        seed=seed,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_pin_memory=False,
        **precision.trainer_kwargs(),
    )


def release_training_precision(trainer: Trainer) -> None:
    """Give ``trainer.model`` back its own ``forward`` after ``trainer.train()`` in bf16/fp16.

    For mixed-precision training, accelerate wraps the model's ``forward`` in
    autocast and leaves it wrapped after training: the trained model then
    computes in bf16/fp16 while the model it started from computes in fp32, and
    a before/after comparison would mix a precision change into the effect of
    training. Unwrapped (``keep_fp32_wrapper=False``), every trained model is
    scored in the precision it is stored in, like the starting model. A model
    that trained in fp32 is left as it is. Called by
    :func:`helpers.training.causal_lm.train_causal_lm` and
    :func:`helpers.training.classifier_runs.train_classifier`; found in
    ``course/11_peft.ipynb`` (a disabled adapter differed from the base model).

    accelerate's own unwrapping (``extract_model_from_parallel(...,
    keep_fp32_wrapper=False)``) is not used for the forward: it follows
    ``__wrapped__`` past the class's own decorators (transformers'
    ``can_return_tuple``) and leaves the model marked as prepared, so that the
    next ``Trainer`` on the same model skips the autocast wrapper and trains
    in fp32 whatever its ``bf16=True`` says (tests/test_precisions.py). Here
    the forward the model had before training is put back as it was, and the
    mark is removed.
    """
    model = extract_model_from_parallel(trainer.model, keep_fp32_wrapper=True)
    original = model.__dict__.pop("_original_forward", None)
    if original is not None:
        if getattr(original, "__self__", None) is model and getattr(original, "__func__", None) is getattr(
            type(model), "forward", None
        ):
            model.__dict__.pop("forward", None)  # the class's forward again, decorators included
        else:
            model.forward = original  # a forward set on this model before training
    model.__dict__.pop("_is_accelerate_prepared", None)  # a next Trainer prepares it for its own precision
    trainer.model = model


class StepTimer(TrainerCallback):
    """Wall-clock seconds of each optimizer step of a ``Trainer`` run, in ``step_seconds`` (step 1 first).

    A step runs from ``on_step_begin`` to ``on_step_end``: its forward and
    backward passes (all of its accumulated batches), clipping and the
    update, not the start-up of ``train()`` nor the evaluations. The first
    step also pays one-time work (allocations, lazy initialisation): compare
    runs on the steps after it. Used by :mod:`helpers.training.adaptation`;
    taught in ``course/11_peft.ipynb`` (the course's recipe against TRL).
    """

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self._start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.step_seconds.append(time.perf_counter() - self._start)
            self._start = None


class LossTrainer(Trainer):
    """``Trainer`` whose loss is ``loss_fn(model(**inputs).logits, labels)``.

    ``loss_fn`` takes the logits and the labels of one batch and returns a
    scalar, the mean over the batch: ``functools.partial(F.cross_entropy,
    weight=w)``, ``functools.partial(focal_loss, gamma=2)``, ... With
    ``loss_fn=None`` the model's own loss is used (what ``Trainer`` does,
    counted as a per-batch mean). Every other argument is ``Trainer``'s.
    Taught in the pitfalls lessons (issue 11).
    """

    # compute_loss returns a per-batch mean: training_step divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, loss_fn: LossFn | None = None, **kwargs: Any) -> None:
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "LossTrainer takes loss_fn(logits, labels); compute_loss_func belongs to the plain Trainer"
            )
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(logits, labels), got {type(loss_fn).__name__}")
        self.loss_fn = loss_fn
        super().__init__(*args, **kwargs)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The batch's loss (and the model's outputs with ``return_outputs``); ``inputs`` is left unchanged.

        ``num_items_in_batch`` is accepted for ``Trainer``'s sake and not used:
        the loss is a per-batch mean (see ``loss_is_scaled_for_ga``).
        """
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        if self.loss_fn is None:
            outputs = model(**inputs) if labels is None else model(**inputs, labels=labels)
            if getattr(outputs, "loss", None) is None:
                raise ValueError("the model returned no loss: does the batch hold 'labels'?")
            loss = outputs.loss
        else:
            if labels is None:
                raise ValueError(f"loss_fn needs the batch's 'labels'; the batch holds {sorted(inputs)}")
            outputs = model(**inputs)
            loss = self.loss_fn(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss
