"""Learning-rate schedules: warmup, then constant, linear or cosine, from transformers' own schedulers.

:func:`make_scheduler` is what :func:`helpers.training.loops.train_loop` uses
(the ``lr_scheduler_type`` and ``warmup_ratio`` of ``TrainingArguments``, with
the same names); :func:`schedule_curve` runs the same scheduler on a dummy
parameter to draw the learning rate at every update without training
anything. Taught in ``course/05_hyperparameters.ipynb``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SCHEDULES", "warmup_steps_for", "make_scheduler", "schedule_curve"]

SCHEDULES = ("constant", "linear", "cosine")


def warmup_steps_for(warmup_ratio: float, num_training_steps: int) -> int:
    """Warmup length in updates: ``warmup_ratio`` of the run, rounded up as ``Trainer`` does."""
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return math.ceil(warmup_ratio * num_training_steps)


def make_scheduler(
    optimizer: torch.optim.Optimizer, name: str, num_training_steps: int, num_warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler of transformers (``get_scheduler``): linear warmup over ``num_warmup_steps``, then ``name``.

    ``"constant"`` keeps the rate after warmup (transformers'
    ``constant_with_warmup``, or ``constant`` without warmup); ``"linear"``
    falls to 0 at ``num_training_steps``; ``"cosine"`` follows half a cosine
    down to 0 there.
    """
    from transformers import get_scheduler

    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    if num_training_steps < 1 or not 0 <= num_warmup_steps <= num_training_steps:
        raise ValueError(
            f"need 0 <= num_warmup_steps ({num_warmup_steps}) <= num_training_steps ({num_training_steps})"
            " and at least one training step"
        )
    if name == "constant":
        name = "constant_with_warmup" if num_warmup_steps else "constant"
    return get_scheduler(name, optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps)


def schedule_curve(name: str, num_training_steps: int, warmup_ratio: float = 0.0, lr: float = 1.0) -> np.ndarray:
    """The learning rate used at each of ``num_training_steps`` updates by :func:`make_scheduler`'s scheduler.

    Computed by the real scheduler on a one-parameter optimizer (nothing is
    trained): element ``i`` is the rate of update ``i``, read before its
    ``scheduler.step()`` as :func:`helpers.training.loops.train_loop` records it.
    """
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = make_scheduler(optimizer, name, num_training_steps, warmup_steps_for(warmup_ratio, num_training_steps))
    rates = []
    for _ in range(num_training_steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return np.array(rates)
