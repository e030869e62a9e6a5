"""LoRA (low-rank adaptation) by hand and with PEFT, and supervised fine-tuning with TRL.

LoRA freezes a pretrained weight ``W`` (``out x in``) and learns a low-rank
update beside it: ``y = x W^T + b + (alpha / r) * (x A^T) B^T`` with ``A``
(``r x in``, random) and ``B`` (``out x r``, zeros: the model starts exactly
where the pretrained one is). :class:`LoRALinear` writes it in a few lines;
:func:`lora_config_for` / :func:`apply_lora` do it with PEFT on the course's
models (MiniLM, a BERT; SmolLM2, a Llama), :func:`merge_lora` folds the update
into ``W``, :func:`save_adapter` / :func:`load_adapter` keep only the update.
:func:`sft_config_for` and :func:`prompt_completion_dataset` run lesson 04's
instruction tuning with TRL's ``SFTTrainer`` (loss on the completion only).
Taught in ``course/11_peft.ipynb``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig

from helpers.data.instructions import format_prompt
from helpers.device import Precision
from helpers.measure import model_size_bytes
from helpers.training.freezing import trainable_summary

__all__ = [
    "LORA_TARGETS",
    "CLASSIFIER_HEAD",
    "lora_delta",
    "LoRALinear",
    "lora_config_for",
    "apply_lora",
    "trainable_parameters",
    "save_adapter",
    "load_adapter",
    "adapter_size_bytes",
    "merge_lora",
    "prompt_completion_dataset",
    "checkpointing_field",
    "trl_training_settings",
    "sft_config_for",
    "unwrap_peft",
]

# Module names (suffixes, PEFT matches ``name == t or name.endswith("." + t)``) of the linear layers LoRA adapts.
# BERT (MiniLM): attention.self.{query,key,value}, attention.output.dense; the feed-forward block is
# intermediate.dense and output.dense ("output.dense" also matches attention.output.dense; the pooler's
# "pooler.dense" matches neither).
# Llama (SmolLM2): self_attn.{q,k,v,o}_proj and mlp.{gate,up,down}_proj.
LORA_TARGETS: dict[str, dict[str, list[str]]] = {
    "seq_cls": {
        "attention": ["query", "key", "value", "attention.output.dense"],
        "attention+mlp": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    },
    "causal_lm": {
        "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "attention+mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
}
CLASSIFIER_HEAD = "classifier"  # BertForSequenceClassification's head: new, so it trains in full beside LoRA


def lora_delta(weight_shape: Sequence[int], A: torch.Tensor, B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """The update LoRA adds to a weight of shape ``(out, in)``: ``(alpha / r) * B @ A``.

    ``A`` is ``(r, in)``, ``B`` is ``(out, r)``: ``r * (in + out)`` numbers
    instead of ``in * out``. Raises ``ValueError`` when the shapes disagree.
    """
    out_features, in_features = weight_shape
    if A.shape != (r, in_features) or B.shape != (out_features, r):
        raise ValueError(
            f"for a weight {tuple(weight_shape)} and r={r}, A must be {(r, in_features)} and B "
            f"{(out_features, r)}; got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    return (alpha / r) * (B @ A)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (LoRA), written by hand.

    ``forward(x) = base(x) + (alpha / r) * dropout(x) A^T B^T``. ``A`` is
    initialised as PEFT does (Kaiming-uniform, ``a = sqrt(5)``, like
    ``nn.Linear``), ``B`` with zeros, so a fresh layer computes exactly what
    ``base`` does. Only ``A`` and ``B`` train.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"r must be at least 1, got {r}")
        self.base, self.r = base, r
        self.alpha = float(2 * r if alpha is None else alpha)
        self.scaling = self.alpha / r
        for parameter in base.parameters():
            parameter.requires_grad = False
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * (self.dropout(x) @ self.A.T) @ self.B.T

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) B A``: the weight of a plain ``nn.Linear`` that computes the same (without dropout)."""
        return self.base.weight + lora_delta(self.base.weight.shape, self.A, self.B, self.alpha, self.r)


def lora_config_for(
    model_kind: str, r: int, alpha: float | None = None, target: str = "attention", dropout: float = 0.05
) -> LoraConfig:
    """A PEFT ``LoraConfig`` for the course's models.

    ``model_kind``: ``"seq_cls"`` (MiniLM with a classification head: task
    ``SEQ_CLS``, and the new head ``classifier`` trains in full, as
    ``modules_to_save``) or ``"causal_lm"`` (SmolLM2: task ``CAUSAL_LM``).
    ``target``: ``"attention"`` (the query, key, value and output projections)
    or ``"attention+mlp"`` (plus the feed-forward layers): see
    :data:`LORA_TARGETS`. ``alpha`` defaults to ``2 * r``.
    """
    if model_kind not in LORA_TARGETS:
        raise ValueError(f"model_kind must be one of {sorted(LORA_TARGETS)}, got {model_kind!r}")
    if target not in LORA_TARGETS[model_kind]:
        raise ValueError(f"target must be one of {sorted(LORA_TARGETS[model_kind])}, got {target!r}")
    if r < 1:
        raise ValueError(f"r must be at least 1, got {r}")
    seq_cls = model_kind == "seq_cls"
    return LoraConfig(
        r=r,
        lora_alpha=2 * r if alpha is None else alpha,
        lora_dropout=dropout,
        target_modules=list(LORA_TARGETS[model_kind][target]),
        modules_to_save=[CLASSIFIER_HEAD] if seq_cls else None,
        task_type=TaskType.SEQ_CLS if seq_cls else TaskType.CAUSAL_LM,
    )


def apply_lora(model: PreTrainedModel, config: LoraConfig) -> PeftModel:
    """``get_peft_model``: LoRA layers around the targeted ones; every base weight is frozen.

    Changes ``model`` in place (its linear layers are wrapped): pass a copy to
    keep the original.
    """
    return get_peft_model(model, config)


def trainable_parameters(model: nn.Module) -> dict[str, float]:
    """``{"trainable", "total", "share"}``: trainable and total parameters (tied tensors once) and their ratio.

    On a PEFT model, ``total`` counts the base weights, the LoRA factors and the
    trained copy of a ``modules_to_save`` head (PEFT keeps the original beside it).
    """
    return trainable_summary(model)


def save_adapter(peft_model: PeftModel, folder: str | Path) -> Path:
    """``save_pretrained`` of the adapter alone (LoRA factors, trained head, ``adapter_config.json``)."""
    folder = Path(folder)
    peft_model.save_pretrained(folder)
    return folder


def load_adapter(base_model: PreTrainedModel, folder: str | Path, trainable: bool = False) -> PeftModel:
    """A saved adapter put back onto a fresh copy of its base model (``PeftModel.from_pretrained``).

    ``base_model`` is changed in place (its layers are wrapped). ``trainable``:
    keep training the adapter (else it is loaded for inference, frozen).
    """
    return PeftModel.from_pretrained(base_model, str(folder), is_trainable=trainable)


def adapter_size_bytes(peft_model: PeftModel, tmp_dir: str | Path) -> int:
    """Size on disk of the saved adapter (every file :func:`save_adapter` writes into ``tmp_dir``)."""

    return model_size_bytes(save_adapter(peft_model, tmp_dir))


def merge_lora(peft_model: PeftModel) -> PreTrainedModel:
    """``merge_and_unload``: each ``W`` becomes ``W + (alpha / r) B A`` and the LoRA layers go.

    The result is a plain transformers model (no extra cost at inference) that
    computes what the adapted one computes. ``peft_model``'s base is changed in place.
    """
    return peft_model.merge_and_unload()


def prompt_completion_dataset(
    instructions: Dataset, tokenizer: PreTrainedTokenizerBase, style: str = "chat"
) -> Dataset:
    """Instruction rows (``instruction``, ``input``, ``output``) as TRL's ``{"prompt", "completion"}`` rows.

    ``prompt`` is :func:`helpers.data.instructions.format_prompt`'s text and
    ``completion`` the response followed by the EOS token's text, as lesson
    04's :func:`helpers.data.causal_lm.tokenize_instruction` ends it (TRL
    would add it too). TRL tokenizes ``prompt + completion`` as one text and
    takes the completion to start where it stops matching the tokenized prompt
    alone: the same tokens as the course's (which tokenizes them apart) as long
    as no token straddles the boundary. The ``"chat"`` and ``"alpaca"`` prompts
    end with a newline, which never merges with the next word; the ``"qa"``
    prompt ends with a space (``"A: "``), which does (``" Positive"`` is one
    token): refused here, since TRL would then train on another text than the
    one the model reads at generation.
    """
    if style == "qa":
        raise ValueError(
            "style 'qa' ends its prompt with a space, which TRL's joint tokenization merges with the "
            "response's first word; use 'chat' or 'alpaca' (or lesson 04's own recipe)"
        )
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no EOS token to end the completions with")

    def convert(row: dict) -> dict[str, str]:
        return {
            "prompt": format_prompt(row["instruction"], row["input"], style, tokenizer),
            "completion": row["output"] + tokenizer.eos_token,
        }

    return instructions.map(convert, remove_columns=instructions.column_names)


def checkpointing_field(config_class: type = SFTConfig) -> str:
    """The field of ``config_class`` (``SFTConfig``, ``DPOConfig``...) that turns activation checkpointing on or off.

    transformers 5 renamed ``gradient_checkpointing`` to
    ``activation_checkpointing`` (5.24 has both: the old name is a deprecated
    alias that warns whenever it is set, and TRL's SFTConfig sets it by
    default); older versions only have the old name.
    """
    import dataclasses

    names = {field.name for field in dataclasses.fields(config_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def trl_training_settings(
    config_class: type,
    output_dir: str | Path,
    precision: Precision,
    device: str,
    max_steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    max_length: int,
    progress: bool,
) -> dict[str, Any]:
    """What the course's TRL configurations share (:func:`sft_config_for`, :func:`helpers.training.preference.dpo_config_for`).

    :func:`helpers.training.trainers.course_training_settings` (precision flags,
    clipping, schedule, seed, no tracker), then the budget, the rate and the
    batch size, ``weight_decay=0``, ``max_length``, no ``pad_to_multiple_of``,
    activation checkpointing off under ``config_class``'s name for it
    (:func:`checkpointing_field`), 20 log lines a run, nothing saved. Refuses a
    ``precision`` chosen for another device type than ``device``.
    """
    if torch.device(device).type != torch.device(precision.device).type:
        raise ValueError(f"precision {precision.name!r} was chosen for {precision.device!r}, not for {device!r}")
    from helpers.training.trainers import course_training_settings

    return {
        **course_training_settings(output_dir, precision, seed, progress),
        "max_steps": max_steps,
        "learning_rate": lr,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size,
        "weight_decay": 0.0,
        "max_length": max_length,
        "pad_to_multiple_of": None,
        checkpointing_field(config_class): False,
        "logging_steps": max(1, max_steps // 20),
        "save_strategy": "no",
    }


def sft_config_for(
    output_dir: str | Path,
    precision: Precision,
    device: str,
    max_steps: int,
    lr: float = 2e-4,
    batch_size: int = 8,
    seed: int = 42,
    max_length: int = 256,
    progress: bool = True,
    **settings: Any,
) -> SFTConfig:
    """A ``trl.SFTConfig`` set explicitly for this machine and for prompt-completion data.

    Explicit where TRL's defaults differ from ``TrainingArguments``' or break
    on a laptop: the precision flags of ``precision`` (SFTConfig defaults to
    ``bf16=True``; ``use_cpu=True`` on a CPU), activation checkpointing off
    (:func:`checkpointing_field`; TRL turns it on: it saves activation memory
    at the cost of a second forward pass, not worth it for the course's short
    sequences),
    ``completion_only_loss=True`` (labels ``-100`` on the prompt, as lesson
    04's collator), ``max_length`` (the former ``max_seq_length``),
    ``packing=False``, ``padding_free=False``, no ``pad_to_multiple_of``,
    ``report_to="none"``, nothing saved. ``weight_decay=0`` and a linear
    schedule as :func:`helpers.training.causal_lm.train_causal_lm`.
    ``settings`` go on top.
    """
    config = {
        **trl_training_settings(
            SFTConfig, output_dir, precision, device, max_steps, lr, batch_size, seed, max_length, progress
        ),
        "packing": False,
        "padding_free": False,
        "completion_only_loss": True,
        "assistant_only_loss": False,
    }
    return SFTConfig(**{**config, **settings})


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT model (its LoRA layers still active); any other model as it is."""
    return model.get_base_model() if isinstance(model, PeftModel) else model
