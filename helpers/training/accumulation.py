"""Batch size and gradient accumulation: the same gradient and update from one big batch or k small ones.

Accumulating ``k`` micro-batches of ``b`` examples, each loss divided by
``k``, sums to the gradient of the mean loss over the ``k * b`` examples: one
big batch's gradient, computed with the activations of ``b`` examples at a
time. :func:`accumulation_check` verifies it on a real model (dropout off,
since dropout draws other masks for other batch shapes) and applies one AdamW
update from each gradient; :func:`saved_activation_bytes` measures the memory
that scales with the batch (the activations autograd keeps for the backward
pass). Taught in ``course/05_hyperparameters.ipynb``;
:func:`helpers.training.loops.train_loop` and
:func:`helpers.training.loops.time_training_steps` accumulate the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from helpers.device import FP32, Precision, to_device

__all__ = [
    "split_batch",
    "batch_gradients",
    "unequal_accumulation_gradients",
    "relative_difference",
    "AccumulationCheck",
    "accumulation_check",
    "saved_activation_bytes",
]


def split_batch(batch: dict, parts: int) -> list[dict]:
    """``batch`` (a dict of tensors with the examples on dim 0) cut into ``parts`` equal micro-batches."""
    sizes = {len(value) for value in batch.values() if hasattr(value, "shape")}
    if len(sizes) != 1:
        raise ValueError(f"the batch's tensors disagree on the number of examples: {sorted(sizes)}")
    (size,) = sizes
    if parts < 1 or size % parts:
        raise ValueError(f"a batch of {size} examples cannot be cut into {parts} equal micro-batches")
    step = size // parts
    return [{key: value[i : i + step] for key, value in batch.items()} for i in range(0, size, step)]


def batch_gradients(
    model: torch.nn.Module, batch: dict, accumulation_steps: int = 1, device: str = "cpu", precision: Precision = FP32
) -> dict[str, torch.Tensor]:
    """Gradients of the mean loss over ``batch``, in one pass or accumulated over equal micro-batches.

    Each micro-batch's loss counts ``1 / accumulation_steps``, as in
    :func:`helpers.training.loops.train_loop`. The model's mode (train/eval)
    is left as the caller set it; its ``.grad`` are cleared afterwards.
    """
    model.zero_grad()
    for micro_batch in split_batch(batch, accumulation_steps):
        with precision.autocast(device):
            loss = model(**to_device(micro_batch, device)).loss / accumulation_steps
        loss.backward()
    gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return gradients


def unequal_accumulation_gradients(
    model: torch.nn.Module, batch: dict, sizes: list[int], device: str = "cpu"
) -> dict[str, dict[str, torch.Tensor]]:
    """The gradient of ``batch`` in one pass, and accumulated over consecutive micro-batches of unequal ``sizes``.

    Returns ``{"one batch": ..., "mean / k": ..., "sum / total": ...}``:
    ``"mean / k"`` divides each micro-batch's mean loss by the number of
    micro-batches (what is right only for equal sizes: an example of a small
    micro-batch then weighs more); ``"sum / total"`` turns each mean back
    into a sum (times its size) and divides by the examples of the whole
    batch: the whole batch's mean, whatever the sizes (what ``Trainer`` does
    with ``num_items_in_batch`` for the models that take it, counting
    tokens). fp32, mode left as the caller set it (``eval`` for no dropout).
    Taught in ``course/05_hyperparameters.ipynb``.
    """
    total = sum(sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive, got {sizes}")
    if any(len(value) != total for value in batch.values() if hasattr(value, "shape")):
        raise ValueError(f"sizes {sizes} do not add up to the batch's {total} examples")
    result = {"one batch": batch_gradients(model, batch, 1, device)}
    for name in ("mean / k", "sum / total"):
        model.zero_grad()
        start = 0
        for size in sizes:
            micro_batch = {key: value[start : start + size] for key, value in batch.items()}
            loss = model(**to_device(micro_batch, device)).loss
            (loss / len(sizes) if name == "mean / k" else loss * size / total).backward()
            start += size
        result[name] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return result


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """``||a - b|| / ||a||`` over all the tensors of two gradients (same names)."""
    difference = torch.cat([(a[name] - b[name]).flatten() for name in a])
    return float(difference.norm() / torch.cat([t.flatten() for t in a.values()]).norm())


@dataclass(frozen=True)
class AccumulationCheck:
    """How far apart one batch and its accumulated micro-batches land: gradients, then one AdamW update."""

    batch_size: int
    accumulation_steps: int
    gradient_max_abs_difference: float
    gradient_relative_difference: float  # ||g_batch - g_accumulated|| / ||g_batch||
    update_relative_difference: float  # ||u_batch - u_accumulated|| / ||u_batch||, u: one AdamW update from each
    update_max_abs_difference: float
    learning_rate: float

    def same(self, tolerance: float = 1e-4) -> bool:
        """Gradients and updates equal within ``tolerance``, relative to their size (fp32 rounding is ~1e-7)."""
        return self.gradient_relative_difference <= tolerance and self.update_relative_difference <= tolerance


def accumulation_check(
    model: torch.nn.Module,
    batch: dict,
    accumulation_steps: int,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    device: str = "cpu",
) -> AccumulationCheck:
    """Compare one batch with ``accumulation_steps`` micro-batches of it on ``model``, dropout off, in fp32.

    Both gradients are computed from the same weights; then one AdamW step
    is taken from those weights with each gradient and the new weights
    compared. The model is left with its weights and mode as they were.
    """
    state = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.eval()  # no dropout: the two computations must see the same network
    try:
        whole = batch_gradients(model, batch, 1, device)
        accumulated = batch_gradients(model, batch, accumulation_steps, device)
        differences = [(whole[name] - accumulated[name]).flatten() for name in whole]
        difference = torch.cat(differences)
        norm = torch.cat([g.flatten() for g in whole.values()]).norm()
        updates = []
        for gradients in (whole, accumulated):
            model.load_state_dict(state)
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
            for name, parameter in model.named_parameters():
                parameter.grad = gradients.get(name)
            optimizer.step()
            updates.append(
                torch.cat(
                    [(p.detach() - state[name]).flatten() for name, p in model.named_parameters() if name in state]
                )
            )
        update_difference = updates[0] - updates[1]
    finally:
        model.load_state_dict(state)
        model.zero_grad()
        model.train(was_training)
    size = len(next(value for value in batch.values() if hasattr(value, "shape")))
    return AccumulationCheck(
        size,
        accumulation_steps,
        float(difference.abs().max()),
        float(difference.norm() / norm),
        float(update_difference.norm() / updates[0].norm()),
        float(update_difference.abs().max()),
        lr,
    )


def saved_activation_bytes(
    model: torch.nn.Module, batch: dict, device: str = "cpu", precision: Precision = FP32
) -> int:
    """Bytes of the tensors autograd keeps from one forward pass of ``batch`` for the backward pass.

    These activations grow with the batch and are what gradient accumulation
    saves; the weights, gradients and optimizer state do not depend on the
    batch (``helpers.training.freezing.training_state_bytes`` counts those).
    Counted once per storage, parameters left out; measured by
    ``torch.autograd.graph.saved_tensors_hooks`` on any device.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with precision.autocast(device):
            loss = model(**to_device(batch, device)).loss
    del loss  # frees the graph without a backward pass
    return sum(saved.values())
