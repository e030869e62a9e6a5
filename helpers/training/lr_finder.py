"""The LR range test (Smith, 2017): the library version of the contract of ``course/15_exercise_lr_finder.ipynb``.

A few training steps with a learning rate growing exponentially from
``min_lr`` to ``max_lr``, one batch each, the loss of every step recorded,
stopped as soon as a loss exceeds ``divergence_factor`` times the lowest seen;
then the model's weights and the optimizer's state (learning rates included)
are put back exactly as they were. The suggested rate is where the loss falls
fastest: ``lrs[argmin(np.gradient(losses))]``, on the raw losses as the
exercise asks, or on losses smoothed by an exponential moving average
(``smoothing``, as fastai does) since one batch's loss is noisy.

Used on MiniLM in ``course/05_hyperparameters.ipynb``, where its suggestion is
placed on a measured learning-rate sweep. fastai's ``learn.lr_find()`` and
PyTorch Lightning's ``Tuner(trainer).lr_find(model)`` do the same;
``transformers`` has none.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import FP32, Precision, to_device

__all__ = ["LRRangeTest", "smooth_losses", "steepest_descent_lr", "lr_range_test"]


@dataclass(frozen=True)
class LRRangeTest:
    """Learning rates tried, the loss of each step, the suggested rate (steepest descent), and whether the loss blew up."""

    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    smoothed_losses: list[float]
    diverged: bool  # stopped before its last step: a loss exceeded divergence_factor x the lowest


def smooth_losses(losses: list[float], smoothing: float) -> list[float]:
    """Exponential moving average of ``losses`` with bias correction (fastai's): 0 returns them unchanged."""
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    average, smoothed = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = smoothing * average + (1 - smoothing) * loss
        smoothed.append(average / (1 - smoothing**i))
    return smoothed


def steepest_descent_lr(lrs: list[float], losses: list[float]) -> float:
    """The rate where the loss falls fastest, ``lrs[argmin(np.gradient(losses))]`` (the first rate if < 2 losses)."""
    if not lrs or len(lrs) != len(losses):
        raise ValueError(f"need as many learning rates as losses, at least one: got {len(lrs)} and {len(losses)}")
    return float(lrs[int(np.argmin(np.gradient(losses)))]) if len(losses) >= 2 else float(lrs[0])


def lr_range_test(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    device: str = "cpu",
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    divergence_factor: float = 4.0,
    smoothing: float = 0.0,
    skip_start: int = 0,
    precision: Precision = FP32,
    progress: bool = True,
) -> LRRangeTest:
    """Run the LR range test on ``model`` and leave the model and ``optimizer`` as they were.

    Step ``i`` of ``num_steps`` uses ``min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))``,
    set on every parameter group before the step; the loader is read again
    from its start when it has fewer batches. The suggestion is the steepest
    descent of the losses smoothed with ``smoothing`` (0: the raw losses, the
    exercise's contract). Divergence is judged on the same losses: the raw
    ones without smoothing, the smoothed ones with it (as fastai does; one
    noisy batch then cannot stop the test when the loss is already small).
    ``skip_start`` leaves the first steps out of the suggestion (fastai's
    ``skip_start``): there the moving average has seen too few batches to
    have a slope worth reading. 0 is the exercise's contract.
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
    if num_steps < 1 or divergence_factor <= 1 or skip_start < 0:
        raise ValueError("need num_steps >= 1, divergence_factor > 1 and skip_start >= 0")
    # deepcopy: state_dict() holds references to the live tensors, which training changes in place
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    model.train()
    lrs: list[float] = []
    losses: list[float] = []
    lowest = float("inf")
    batches = iter(loader)
    # fp16 needs its loss scaled (as in train_loop); a step whose gradients overflowed is skipped by the scaler
    scaler = torch.amp.GradScaler(torch.device(device).type) if precision.use_grad_scaler else None
    try:
        for i in tqdm(range(num_steps), desc="LR range test", unit="step", disable=not progress):
            lr = min_lr * (max_lr / min_lr) ** (i / (num_steps - 1)) if num_steps > 1 else min_lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            optimizer.zero_grad()
            with precision.autocast(device):
                loss = model(**to_device(batch, device)).loss
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            lrs.append(lr)
            losses.append(loss.item())
            watched = smooth_losses(losses, smoothing)[-1]  # the raw loss when smoothing is 0
            lowest = min(lowest, watched)
            if not np.isfinite(watched) or watched > divergence_factor * lowest:
                break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        optimizer.zero_grad()
        model.train(was_training)
    smoothed = smooth_losses(losses, smoothing)
    start = skip_start if len(losses) > skip_start + 1 else 0  # too short a test: read it whole
    suggested = steepest_descent_lr(lrs[start:], smoothed[start:])
    return LRRangeTest(lrs, losses, suggested, smoothed, diverged=len(losses) < num_steps)
