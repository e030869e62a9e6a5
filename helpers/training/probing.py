"""Start fine-tuning from a head that already classifies: a linear probe on the frozen encoder first.

``load_classifier`` gives a randomly initialised head. During the first
updates of a fine-tuning, the gradients that reach the pretrained encoder
then serve a head that knows nothing yet. Fitting the head first, as a
logistic regression on what the frozen encoder gives it (the feature-based
strategy of ``course/01_strategies.ipynb``), and only then fine-tuning
everything from there is "LP-FT" (Kumar et al., 2022, *Fine-Tuning can
Distort Pretrained Features and Underperform Out-of-Distribution*). It costs
one forward pass over the training texts. Taught in
``course/03_bert_classification.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.data.batching import batches_by_length
from helpers.device import FP32, Precision

__all__ = ["head_inputs", "fit_head_by_linear_probe"]


def _linear_head(model: PreTrainedModel) -> torch.nn.Linear:
    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(
            f"{type(model).__name__}: expected a linear classification head named 'classifier', "
            f"got {type(head).__name__}"
        )
    return head


@torch.inference_mode()
def head_inputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: str = "cpu",
    precision: Precision = FP32,
    batch_size: int = 64,
    max_length: int = 128,
) -> np.ndarray:
    """What the linear head ``model.classifier`` reads for each text, in eval mode: shape ``(len(texts), in_features)``.

    Captured by a hook on the head, so it is exactly its input: the mean of
    the tokens for the mean-pooling head, the pooler's output for the
    ``[CLS]`` head. Texts are batched by length and put back in order.
    """
    head = _linear_head(model)
    was_training = model.training
    model.eval()
    features = np.zeros((len(texts), head.in_features), dtype=np.float32)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        for idx, batch in batches_by_length(tokenizer, list(texts), device, batch_size, max_length, False, "probe"):
            captured.clear()
            with precision.autocast(device):
                model(**batch)
            features[idx] = captured[0].float().cpu().numpy()
    finally:
        hook.remove()
        model.train(was_training)
    return features


def fit_head_by_linear_probe(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int],
    device: str = "cpu",
    precision: Precision = FP32,
    C: float = 1.0,
    max_length: int = 128,
    seed: int = 42,
) -> LogisticRegression:
    """Fit a logistic regression on :func:`head_inputs` and copy it into ``model.classifier``; return it.

    The encoder is not changed. Afterwards the model's logits give the
    regression's predictions (for two classes, the logits are
    ``-z/2, +z/2`` with ``z`` the regression's score, which has the same
    softmax). ``C`` is the inverse L2 penalty of scikit-learn.
    """
    head = _linear_head(model)
    features = head_inputs(model, tokenizer, texts, device, precision, max_length=max_length)
    labels = np.asarray(labels)
    if labels.shape != (len(features),):
        raise ValueError(f"got {len(features)} texts and labels of shape {labels.shape}")
    probe = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(features, labels)
    weight = torch.as_tensor(probe.coef_, dtype=torch.float32)
    bias = torch.as_tensor(probe.intercept_, dtype=torch.float32)
    if head.out_features == 2 and len(probe.classes_) == 2:
        weight, bias = torch.cat([-weight / 2, weight / 2]), torch.cat([-bias / 2, bias / 2])
    elif len(probe.classes_) != head.out_features or list(probe.classes_) != list(range(head.out_features)):
        raise ValueError(f"the head has {head.out_features} outputs but the labels are {list(probe.classes_)}")
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.device, head.weight.dtype))
        head.bias.copy_(bias.to(head.bias.device, head.bias.dtype))
    return probe
