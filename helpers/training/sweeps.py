"""One call per training run with the explicit loop: a fresh classifier, one recipe, the evaluation after each epoch.

A lesson that moves one knob at a time (learning rate, schedule, warmup,
epochs, training-set size, weight decay) runs the same recipe many times on
the same data; :func:`train_and_evaluate` is that recipe once: the embedded
MiniLM with a new mean-pooling head (seeded), length-grouped batches, AdamW
without weight decay on biases and LayerNorm
(:func:`helpers.training.freezing.optimizer_for`),
:func:`helpers.training.loops.train_loop`, and after every epoch which
evaluation items the model gets right. Taught in
``course/05_hyperparameters.ipynb``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from helpers.data.batching import make_loader
from helpers.device import FP32, Precision
from helpers.models.loading import load_classifier
from helpers.training.freezing import optimizer_for
from helpers.training.loops import train_loop

__all__ = ["LoopRun", "fit_with_loop", "train_and_evaluate"]


@dataclass
class LoopRun:
    """A finished run: its history (loss and lr per update, eval loss per epoch), correctness per epoch, time."""

    history: dict
    correct: list[np.ndarray]  # per epoch: 1.0 where the model is right on an evaluation item (data set order)
    seconds: float

    @property
    def final(self) -> np.ndarray:
        """Correctness after the last epoch."""
        return self.correct[-1]

    def majority_prediction_share(self, epoch: int = -1) -> float:
        """Share of the evaluation items given the most frequent predicted class (1.0: the model answers one class)."""
        predictions = self.history["eval_predictions"][epoch]
        return float(np.bincount(predictions).max() / len(predictions))


def fit_with_loop(
    model: torch.nn.Module,
    train_data: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    lr: float,
    seed: int,
    num_epochs: int = 1,
    batch_size: int = 16,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    lr_scheduler_type: str = "linear",
    eval_loader=None,
    device: str = "cpu",
    precision: Precision = FP32,
    progress: bool = False,
) -> dict:
    """The course's explicit-loop recipe on ``model``: length-grouped batches, :func:`optimizer_for`, :func:`train_loop`.

    Dropout masks and the batch order follow ``seed``. Returns
    :func:`train_loop`'s history. Shared by :func:`train_and_evaluate` and the
    reference classifier (:mod:`helpers.training.reference`).
    """
    torch.manual_seed(seed)  # dropout
    loader = make_loader(train_data, tokenizer, batch_size, padding="length_grouped", seed=seed)
    optimizer = optimizer_for(model, lr=lr, weight_decay=weight_decay)
    return train_loop(
        model,
        loader,
        optimizer,
        num_epochs=num_epochs,
        device=device,
        precision=precision,
        warmup_ratio=warmup_ratio,
        lr_scheduler_type=lr_scheduler_type,
        eval_loader=eval_loader,
        progress=progress,
    )


def train_and_evaluate(
    train_data: Dataset,
    eval_data: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    lr: float,
    seed: int,
    num_epochs: int = 1,
    batch_size: int = 16,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    lr_scheduler_type: str = "linear",
    num_labels: int = 2,
    model_name: str = "minilm",
    pooling: str = "mean",
    head_state: dict[str, torch.Tensor] | None = None,
    device: str = "cpu",
    precision: Precision = FP32,
    progress: bool = False,
) -> LoopRun:
    """Train a new ``model_name`` classifier on tokenized ``train_data``, evaluating on ``eval_data`` after each epoch.

    The head's initialisation, the dropout masks and the batch order all
    follow ``seed``; ``head_state`` (a ``model.classifier.state_dict()``, e.g.
    of a head fitted as a linear probe by
    :func:`helpers.training.probing.fit_head_by_linear_probe`) replaces the
    random head, so that every run starts from the same classifier. The evaluation set is read in its own order (no
    shuffling), so the correctness arrays of two runs line up item by item.
    """
    model, _ = load_classifier(model_name, num_labels=num_labels, device=device, seed=seed, pooling=pooling)
    if head_state is not None:
        model.classifier.load_state_dict(head_state)
    eval_loader = make_loader(eval_data, tokenizer, 64, shuffle=False)
    start = time.perf_counter()
    history = fit_with_loop(
        model,
        train_data,
        tokenizer,
        lr,
        seed,
        num_epochs,
        batch_size,
        weight_decay,
        warmup_ratio,
        lr_scheduler_type,
        eval_loader,
        device,
        precision,
        progress,
    )
    seconds = time.perf_counter() - start
    labels = history["eval_labels"]
    correct = [(predictions == labels).astype(float) for predictions in history["eval_predictions"]]
    return LoopRun(history, correct, seconds)
