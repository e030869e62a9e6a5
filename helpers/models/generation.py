"""Batched text generation: greedy or sampled, padded on the left.

A decoder-only model continues the *last* position of each row. Padding on
the right would put pad tokens between a short prompt and its continuation;
padding on the left keeps every prompt's end aligned, and the attention mask
hides the pads. :func:`generate` pads on the left by default and accepts
``padding_side="right"`` only to show what goes wrong.
Taught in ``course/04_gpt_instruction_tuning.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.data.instructions import MAX_NEW_TOKENS, few_shot_prompt, format_prompt

__all__ = ["generate", "answer_instructions"]


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    device: str = "cpu",
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 42,
    batch_size: int = 16,
    padding_side: str = "left",
    progress: bool = False,
) -> list[str]:
    """The continuation of each prompt (prompt removed, special tokens skipped, stripped).

    Greedy by default; ``do_sample=True`` draws each token from the
    distribution sharpened (``temperature`` < 1) or flattened (> 1), keeping
    the smallest set of tokens whose probability reaches ``top_p``. Prompts
    are batched by length; ``seed`` makes sampling reproducible. Generation
    stops at the model's end-of-sequence token or after ``max_new_tokens``.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
    if not prompts:
        return []
    model.eval()
    torch.manual_seed(seed)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        if do_sample
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad little
    replies: list[str] = [""] * len(prompts)
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [prompts[i] for i in idx],
            padding=True,
            padding_side=padding_side,
            add_special_tokens=False,
            return_tensors="pt",
        ).to(device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        for i, tokens in zip(idx, new_tokens):
            replies[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return replies


def answer_instructions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset,
    style: str = "chat",
    device: str = "cpu",
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    progress: bool = False,
    shots: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
    **sampling,
) -> list[str]:
    """The model's answer to every row of an instruction dataset, in order.

    Each task gets its own token budget (:data:`helpers.data.instructions.MAX_NEW_TOKENS`):
    a one-word label needs a few tokens, a description a few dozen;
    ``max_new_tokens`` caps them all (fast mode).
    ``shots``: worked examples per task (e.g. from
    :func:`helpers.data.instructions.few_shot_examples`), put before each
    question by :func:`helpers.data.instructions.few_shot_prompt`: the
    few-shot baseline of an untuned model. A task without shots is refused.
    ``sampling`` goes to :func:`generate` (``do_sample``, ``temperature``, ``top_p``, ``seed``).
    """
    answers: list[str] = [""] * len(dataset)
    rows = list(dataset)
    for task in dict.fromkeys(row["task"] for row in rows):
        idx = [i for i, row in enumerate(rows) if row["task"] == task]
        if shots is None:
            prompts = [format_prompt(rows[i]["instruction"], rows[i]["input"], style, tokenizer) for i in idx]
        elif task not in shots:
            raise ValueError(f"no worked examples for task {task!r}: shots has {sorted(shots)}")
        else:
            prompts = [
                few_shot_prompt(shots[task], rows[i]["instruction"], rows[i]["input"], style, tokenizer) for i in idx
            ]
        budget = min(MAX_NEW_TOKENS.get(task, 32), max_new_tokens or 10**6)
        replies = generate(
            model,
            tokenizer,
            prompts,
            device,
            max_new_tokens=budget,
            batch_size=batch_size,
            progress=progress,
            **sampling,
        )
        for i, reply in zip(idx, replies):
            answers[i] = reply
    return answers
