"""Full, partial and LoRA fine-tuning of the same model on the same data and budget, measured alike.

One :class:`AdaptationMethod` says which weights learn and at what rate:
``"full"`` (every weight), ``"partial"`` (the last blocks, as lesson 04 does on
a CPU) or ``"lora"`` (frozen weights plus low-rank updates,
:mod:`helpers.training.lora`). :func:`adapt_causal_lm` and
:func:`adapt_classifier` train a fresh copy of a base model with the course's
own recipes (:func:`helpers.training.causal_lm.train_causal_lm`,
:func:`helpers.training.classifier_runs.train_classifier`) and measure what a
choice between methods rests on:

- trainable and total parameters;
- the training state (weights, gradients, optimizer moments), read from the
  real tensors at the first optimizer step (:class:`TrainingStateProbe`);
- throughput (examples/s, and tokens/s for a causal LM) and wall time;
- the peak resident memory of the process during training, above what it held
  before (:func:`helpers.measure.peak_rss`);
- what must be stored per task: the saved adapter for LoRA, the saved model
  otherwise (real files).

Taught in ``course/11_peft.ipynb``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback

from helpers.device import Precision
from helpers.measure import peak_rss, stored_bytes
from helpers.training.freezing import freeze_embeddings, training_state_bytes, unfreeze_all, unfreeze_last_layers
from helpers.training.lora import apply_lora, lora_config_for, trainable_parameters
from helpers.training.trainers import StepTimer

__all__ = [
    "METHOD_KINDS",
    "AdaptationMethod",
    "prepare_model",
    "TrainingStateProbe",
    "AdaptationRun",
    "adapt_causal_lm",
    "adapt_classifier",
    "quantized_weight_bytes",
    "qlora_training_step",
    "StopAfterSteps",
]

METHOD_KINDS = ("full", "partial", "lora")


@dataclass(frozen=True)
class AdaptationMethod:
    """Which weights learn, and at what rate.

    ``kind``: ``"full"``, ``"partial"`` (needs ``last_layers``: the head, the
    top and that many last blocks train; a causal LM's embeddings, tied with
    its output layer, stay frozen) or ``"lora"`` (needs ``r``; ``target`` is
    ``"attention"`` or ``"attention+mlp"``, ``alpha`` defaults to ``2 * r``).
    """

    name: str
    kind: str
    learning_rate: float
    last_layers: int | None = None
    r: int | None = None
    target: str = "attention"
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"kind must be one of {METHOD_KINDS}, got {self.kind!r}")
        if self.kind == "partial" and (self.last_layers is None or self.last_layers < 1):
            raise ValueError(f"{self.name}: a partial fine-tuning needs last_layers >= 1")
        if self.kind == "lora" and (self.r is None or self.r < 1):
            raise ValueError(f"{self.name}: a LoRA fine-tuning needs r >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"{self.name}: learning_rate must be positive, got {self.learning_rate}")


def prepare_model(base_model: PreTrainedModel, method: AdaptationMethod, model_kind: str) -> nn.Module:
    """A copy of ``base_model`` with only ``method``'s weights trainable (``base_model`` is not changed).

    ``model_kind``: ``"causal_lm"`` or ``"seq_cls"`` (see
    :func:`helpers.training.lora.lora_config_for`).
    """
    model = copy.deepcopy(base_model)
    if method.kind == "lora":
        return apply_lora(model, lora_config_for(model_kind, method.r, method.alpha, method.target))
    if method.kind == "full":
        unfreeze_all(model)
    else:
        unfreeze_last_layers(model, method.last_layers)
        if model_kind == "causal_lm":
            freeze_embeddings(model)  # tied with the output layer: both stay fixed, as in lesson 04
    return model


class TrainingStateProbe(TrainerCallback):
    """Records :func:`helpers.training.freezing.training_state_bytes` at the first optimizer step.

    ``on_optimizer_step`` runs after ``optimizer.step()`` and before the
    gradients are cleared: the weights, the gradients and the optimizer's
    moments all exist then, at their size for the rest of the run.
    """

    def __init__(self) -> None:
        self.state_bytes: dict[str, int] | None = None

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.state_bytes is None and model is not None:
            self.state_bytes = training_state_bytes(model, optimizer)


@dataclass
class AdaptationRun:
    """One trained copy and what its training cost."""

    method: AdaptationMethod
    trainer: Trainer = field(repr=False)
    seconds: float
    examples_per_second: float
    tokens_per_second: float | None
    trainable: int
    total: int
    state_bytes: dict[str, int]
    peak_rss_bytes: int | None
    stored_bytes: int
    step_seconds: list[float] = field(default_factory=list)  # each optimizer step (StepTimer)

    @property
    def model(self) -> nn.Module:
        return self.trainer.model

    @property
    def training_state_bytes(self) -> int:
        """Weights + gradients + optimizer state."""
        return sum(self.state_bytes.values())

    def costs(self) -> dict[str, float | int | str | None]:
        """The run's costs as one table row."""
        return {
            "method": self.method.kind,
            "learning_rate": self.method.learning_rate,
            "trainable": self.trainable,
            "total": self.total,
            "trainable_share": self.trainable / self.total,
            "training_state_MB": self.training_state_bytes / 1e6,
            "optimizer_state_MB": self.state_bytes["optimizer"] / 1e6,
            "examples_per_second": self.examples_per_second,
            "tokens_per_second": self.tokens_per_second,
            "train_seconds": self.seconds,
            "peak_rss_MB": None if self.peak_rss_bytes is None else self.peak_rss_bytes / 1e6,
            "stored_MB": self.stored_bytes / 1e6,
        }


def _measured(
    model: nn.Module, method: AdaptationMethod, train, examples: float, tokens: float | None
) -> AdaptationRun:
    """Train through ``train(callbacks) -> (trainer, seconds)`` and measure it."""
    counts = trainable_parameters(model)
    probe, timer = TrainingStateProbe(), StepTimer()
    with peak_rss() as memory:
        trainer, seconds = train([probe, timer])
    if probe.state_bytes is None:
        raise RuntimeError(f"{method.name}: the optimizer never stepped (no training data?)")
    trainer.optimizer = None  # the moments are measured; let them go before the next run
    return AdaptationRun(
        method=method,
        trainer=trainer,
        seconds=seconds,
        examples_per_second=examples / seconds,
        tokens_per_second=None if tokens is None else tokens / seconds,
        trainable=int(counts["trainable"]),
        total=int(counts["total"]),
        state_bytes=probe.state_bytes,
        peak_rss_bytes=memory.above_start,
        stored_bytes=stored_bytes(trainer.model),
        step_seconds=timer.step_seconds,
    )


def adapt_causal_lm(
    base_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    method: AdaptationMethod,
    train_dataset: Dataset,
    precision: Precision,
    output_dir: str | Path,
    epochs: float = 1.0,
    batch_size: int = 8,
    seed: int = 42,
    warmup: float = 0.1,
    progress: bool = True,
) -> AdaptationRun:
    """A copy of ``base_model`` trained with ``method`` on tokenized instruction examples, and its costs.

    Lesson 04's recipe (:func:`helpers.training.causal_lm.train_causal_lm`):
    labels only on the response, a linear schedule after ``warmup``, no
    weight decay; only the learning rate and the trainable weights differ
    between methods. The batch order follows ``seed`` alone, so every method
    sees the same batches.
    """
    from helpers.training.causal_lm import train_causal_lm

    torch.manual_seed(seed)
    model = prepare_model(base_model, method, "causal_lm")
    tokens = sum(len(ids) for ids in train_dataset["input_ids"]) * epochs

    def train(callbacks):
        return train_causal_lm(
            model,
            tokenizer,
            train_dataset,
            precision,
            str(output_dir),
            learning_rate=method.learning_rate,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            lr_scheduler_type="linear",
            warmup=warmup,
            progress=progress,
            callbacks=callbacks,
        )

    return _measured(model, method, train, len(train_dataset) * epochs, tokens)


def adapt_classifier(
    base_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    method: AdaptationMethod,
    train_dataset: Dataset,
    precision: Precision,
    output_dir: str | Path,
    epochs: float = 1.0,
    batch_size: int = 16,
    seed: int = 42,
    warmup: float = 0.1,
    progress: bool = True,
) -> AdaptationRun:
    """A copy of the classifier ``base_model`` trained with ``method`` on tokenized examples, and its costs.

    :func:`helpers.training.classifier_runs.train_classifier`'s recipe; the
    head trains in every method (in full beside LoRA: ``modules_to_save``).
    """
    from helpers.training.classifier_runs import train_classifier

    torch.manual_seed(seed)
    model = prepare_model(base_model, method, "seq_cls")

    def train(callbacks):
        run = train_classifier(
            model,
            tokenizer,
            train_dataset,
            output_dir,
            num_epochs=epochs,
            learning_rate=method.learning_rate,
            batch_size=batch_size,
            warmup=warmup,
            precision=precision,
            seed=seed,
            progress=progress,
            callbacks=callbacks,
        )
        return run.trainer, run.seconds

    return _measured(model, method, train, len(train_dataset) * epochs, None)


def quantized_weight_bytes(model: nn.Module) -> dict[str, float]:
    """Bytes of ``model``'s weights stored in fp32, in bf16, and as QLoRA stores its frozen base (NF4).

    QLoRA (Dettmers et al., 2023) stores the weights of the linear layers of
    the blocks in 4 bits (NF4), in blocks of 64 weights with one scale each;
    the scales are themselves quantized to 8 bits in blocks of 256 with one
    fp32 scale ("double quantization"): ``4 + 8/64 + 32/(64*256)`` bits per
    weight. The output layer (tied with the embeddings in SmolLM2), the
    embeddings and the norms stay in bf16. Computed from the parameter
    counts; the LoRA factors, trained in bf16 or fp32, come on top.
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skipped = {id(output)} if output is not None else set()
    quantized = sum(
        module.weight.numel()
        for module in model.modules()
        if isinstance(module, nn.Linear) and id(module) not in skipped
    )
    seen, total = set(), 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    nf4_bits = 4 + 8 / 64 + 32 / (64 * 256)
    return {
        "fp32": 4.0 * total,
        "bf16": 2.0 * total,
        "nf4": quantized * nf4_bits / 8 + 2.0 * (total - quantized),
        "quantized_share": quantized / total,
    }


def qlora_training_step(name: str, r: int, batch: dict[str, torch.Tensor], device: str = "cuda") -> dict[str, float]:
    """One QLoRA training step on a CUDA GPU: the base loaded in 4 bits (bitsandbytes), LoRA factors on top.

    Returns the model's memory footprint and the peak GPU memory of the step,
    in bytes. Needs a CUDA GPU and the ``bitsandbytes`` package (not part of
    the course's dependencies: ``pip install bitsandbytes``); raises
    ``RuntimeError`` otherwise.
    """
    import importlib.util

    if not (device.startswith("cuda") and torch.cuda.is_available()):
        raise RuntimeError("QLoRA's 4-bit layers (bitsandbytes) need a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("QLoRA needs bitsandbytes: pip install bitsandbytes")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from helpers.models.loading import model_source

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    torch.cuda.reset_peak_memory_stats(device)
    model = AutoModelForCausalLM.from_pretrained(
        model_source(name), quantization_config=quantization, device_map={"": device}
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = apply_lora(model, lora_config_for("causal_lm", r))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
    loss.backward()
    optimizer.step()
    return {
        "footprint_bytes": float(model.get_memory_footprint()),
        "peak_gpu_bytes": float(torch.cuda.max_memory_allocated(device)),
        "loss": float(loss),
    }


class StopAfterSteps(TrainerCallback):
    """Stops training after ``steps`` optimizer steps, leaving the learning-rate schedule planned for the whole run.

    To compare the first steps of two trainers that must follow the same
    schedule (``course/11_peft.ipynb`` runs TRL's ``SFTTrainer`` for a few steps
    of the course's LoRA run).
    """

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_training_stop = True
        return control
