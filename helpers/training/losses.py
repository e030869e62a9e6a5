"""Losses for imbalanced classes: focal loss and "balanced" class weights.

Two answers to a data set where one class is rare:

- **class weights**: each example's cross-entropy is multiplied by the weight
  of its class; :func:`balanced_class_weights` gives scikit-learn's
  ``"balanced"`` weights ``n_examples / (n_classes * n_examples_of_class)``;
- **focal loss** (Lin et al. 2017, "Focal Loss for Dense Object Detection"):
  ``FL = -alpha_t * (1 - p_t)**gamma * log(p_t)`` multiplies each example's
  cross-entropy by ``(1 - p_t)**gamma``, so the examples the model already
  gets right (``p_t`` close to 1) count less and the hard ones, often from
  the rare class, count more.

Both plug into ``Trainer`` through :class:`helpers.training.trainers.LossTrainer`.
Taught in the pitfalls lessons (issue 11: over-fitting and class imbalance).

**Normalisation, and how it differs from PyTorch's weighted cross-entropy.**
``focal_loss(..., reduction="mean")`` is the plain mean over the batch,
``sum_i alpha_{y_i} (1 - p_i)**gamma * CE_i / N``, as in Lin et al. and
torchvision's ``sigmoid_focal_loss``. ``F.cross_entropy(logits, labels,
weight=w)`` instead divides by the sum of the weights of the batch,
``sum_i w_{y_i} CE_i / sum_i w_{y_i}``. So at ``gamma=0``:

- without ``alpha`` both are the ordinary cross-entropy;
- with ``alpha=w``, ``focal_loss`` equals
  ``F.cross_entropy(logits, labels, weight=w, reduction="sum") / N``, not
  ``F.cross_entropy(..., weight=w)``. The two differ by the batch's factor
  ``sum_i w_{y_i} / N``. Over a whole data set with
  :func:`balanced_class_weights` that factor is exactly 1 (the balanced weights
  of all the examples add up to ``N``), so on average they agree; batch by
  batch they do not;
- a batch whose examples all have weight 0 gives ``focal_loss`` 0 (nothing to
  learn) but ``F.cross_entropy(..., weight=w)`` ``nan`` (0 / 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

__all__ = ["REDUCTIONS", "focal_loss", "balanced_class_weights"]

REDUCTIONS = ("mean", "sum", "none")


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    alpha: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class focal loss ``-alpha_t * (1 - p_t)**gamma * log(p_t)`` (Lin et al. 2017).

    ``logits`` has shape ``(N, C)``, ``labels`` shape ``(N,)`` with integer
    classes in ``[0, C)``; ``p_t`` is the softmax probability of the true
    class. ``gamma=0`` gives the cross-entropy; the larger ``gamma``, the less
    the well-classified examples count (``p_t = 0.9`` and ``gamma=2``: 100 times
    less than in the cross-entropy). ``alpha`` is an optional weight per class,
    shape ``(C,)``, non-negative (for example :func:`balanced_class_weights`).

    ``reduction``: ``"mean"`` (the plain mean over the ``N`` examples, **not**
    divided by the sum of the ``alpha`` weights as PyTorch's weighted
    cross-entropy is: see the module docstring), ``"sum"`` or ``"none"``
    (one loss per example). Computed in float32 whatever the logits' dtype.
    Taught in the pitfalls lessons (issue 11).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor of shape (N, num_classes), got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of shape ({logits.shape[0]},) to match logits, got {shape}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    num_classes = logits.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values from {int(labels.min())} to {int(labels.max())}"
        )
    if not gamma >= 0:  # also rejects nan
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")

    log_probs = F.log_softmax(logits.float(), dim=-1)
    log_p_t = log_probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    loss = -log_p_t
    if gamma > 0:
        # 1 - p_t computed as -expm1(log p_t) (exact for p_t near 1); the clamp keeps the gradient of
        # (1 - p_t)**gamma finite for gamma < 1 when p_t rounds to 1 (the loss is then 0 either way).
        one_minus_p_t = (-torch.expm1(log_p_t)).clamp(min=torch.finfo(torch.float32).tiny)
        loss = one_minus_p_t.pow(gamma) * loss
    if alpha is not None:
        alpha = torch.as_tensor(alpha, dtype=torch.float32, device=logits.device)
        if alpha.shape != (num_classes,):
            raise ValueError(f"alpha must have one weight per class, shape ({num_classes},), got {tuple(alpha.shape)}")
        if bool((alpha < 0).any()) or not bool(torch.isfinite(alpha).all()):
            raise ValueError(f"alpha must hold finite, non-negative weights, got {alpha.tolist()}")
        loss = alpha[labels.long()] * loss
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def balanced_class_weights(labels: Sequence[int] | np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's ``"balanced"`` class weights ``N / (num_classes * N_c)``, as a float32 tensor.

    A class with half the average number of examples gets weight 2, one with
    twice the average gets 0.5; the weights of all ``N`` examples add up to
    ``N``. Pass them to ``F.cross_entropy(weight=...)`` or to
    :func:`focal_loss` (``alpha=``). Every class of ``range(num_classes)`` must
    occur in ``labels`` (an absent class would get an infinite weight).
    Computed with ``sklearn.utils.class_weight.compute_class_weight``.
    Taught in the pitfalls lessons (issue 11).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty sequence of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from {y.min()} to {y.max()}")
    missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(f"classes {missing} never occur in labels: a balanced weight would be infinite")
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=y)
    return torch.tensor(weights, dtype=torch.float32)
