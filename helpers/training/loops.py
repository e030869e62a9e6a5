"""Training loops of the course.

``train_loop`` is the explicit loop a student can read in one screen: AdamW
(or any optimizer), linear warmup and decay, gradient clipping, gradient
accumulation, mixed precision from ``setup()``'s choice, a progress bar. It is
taught in ``course/03_bert_classification.ipynb`` next to ``Trainer``, which
does the same. ``evaluate`` scores a model on a loader, ``time_training_steps``
times training steps for the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.device import FP32, Precision, synchronize, to_device

__all__ = ["evaluate", "time_training_steps", "train_loop"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: str = "cpu", precision: Precision = FP32) -> dict:
    """Mean loss over ``loader`` plus the logits and labels (for metrics), in eval mode."""
    model.eval()
    total, count, logits, labels = 0.0, 0, [], []
    for batch in loader:
        batch = to_device(batch, device)
        with precision.autocast(device):
            output = model(**batch)
        size = len(batch["labels"])
        total += output.loss.item() * size
        count += size
        logits.append(output.logits.float().cpu())
        labels.append(batch["labels"].cpu())
    return {"loss": total / max(count, 1), "logits": torch.cat(logits).numpy(), "labels": torch.cat(labels).numpy()}


def time_training_steps(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    num_steps: int,
    device: str = "cpu",
    precision: Precision = FP32,
    gradient_accumulation_steps: int = 1,
) -> float:
    """Mean seconds per optimizer update (forwards, backwards, one update) over ``num_steps`` updates.

    Each update reads ``gradient_accumulation_steps`` batches of ``loader``
    (taught in ``course/05_hyperparameters.ipynb``), each counting for
    ``1 / gradient_accumulation_steps`` of the loss, as :func:`train_loop`
    does. One untimed update first (allocations, lazy imports); the loader
    must hold ``(num_steps + 1) * gradient_accumulation_steps`` batches. The
    model is trained by these steps: time on a copy you do not need afterwards.
    """
    import time

    if gradient_accumulation_steps < 1 or num_steps < 1:
        raise ValueError("num_steps and gradient_accumulation_steps must be at least 1")
    batches = iter(loader)
    model.train()
    seconds = []
    for step in range(num_steps + 1):
        micro_batches = [to_device(next(batches), device) for _ in range(gradient_accumulation_steps)]
        synchronize(device)
        start = time.perf_counter()
        for batch in micro_batches:
            with precision.autocast(device):
                loss = model(**batch).loss / gradient_accumulation_steps
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        synchronize(device)
        if step:
            seconds.append(time.perf_counter() - start)
    return float(np.mean(seconds))


def train_loop(
    model: torch.nn.Module,
    train_loader,
    optimizer: torch.optim.Optimizer,
    num_epochs: int = 1,
    device: str = "cpu",
    precision: Precision = FP32,
    warmup_ratio: float = 0.1,
    gradient_accumulation_steps: int = 1,
    max_grad_norm: float | None = 1.0,
    eval_loader=None,
    compute_metrics: Callable[[np.ndarray, np.ndarray], dict] | None = None,
    progress: bool = True,
    stop_after_updates: int | None = None,
    lr_scheduler_type: str = "linear",
) -> dict:
    """Train ``model`` (whose output has ``.loss``) and return its history.

    One optimizer update every ``gradient_accumulation_steps`` batches, each
    batch's loss counting for its share of the group (1/k; 1/r in a last,
    partial group of r batches, as ``Trainer`` counts it); the
    learning rate rises linearly over the first ``warmup_ratio`` of the
    updates (rounded up, as ``Trainer`` does), then follows
    ``lr_scheduler_type`` (``"linear"``: down to 0 at the end of the
    ``num_epochs`` epochs; ``"cosine"``; ``"constant"``; see
    :mod:`helpers.training.schedules`). ``stop_after_updates`` stops the run
    after that many updates, part-way through the same schedule, as a
    ``Trainer`` run read at its checkpoint of that step (what
    ``course/03_bert_classification.ipynb`` reproduces); the last evaluation
    is then of the model where it stopped. History: ``loss`` and ``lr`` per
    update, ``epoch_loss`` per epoch, and with ``eval_loader``
    ``eval_loss``, ``eval_predictions`` (the predicted class of every item,
    in the loader's order) and the ``compute_metrics(labels, predictions)``
    results per epoch, and ``eval_labels`` once.
    """
    from helpers.training.schedules import make_scheduler, warmup_steps_for

    if gradient_accumulation_steps < 1 or num_epochs < 1:
        raise ValueError("gradient_accumulation_steps and num_epochs must be at least 1")
    num_batches = len(train_loader)
    updates_per_epoch = -(-num_batches // gradient_accumulation_steps)
    schedule_updates = updates_per_epoch * num_epochs
    if stop_after_updates is not None and not 1 <= stop_after_updates <= schedule_updates:
        raise ValueError(
            f"stop_after_updates must be between 1 and the {schedule_updates} updates of the schedule, "
            f"got {stop_after_updates}"
        )
    planned_updates = schedule_updates if stop_after_updates is None else stop_after_updates
    scheduler = make_scheduler(
        optimizer, lr_scheduler_type, schedule_updates, warmup_steps_for(warmup_ratio, schedule_updates)
    )
    scaler = torch.amp.GradScaler(torch.device(device).type) if precision.use_grad_scaler else None
    history: dict = {
        "loss": [],
        "lr": [],
        "epoch_loss": [],
        "eval_loss": [],
        "eval_metrics": [],
        "eval_predictions": [],
    }
    bar = tqdm(total=planned_updates, desc="training", unit="update", disable=not progress)
    for _ in range(num_epochs):
        model.train()
        optimizer.zero_grad()
        accumulated, epoch_losses = 0.0, []
        for step, batch in enumerate(train_loader, start=1):
            # Each batch counts 1/n of the update, n the batches of its group: the sum of n gradients is their
            # mean. n = k except in a last, partial group of r < k batches, which counts 1/r (dividing by k
            # would make that update, and its logged loss, r/k of a normal one); Trainer does the same.
            group_size = min(
                gradient_accumulation_steps,
                num_batches - (step - 1) // gradient_accumulation_steps * gradient_accumulation_steps,
            )
            with precision.autocast(device):
                loss = model(**to_device(batch, device)).loss / group_size
            (scaler.scale(loss) if scaler else loss).backward()
            accumulated += loss.item()
            if step % gradient_accumulation_steps and step != num_batches:
                continue
            if scaler:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            history["lr"].append(scheduler.get_last_lr()[0])
            scheduler.step()
            optimizer.zero_grad()
            history["loss"].append(accumulated)
            epoch_losses.append(accumulated)
            accumulated = 0.0
            bar.update(1)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
            if len(history["lr"]) == planned_updates:
                break
        history["epoch_loss"].append(float(np.mean(epoch_losses)))
        if eval_loader is not None:
            result = evaluate(model, eval_loader, device, precision)
            predictions = result["logits"].argmax(-1)
            history["eval_loss"].append(result["loss"])
            history["eval_predictions"].append(predictions)
            history["eval_labels"] = result["labels"]
            if compute_metrics is not None:
                history["eval_metrics"].append(compute_metrics(result["labels"], predictions))
        if len(history["lr"]) == planned_updates:
            break
    bar.close()
    return history
