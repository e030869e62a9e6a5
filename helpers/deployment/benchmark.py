"""Measuring a deployed variant: latency per batch, agreement with the reference, generation speed.

Every variant of the deployment lesson (fp32, int8, ONNX) is measured with
the same functions on the same texts, so the summary table compares like
with like. Times are wall-clock medians over a few repeats after a warm-up
call (the first call of a model allocates memory, packs weights and picks
kernels). On a shared 2-core machine they move by 10-30% from one run to
the next: read the order of magnitude and the ratios, not the last digit.
Taught in ``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["batch_latency", "label_agreement", "generation_speed"]


def batch_latency(
    logits_fn: Callable[[list[str]], object],
    texts: Sequence[str],
    batch_size: int,
    repeats: int = 5,
    warmup: int = 1,
) -> dict:
    """Time ``logits_fn`` on one batch: the first ``batch_size`` of ``texts`` (repeated if there are fewer).

    ``logits_fn`` takes a list of texts and returns their logits (a
    predictor's ``.logits``, or a lambda around a model). Returns
    ``batch_size``, ``median_ms`` and ``min_ms`` (per batch, over
    ``repeats`` timed calls after ``warmup`` untimed ones) and
    ``texts_per_s`` (from the median). Taught in ``course/10_deployment.ipynb``.
    """
    if not texts:
        raise ValueError("batch_latency needs at least one text")
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"batch_size and repeats must be at least 1, got {batch_size} and {repeats}")
    batch = [texts[i % len(texts)] for i in range(batch_size)]
    for _ in range(warmup):
        logits_fn(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits_fn(batch)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "batch_size": batch_size,
        "median_ms": 1000 * median,
        "min_ms": 1000 * min(times),
        "texts_per_s": batch_size / median,
    }


def label_agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    """Share of rows whose highest logit is at the same index in both: how often two variants give the same label."""
    a, b = np.asarray(logits_a), np.asarray(logits_b)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(
            f"expected two non-empty (n, num_labels) arrays of the same shape, got {a.shape} and {b.shape}"
        )
    return float((a.argmax(-1) == b.argmax(-1)).mean())


@torch.inference_mode()
def generation_speed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int = 32,
    device: str = "cpu",
    repeats: int = 1,
) -> dict:
    """Greedy generation speed of a causal LM on one prompt: new tokens per second.

    Exactly ``max_new_tokens`` tokens are generated (the end-of-sequence
    token does not stop it early, so variants are timed on the same amount
    of work), after a warm-up of 2 tokens. Returns ``tokens_per_s``,
    ``seconds`` (median over ``repeats``), ``all_seconds`` (each run), ``new_tokens`` and ``text`` (the
    decoded continuation of the last run). Taught in ``course/10_deployment.ipynb``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    model.eval()
    batch = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(device)
    options = {
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "pad_token_id": tokenizer.pad_token_id,
    }
    model.generate(**batch, max_new_tokens=2, **options)
    times, output = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        output = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, **options)
        times.append(time.perf_counter() - start)
    new_tokens = output[0, batch["input_ids"].shape[1] :]
    seconds = float(np.median(times))
    return {
        "tokens_per_s": len(new_tokens) / seconds,
        "seconds": seconds,
        "all_seconds": [float(t) for t in times],  # every timed run: to tell a speed-up from the spread of runs
        "new_tokens": int(len(new_tokens)),
        "text": tokenizer.decode(new_tokens, skip_special_tokens=True),
    }
