"""Measuring a deployed variant: timings taken in interleaved rounds, speed-ups with intervals, agreement.

Every variant of the deployment lesson (fp32, int8, ONNX) is timed with the
same functions on the same inputs, so the summary table compares like with
like. On a shared 2-core machine a timing moves by 10-30 % from one call to
the next, and the machine's load drifts over a minute: the variants are
therefore timed in **rounds**, each round calling every variant once (in an
order that rotates), after an untimed warm-up call of each (the first call of
a model allocates memory, packs weights and picks kernels). A speed-up is
then the ratio of two variants' times in the same round, and its interval
comes from resampling the rounds (:func:`speedup`). Taught in
``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.evaluation.uncertainty import Interval, paired_bootstrap

__all__ = ["SpeedUp", "interleaved_timings", "speedup", "label_agreement", "generation_call"]


def interleaved_timings(
    calls: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of each call in ``calls``, once per round for ``rounds`` rounds, after ``warmup`` untimed calls of each.

    Round ``r`` starts with the ``r``-th call (modulo their number), so that no
    variant is always first or always last after another one. Returns, for
    each name, its ``rounds`` times in round order: the ``i``-th times of two
    variants were taken a few seconds apart, under the same load.
    Taught in ``course/10_deployment.ipynb``.
    """
    if not calls:
        raise ValueError("interleaved_timings needs at least one call")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be at least 1 and warmup at least 0, got {rounds} and {warmup}")
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


@dataclass(frozen=True)
class SpeedUp:
    """How many times faster a variant ran than the reference, over rounds of interleaved timings."""

    ratio: Interval  # reference seconds / variant seconds (geometric mean over rounds), with its interval
    verdict: str  # "better" (faster over the whole interval), "worse" (slower) or "indistinguishable"
    n: int  # rounds
    p_value: float = float("nan")

    def as_dict(self) -> dict:
        return {"ratio": self.ratio.as_dict(), "verdict": self.verdict, "n": self.n, "p_value": self.p_value}


def speedup(
    reference_seconds: Sequence[float], variant_seconds: Sequence[float], confidence: float = 0.95, seed: int = 0
) -> SpeedUp:
    """The variant's speed-up over the reference, from times taken in the same rounds (:func:`interleaved_timings`).

    Each round gives one ratio ``reference / variant``; the speed-up is their
    geometric mean, and its interval the paired bootstrap interval of the mean
    log-ratio over rounds (:func:`~helpers.evaluation.uncertainty.paired_bootstrap`),
    taken back to a ratio. ``"better"`` means faster over the whole interval
    (the ratio's interval above 1). Taught in ``course/10_deployment.ipynb``.
    """
    reference, variant = np.asarray(reference_seconds, dtype=float), np.asarray(variant_seconds, dtype=float)
    if reference.shape != variant.shape or reference.ndim != 1:
        raise ValueError(f"expected the same rounds for both, got {reference.shape} and {variant.shape}")
    if not (reference > 0).all() or not (variant > 0).all():
        raise ValueError("times must be positive seconds")
    comparison = paired_bootstrap(np.log(reference), np.log(variant), confidence=confidence, seed=seed)
    d = comparison.difference
    ratio = Interval(math.exp(d.value), math.exp(d.low), math.exp(d.high), confidence)
    return SpeedUp(ratio, comparison.verdict, comparison.n, comparison.p_value)


def label_agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    """Share of rows whose highest logit is at the same index in both: how often two variants give the same label."""
    a, b = np.asarray(logits_a), np.asarray(logits_b)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(
            f"expected two non-empty (n, num_labels) arrays of the same shape, got {a.shape} and {b.shape}"
        )
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def generation_call(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int = 32,
    device: str = "cpu",
) -> Callable[[], torch.Tensor]:
    """A call that greedily generates exactly ``max_new_tokens`` new tokens after ``prompt``, to time.

    The end-of-sequence token does not stop it early, so variants are timed on
    the same amount of work; it returns the new tokens. Pass it to
    :func:`interleaved_timings`; tokens per second are
    ``max_new_tokens / seconds``. Taught in ``course/10_deployment.ipynb``.
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

    @torch.inference_mode()
    def generate_tokens() -> torch.Tensor:
        output = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, **options)
        return output[0, batch["input_ids"].shape[1] :]

    return generate_tokens
