"""Elastic Weight Consolidation (EWC): fine-tune on a new task without forgetting the old one.

Kirkpatrick et al. 2017 ("Overcoming catastrophic forgetting in neural
networks") keep each weight close to its value after the old task, the
*anchor* ``theta*``, in proportion to how much the old task depends on it::

    loss = loss_new_task + (lambda / 2) * sum_i F_i * (theta_i - theta*_i) ** 2

``F_i`` is the diagonal of the Fisher information of the old task: the mean
squared gradient of its loss with respect to weight ``i``
(:func:`fisher_diagonal`). A weight the old task barely uses (``F_i`` close
to 0) moves freely; one it relies on is held back by a spring of stiffness
``lambda * F_i``. :class:`EWC` holds the anchor and the Fisher and computes
the penalty; :class:`EWCTrainer` adds it to ``Trainer``'s loss.

The scale of ``F`` depends on the model, the loss and the batch size (see
:func:`fisher_diagonal`), so ``lambda`` has no universal value: try several
and measure the old task and the new one.

With Adam, a penalty added to the loss is not what it is under the plain
gradient descent of the paper: Adam divides each weight's step by the scale
of its gradients, so once the penalty dominates a weight's gradient (and
gradient clipping has scaled the whole gradient down), the weight moves by
about the learning rate whatever ``lambda`` is; past a point, a larger
``lambda`` changes nothing. Loshchilov and Hutter (2019, "Decoupled weight
decay regularization") found the same for an L2 penalty and moved weight
decay out of the gradient (AdamW). :class:`DecoupledEWCCallback` does that for
EWC: after each optimizer step it takes one step of the penalty alone,
outside Adam and after clipping (:meth:`EWC.pull_toward_anchor`), so that
``lambda`` keeps acting up to pinning the weights to their anchor.

Taught in the pitfalls lessons (issue 11: catastrophic forgetting).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from helpers.device import to_device
from helpers.training.trainers import LossTrainer

__all__ = ["fisher_diagonal", "EWC", "EWCTrainer", "DecoupledEWCCallback"]


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def fisher_diagonal(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    device: str | torch.device | None = None,
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal of the empirical Fisher information: the mean over batches of the squared loss gradient.

    For each parameter with ``requires_grad`` (by name, as in
    ``model.named_parameters()``), a float32 tensor of its shape:
    ``F = mean_over_batches(grad(loss_batch) ** 2)``, where ``loss_batch`` is
    the model's own loss on the batch (``model(**batch).loss``: the batches
    must hold ``labels``). The labels are the data's, which makes it the
    *empirical* Fisher. With batches of one example this is the per-example
    empirical Fisher of Kirkpatrick et al.; larger batches square the
    batch-mean gradient, which is cheaper and smaller (the examples' gradients
    partly cancel before squaring), so ``lambda`` must grow accordingly.

    Computed in eval mode (no dropout) with ``torch.autograd.grad``: the model
    is put back in its train/eval mode afterwards and the parameters' ``.grad``
    are left as they were (nothing is accumulated into them). ``device``: where
    the batches go (by default the model's device). ``max_batches``: stop after
    that many batches. Taught in the pitfalls lessons (issue 11).
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be at least 1, got {max_batches}")
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not parameters:
        raise ValueError("the model has no parameter with requires_grad=True: there is nothing to estimate")
    device = torch.device(device) if device is not None else _model_device(model)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in parameters.items()}
    was_training = model.training
    model.eval()
    count = 0
    try:
        with torch.enable_grad():
            for batch in loader:
                if max_batches is not None and count >= max_batches:
                    break
                batch = to_device(batch, device)
                loss = model(**batch).loss
                if loss is None:
                    raise ValueError(
                        f"the model returned no loss: the batches must hold 'labels' (got {sorted(batch)})"
                    )
                grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
                for name, grad in zip(parameters, grads):
                    if grad is not None:
                        fisher[name] += grad.detach().float().pow(2)
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the loader gave no batch")
    return {name: value / count for name, value in fisher.items()}


@dataclass
class EWC:
    """The anchor weights ``theta*``, their Fisher diagonal ``F`` and the strength ``lam`` (lambda) of EWC.

    ``penalty(model)`` is ``(lam / 2) * sum_i F_i * (theta_i - theta*_i) ** 2``
    over the parameters named in ``fisher``, differentiable with respect to
    the model's parameters. Build it with :meth:`from_model` right after
    training on the old task. Taught in the pitfalls lessons (issue 11).
    """

    anchor: dict[str, torch.Tensor]
    fisher: dict[str, torch.Tensor]
    lam: float = 1.0

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if set(self.anchor) != set(self.fisher):
            only_anchor = sorted(set(self.anchor) - set(self.fisher))
            only_fisher = sorted(set(self.fisher) - set(self.anchor))
            raise ValueError(
                f"anchor and fisher must name the same parameters; only in anchor: {only_anchor}, "
                f"only in fisher: {only_fisher}"
            )
        for name, value in self.fisher.items():
            if value.shape != self.anchor[name].shape:
                raise ValueError(
                    f"{name}: fisher has shape {tuple(value.shape)}, anchor {tuple(self.anchor[name].shape)}"
                )
            if bool((value < 0).any()):
                raise ValueError(f"{name}: a Fisher diagonal is non-negative, got negative values")

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        loader: Iterable[Mapping[str, Any]],
        lam: float = 1.0,
        device: str | torch.device | None = None,
        max_batches: int | None = None,
    ) -> EWC:
        """Anchor at the model's current weights, with the Fisher of ``loader`` (the old task's data)."""
        fisher = fisher_diagonal(model, loader, device=device, max_batches=max_batches)
        named = dict(model.named_parameters())
        anchor = {name: named[name].detach().clone() for name in fisher}
        return cls(anchor=anchor, fisher=fisher, lam=lam)

    def _pairs(self, model: nn.Module):
        named = dict(model.named_parameters())
        missing = sorted(set(self.anchor) - set(named))
        if missing:
            raise KeyError(f"the model has no parameters named {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for name, anchor in self.anchor.items():
            parameter = named[name]
            if parameter.shape != anchor.shape:
                raise ValueError(
                    f"{name}: the model's shape {tuple(parameter.shape)} differs from the anchor's {tuple(anchor.shape)}"
                )
            yield name, parameter, anchor.to(parameter.device)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``(lam / 2) * sum_i F_i (theta_i - theta*_i)^2``: a scalar float32 tensor on the model's device."""
        total = torch.zeros((), dtype=torch.float32, device=_model_device(model))
        for name, parameter, anchor in self._pairs(model):
            fisher = self.fisher[name].to(parameter.device)
            total = total + (fisher * (parameter.float() - anchor.float()).pow(2)).sum()
        return 0.5 * self.lam * total

    @torch.no_grad()
    def pull_toward_anchor(self, model: nn.Module, step_size: float) -> None:
        """One step of the penalty alone, in place: ``theta <- theta* + (theta - theta*) / (1 + step_size * lam * F)``.

        The proximal (implicit) form of a gradient step of size ``step_size``
        on ``(lam / 2) * F * (theta - theta*)^2``: for a small
        ``step_size * lam * F`` it is the gradient step
        ``theta - step_size * lam * F * (theta - theta*)``; for a large one the
        weight lands on its anchor instead of overshooting it, so any ``lam``
        is stable. Used by :class:`DecoupledEWCCallback` after each optimizer
        step (taught in ``course/06_catastrophic_forgetting.ipynb``).
        """
        if not step_size >= 0:
            raise ValueError(f"step_size must be >= 0, got {step_size}")
        for name, parameter, anchor in self._pairs(model):
            stiffness = step_size * self.lam * self.fisher[name].to(parameter.device)
            anchor = anchor.float()
            pulled = anchor + (parameter.float() - anchor) / (1.0 + stiffness)
            parameter.copy_(pulled.to(parameter.dtype))

    @torch.no_grad()
    def fisher_distance(self, model: nn.Module) -> float:
        """``sqrt(sum_i F_i (theta_i - theta*_i)^2)``: the distance the penalty sees (``penalty = lam / 2 * d^2``).

        Unlike :meth:`distance`, a weight whose Fisher is about zero (most of
        them) counts for about nothing: it is the weights the old ability
        depends on that this distance measures.
        """
        total = 0.0
        for name, parameter, anchor in self._pairs(model):
            fisher = self.fisher[name].to(parameter.device)
            total += float((fisher * (parameter.float() - anchor.float()).pow(2)).sum())
        return math.sqrt(total)

    @torch.no_grad()
    def distance(self, model: nn.Module) -> float:
        """L2 distance ``||theta - theta*||`` between the model's anchored parameters and the anchor (Fisher ignored)."""
        total = 0.0
        for _, parameter, anchor in self._pairs(model):
            total += float((parameter.float() - anchor.float()).pow(2).sum())
        return math.sqrt(total)


class EWCTrainer(LossTrainer):
    """``Trainer`` whose training loss is the task loss plus ``ewc.penalty(model)``.

    The task loss is ``loss_fn(logits, labels)`` or, with ``loss_fn=None``,
    the model's own (see :class:`helpers.training.trainers.LossTrainer`). The
    penalty is added in training only: ``eval_loss`` stays the task's loss,
    comparable with a run without EWC. The logged training ``loss`` includes
    the penalty; its mean since the last log is logged as ``ewc_penalty``.
    Taught in the pitfalls lessons (issue 11).
    """

    def __init__(self, *args: Any, ewc: EWC, **kwargs: Any) -> None:
        if not isinstance(ewc, EWC):
            raise TypeError(f"ewc must be an EWC, got {type(ewc).__name__}")
        self.ewc = ewc
        self._penalties: list[torch.Tensor] = []
        super().__init__(*args, **kwargs)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            # Added to every micro-batch's mean loss; Trainer divides each by the accumulation steps, so
            # the penalty counts once per optimizer step.
            penalty = self.ewc.penalty(self.accelerator.unwrap_model(model))
            self._penalties.append(penalty.detach())
            loss = loss + penalty.to(loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._penalties and "loss" in logs:
            logs["ewc_penalty"] = float(torch.stack(self._penalties).mean())
            self._penalties.clear()
        super().log(logs, start_time)


class DecoupledEWCCallback(TrainerCallback):
    """EWC applied outside the optimizer: after each ``Trainer`` update, one step of the penalty alone.

    The training loss stays the task's; after every optimizer step (after
    gradient clipping and Adam's per-weight scaling),
    ``ewc.pull_toward_anchor(model, lr)`` moves each anchored weight back
    toward ``theta*`` as a gradient step of size ``lr`` (the learning rate of
    that step) on ``ewc``'s penalty would, in its stable proximal form. This is
    to EWC what AdamW's decoupled weight decay is to an L2 penalty (see the
    module's note): ``lambda`` acts the same whatever Adam does with the task's
    gradients, from no effect (``lr * lam * F`` much below 1 for every weight)
    to weights held at their anchor (much above 1). Pass it in ``callbacks``
    (e.g. of :func:`helpers.training.causal_lm.train_causal_lm`). Taught in
    ``course/06_catastrophic_forgetting.ipynb``.
    """

    def __init__(self, ewc: EWC) -> None:
        if not isinstance(ewc, EWC):
            raise TypeError(f"ewc must be an EWC, got {type(ewc).__name__}")
        self.ewc = ewc

    def on_optimizer_step(
        self, args: Any, state: Any, control: Any, model: nn.Module | None = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        if model is None or optimizer is None:
            raise ValueError("DecoupledEWCCallback needs the model and the optimizer from Trainer")
        # the learning rate of the step just taken (the scheduler moves after this event)
        self.ewc.pull_toward_anchor(model, float(optimizer.param_groups[0]["lr"]))
