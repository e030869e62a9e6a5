"""Focal loss and balanced class weights (helpers.training.losses), checked against their formulas."""

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.data.loaders import rotten_tomatoes
from helpers.training.losses import balanced_class_weights, focal_loss

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [1.0, 1.0, -2.0]])
LABELS = torch.tensor([0, 2, 0, 1])
ALPHA = torch.tensor([0.25, 1.0, 3.0])


def by_hand(logits, labels, gamma, alpha=None):
    """FL_i = -alpha_t (1 - p_t)^gamma log p_t, one Python float per example, from the softmax written out."""
    losses = []
    for row, label in zip(logits.tolist(), labels.tolist()):
        p_t = math.exp(row[label]) / sum(math.exp(v) for v in row)
        a_t = 1.0 if alpha is None else float(alpha[label])
        losses.append(-a_t * (1 - p_t) ** gamma * math.log(p_t))
    return losses


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, ALPHA])
def test_focal_loss_equals_the_formula(gamma, alpha):
    expected = by_hand(LOGITS, LABELS, gamma, alpha)
    assert focal_loss(LOGITS, LABELS, gamma, alpha, reduction="none").tolist() == pytest.approx(expected, rel=1e-5)
    assert focal_loss(LOGITS, LABELS, gamma, alpha, reduction="sum").item() == pytest.approx(sum(expected), rel=1e-5)
    # "mean" is the plain mean over the examples, whatever alpha is.
    assert focal_loss(LOGITS, LABELS, gamma, alpha).item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_gamma_zero_is_the_cross_entropy_and_alpha_normalises_by_the_batch_size():
    assert torch.allclose(focal_loss(LOGITS, LABELS, gamma=0), F.cross_entropy(LOGITS, LABELS))
    weighted_sum = F.cross_entropy(LOGITS, LABELS, weight=ALPHA, reduction="sum")
    assert torch.allclose(focal_loss(LOGITS, LABELS, gamma=0, alpha=ALPHA), weighted_sum / len(LABELS))
    assert torch.allclose(
        focal_loss(LOGITS, LABELS, gamma=0, alpha=ALPHA, reduction="none"),
        F.cross_entropy(LOGITS, LABELS, weight=ALPHA, reduction="none"),
    )
    # PyTorch's weighted mean divides by the batch's sum of weights instead: the two differ by that factor.
    torch_mean = F.cross_entropy(LOGITS, LABELS, weight=ALPHA)
    factor = ALPHA[LABELS].sum() / len(LABELS)
    assert not torch.allclose(focal_loss(LOGITS, LABELS, gamma=0, alpha=ALPHA), torch_mean)
    assert torch.allclose(focal_loss(LOGITS, LABELS, gamma=0, alpha=ALPHA), torch_mean * factor)


def test_a_batch_whose_weights_are_all_zero_gives_zero_not_nan():
    weights = torch.tensor([0.0, 1.0, 1.0])
    only_class_0 = torch.tensor([0, 0, 0, 0])
    assert focal_loss(LOGITS, only_class_0, gamma=2, alpha=weights).item() == 0.0
    assert torch.isnan(F.cross_entropy(LOGITS, only_class_0, weight=weights))  # 0 / 0


def test_well_classified_examples_count_less_than_in_the_cross_entropy():
    # Softmax of log-probabilities gives back exactly those probabilities: p_t = 0.9, 0.5 and 0.1.
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]))
    labels = torch.tensor([0, 0, 0])
    ce = F.cross_entropy(logits, labels, reduction="none")
    ratio = focal_loss(logits, labels, gamma=2, reduction="none") / ce
    assert ratio.tolist() == pytest.approx([0.1**2, 0.5**2, 0.9**2], rel=1e-5)  # (1 - p_t)^gamma
    assert ratio[0] * 100 == pytest.approx(1.0, rel=1e-4)  # Lin et al.: p_t = 0.9 counts 100x less
    # So the hard example weighs more in the focal loss's total than in the cross-entropy's.
    focal = focal_loss(logits, labels, gamma=2, reduction="none")
    assert focal[2] / focal.sum() > ce[2] / ce.sum()


def test_gradients_are_finite_for_confident_predictions_and_fractional_gamma():
    logits = torch.tensor([[60.0, -60.0], [0.0, 0.0]], requires_grad=True)  # p_t rounds to 1 in float32
    loss = focal_loss(logits, torch.tensor([0, 0]), gamma=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    half = focal_loss(torch.zeros(1, 2, dtype=torch.bfloat16), torch.tensor([1]), gamma=2)
    assert half.dtype == torch.float32 and half.item() == pytest.approx(0.25 * math.log(2), rel=1e-6)


def test_focal_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shape \\(N, num_classes\\)"):
        focal_loss(torch.zeros(4), LABELS)
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        focal_loss(LOGITS, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer class indices"):
        focal_loss(LOGITS, LABELS.float())
    with pytest.raises(ValueError, match="lie in \\[0, 3\\)"):
        focal_loss(LOGITS, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        focal_loss(LOGITS, LABELS, gamma=-0.5)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        focal_loss(LOGITS, LABELS, gamma=float("nan"))
    with pytest.raises(ValueError, match="one weight per class"):
        focal_loss(LOGITS, LABELS, alpha=[1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        focal_loss(LOGITS, LABELS, alpha=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(LOGITS, LABELS, reduction="batchmean")


def test_balanced_class_weights_by_hand_and_as_a_loss_weight():
    weights = balanced_class_weights([0, 0, 0, 1], num_classes=2)
    assert weights.dtype == torch.float32 and weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    assert balanced_class_weights(torch.tensor([2, 0, 1, 1]), 3).tolist() == pytest.approx([4 / 3, 2 / 3, 4 / 3])
    assert balanced_class_weights(np.array([1, 1, 0]), 2).tolist() == pytest.approx([3 / 2, 3 / 4])
    # As F.cross_entropy's weight (the usual class-weighted loss).
    loss = partial(F.cross_entropy, weight=balanced_class_weights([0, 0, 2, 1, 2, 2], 3))
    assert torch.isfinite(loss(LOGITS, LABELS))


def test_balanced_weights_on_real_data_make_both_normalisations_agree_over_the_data_set():
    labels = rotten_tomatoes(seed=0)["train"]["label"]
    labels = [y for y in labels if y == 1] + [y for y in labels if y == 0][:200]  # make it imbalanced
    counts = np.bincount(labels, minlength=2)
    weights = balanced_class_weights(labels, num_classes=2)
    assert weights.tolist() == pytest.approx((len(labels) / (2 * counts)).tolist(), rel=1e-6)
    assert weights[0] > 1 > weights[1]  # the rare class weighs more
    # The balanced weights of all the examples add up to N, so over the whole data set focal_loss's plain
    # mean (gamma=0) and PyTorch's weighted mean agree; batch by batch they do not.
    y = torch.tensor(labels)
    logits = torch.randn(len(labels), 2, generator=torch.Generator().manual_seed(0))
    assert weights[y].sum().item() == pytest.approx(len(labels), rel=1e-5)
    assert focal_loss(logits, y, gamma=0, alpha=weights).item() == pytest.approx(
        F.cross_entropy(logits, y, weight=weights).item(), rel=1e-5
    )


def test_balanced_class_weights_rejects_bad_labels():
    with pytest.raises(ValueError, match="never occur"):
        balanced_class_weights([0, 0, 1], num_classes=3)
    with pytest.raises(ValueError, match="lie in \\[0, 2\\)"):
        balanced_class_weights([0, 1, 2], num_classes=2)
    with pytest.raises(ValueError, match="integer"):
        balanced_class_weights([0.0, 1.0], num_classes=2)
    with pytest.raises(ValueError, match="non-empty"):
        balanced_class_weights([], num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        balanced_class_weights([0], num_classes=0)
