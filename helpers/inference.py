"""Running trained (or untrained) models: batched classification and chat replies.

Taught in ``course/00_introduction.ipynb``; used by the later lessons.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
    order = np.argsort([len(text) for text in texts], kind="stable")
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    batches = range(0, len(texts), batch_size)
    for start in tqdm(batches, desc="predict", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        logits[idx] = model(**batch).logits.float().cpu().numpy()
    return logits


def chat_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    message: str,
    device: str = "cpu",
    max_new_tokens: int = 48,
    system_prompt: str | None = None,
) -> str:
    """Greedy reply of a chat model to one user message, formatted with its own chat template."""
    from helpers.generation import generate

    if not tokenizer.chat_template:
        raise ValueError("this tokenizer has no chat template; format the prompt yourself")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": message}
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return generate(model, tokenizer, [prompt], device, max_new_tokens=max_new_tokens)[0]
