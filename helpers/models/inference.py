"""Running trained (or untrained) models: batched classification and chat replies.

Taught in ``course/00_introduction.ipynb``; used by the later lessons (frozen sentence embeddings:
``course/07_overfitting_imbalance.ipynb``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.data.batching import batches_by_length
from helpers.models.heads import mean_pool

__all__ = ["predict_logits", "text_classification_pipeline", "chat_reply", "sentence_embeddings"]


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool = True,
) -> np.ndarray:
    """Logits of a sequence classifier for ``texts``, shape ``(len(texts), num_labels)``.

    Batches are padded only to their longest text (dynamic padding). Texts are
    processed by length so that each batch pads little, then put back in order.
    """
    model.eval()
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for idx, batch in batches_by_length(tokenizer, texts, device, batch_size, max_length, progress, "predict"):
        logits[idx] = model(**batch).logits.float().cpu().numpy()
    return logits


def text_classification_pipeline(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str = "cpu"):
    """``pipeline("text-classification")`` around a model object, whatever its class.

    ``pipeline("text-classification", model=folder)`` rebuilds the model with
    ``AutoModelForSequenceClassification``, which knows only the standard
    ``[CLS]`` head: a mean-pooling classifier saved in ``folder`` would come
    back with the wrong head, silently. Reload it with
    ``load_classifier(folder, num_labels, pooling="mean")`` and pass the model
    here. transformers then logs that the class is not in its list of
    text-classification models (a check of the name only: the pipeline
    calls the model and applies the softmax all the same); that one message
    is silenced. Taught in ``course/03_bert_classification.ipynb``.
    """
    import logging

    from transformers import pipeline
    from transformers.pipelines import base

    checker = logging.getLogger(base.logger.name)
    level = checker.level
    checker.setLevel(logging.CRITICAL)
    try:
        return pipeline("text-classification", model=model, tokenizer=tokenizer, device=device)
    finally:
        checker.setLevel(level)


def chat_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    message: str,
    device: str = "cpu",
    max_new_tokens: int = 48,
    system_prompt: str | None = None,
) -> str:
    """Greedy reply of a chat model to one user message, formatted with its own chat template."""
    from helpers.models.generation import generate

    if not tokenizer.chat_template:
        raise ValueError("this tokenizer has no chat template; format the prompt yourself")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": message}
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return generate(model, tokenizer, [prompt], device, max_new_tokens=max_new_tokens)[0]


@torch.inference_mode()
def sentence_embeddings(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool = False,
) -> np.ndarray:
    """One vector per text: the mean of the encoder's last hidden states over its real tokens, L2-normalised.

    Mean pooling is how ``all-MiniLM-L6-v2`` was trained to represent a
    sentence (its ``[CLS]`` token was not), so these vectors are good frozen
    features for a linear classifier (the feature-based strategy of
    ``course/01_strategies.ipynb``). Padding is excluded from the mean, so a
    text gets the same vector alone or in a padded batch. ``model`` may be a
    bare encoder or a task model around one (its ``base_model`` is used).
    Shape ``(len(texts), hidden_size)``; texts are batched by length and put
    back in order. Used by ``course/07_overfitting_imbalance.ipynb``.
    """
    encoder = getattr(model, "base_model", model)
    encoder.eval()
    vectors = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    for idx, batch in batches_by_length(tokenizer, texts, device, batch_size, max_length, progress, "embed"):
        mean = mean_pool(encoder(**batch).last_hidden_state.float(), batch["attention_mask"])
        vectors[idx] = torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
    return vectors
