"""Which parts of a pretrained model train: freezing by layer and layer-wise learning rates.

Works for BERT-style encoders (embeddings, ``encoder.layer``, pooler) and
Llama-style decoders (``embed_tokens``, ``layers``, final norm). Taught in
``course/01_strategies.ipynb`` (full fine-tuning, frozen backbone, progressive
unfreezing, layer-wise learning rates, frozen embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ModelParts",
    "model_parts",
    "set_trainable",
    "unfreeze_all",
    "freeze_backbone",
    "unfreeze_last_layers",
    "freeze_embeddings",
    "parameter_groups",
    "trainable_summary",
    "optimizer_for",
    "training_state_bytes",
]


@dataclass(frozen=True)
class ModelParts:
    """The parts of a pretrained model, bottom to top."""

    embeddings: list[nn.Module]
    layers: list[nn.Module]  # transformer blocks, bottom first
    top: list[nn.Module]  # inside the backbone, above the last block (BERT pooler, Llama final norm)
    head: list[nn.Module]  # the task head (classifier, score, lm_head)


def model_parts(model: nn.Module) -> ModelParts:
    """Split a Hugging Face model into embeddings, blocks, top and head.

    Raises ``ValueError`` for an architecture that is neither BERT-style nor Llama-style.
    """
    base = getattr(model, "base_model", model)
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer") and hasattr(base, "embeddings"):
        embeddings, layers = [base.embeddings], list(base.encoder.layer)
        top = [base.pooler] if getattr(base, "pooler", None) is not None else []
    elif hasattr(base, "layers") and hasattr(base, "embed_tokens"):
        embeddings, layers, top = [base.embed_tokens], list(base.layers), [base.norm]
    else:
        raise ValueError(f"{type(model).__name__}: expected a BERT-style or Llama-style model")
    head = [module for module in model.children() if module is not base and any(True for _ in module.parameters())]
    return ModelParts(embeddings=embeddings, layers=layers, top=top, head=head)


def set_trainable(modules: list[nn.Module], trainable: bool) -> None:
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad = trainable


def unfreeze_all(model: nn.Module) -> None:
    """Full fine-tuning: every parameter trains."""
    set_trainable([model], True)


def freeze_backbone(model: nn.Module) -> None:
    """Feature-based fine-tuning: only the task head trains.

    With tied input/output embeddings (SmolLM2), the head *is* the embedding
    matrix: it trains too.
    """
    set_trainable([model], False)
    set_trainable(model_parts(model).head, True)


def unfreeze_last_layers(model: nn.Module, num_layers: int) -> None:
    """Progressive unfreezing: the head, the top and the last ``num_layers`` blocks train; the rest is frozen."""
    parts = model_parts(model)
    if not 0 <= num_layers <= len(parts.layers):
        raise ValueError(f"num_layers must be between 0 and {len(parts.layers)}, got {num_layers}")
    freeze_backbone(model)
    set_trainable(parts.top + (parts.layers[-num_layers:] if num_layers else []), True)


def freeze_embeddings(model: nn.Module) -> None:
    """Keep the (most general) embedding layer fixed; the rest keeps its current state."""
    set_trainable(model_parts(model).embeddings, False)


def _no_decay(module: nn.Module, parameter_name: str) -> bool:
    # Biases and normalisation scales are not pulled towards zero: that would fight the normalisation.
    return parameter_name == "bias" or isinstance(module, nn.LayerNorm) or "Norm" in type(module).__name__


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float = 0.01, layer_lr_decay: float = 1.0
) -> list[dict]:
    """Optimizer parameter groups: layer-wise learning rates, no weight decay on biases and norms.

    The head and the top get ``lr``; block ``i`` of ``L`` (0 = bottom) gets
    ``lr * layer_lr_decay ** (L - i)``; the embeddings get
    ``lr * layer_lr_decay ** (L + 1)``. Only trainable parameters are included,
    each once. Each group also lists its parameter ``names`` (torch keeps
    extra keys), so the choice can be inspected.
    """
    if lr <= 0 or weight_decay < 0 or not 0 < layer_lr_decay <= 1:
        raise ValueError("need lr > 0, weight_decay >= 0 and 0 < layer_lr_decay <= 1")
    parts = model_parts(model)
    depth_of: dict[int, int] = {}
    num_layers = len(parts.layers)
    for depth, modules in [(num_layers + 1, parts.embeddings)] + [
        (num_layers - i, [layer]) for i, layer in enumerate(parts.layers)
    ]:
        for module in modules:
            for parameter in module.parameters():
                depth_of.setdefault(id(parameter), depth)
    groups: dict[tuple[int, bool], dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            depth = depth_of.get(id(parameter), 0)
            decay = not _no_decay(module, name)
            group = groups.setdefault(
                (depth, decay),
                {
                    "params": [],
                    "names": [],
                    "lr": lr * layer_lr_decay**depth,
                    "weight_decay": weight_decay if decay else 0.0,
                },
            )
            group["params"].append(parameter)
            group["names"].append(f"{module_name}.{name}" if module_name else name)
    return [groups[key] for key in sorted(groups)]


def trainable_summary(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts (tied tensors once) and the trainable share."""
    from helpers.models.loading import count_parameters

    total = count_parameters(model)
    trainable = count_parameters(model, trainable_only=True)
    return {"trainable": trainable, "total": total, "share": trainable / total if total else 0.0}


def optimizer_for(
    model: nn.Module, lr: float, weight_decay: float = 0.01, layer_lr_decay: float = 1.0
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`, fused (one kernel for all tensors) where PyTorch supports it.

    Fused AdamW is also ``Trainer``'s default, so both loops run the same update.
    """
    groups = parameter_groups(model, lr, weight_decay, layer_lr_decay)
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(groups)


def training_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes held by the weights, the gradients and the optimizer's state tensors (e.g. Adam's moments).

    Summed from the real tensors, shared ones once. Activations, which depend on
    the batch, are not included: on a GPU, ``torch.cuda.max_memory_allocated``
    measures those too. A tensor sharded across processes (a ``DTensor``, as
    FSDP's ``fully_shard`` makes them) counts for the shard this process holds.
    """

    def size(tensors) -> int:
        seen, total = set(), 0
        for tensor in tensors:
            if tensor is not None and torch.is_tensor(tensor) and id(tensor) not in seen:
                seen.add(id(tensor))
                held = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # this process's shard
                total += held.numel() * held.element_size()
        return total

    parameters = list(model.parameters())
    states = [] if optimizer is None else [v for state in optimizer.state.values() for v in state.values()]
    return {
        "weights": size(parameters),
        "gradients": size(p.grad for p in parameters),
        "optimizer": size(v for v in states if torch.is_tensor(v) and v.dim() > 0),
    }
