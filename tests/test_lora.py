"""LoRA by hand and with PEFT, merging and adapters, and TRL's SFT loss (helpers.training.lora).

Which layers PEFT wraps, what merging and reloading give back and which batch TRL builds do not depend on the
weights: the models are the tiny random BERT and Llama of tests/conftest.py (``tiny_classifier``, ``tiny_lm``),
the architectures of MiniLM and SmolLM2 with their real tokenizers.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from helpers.training.lora import (
    LORA_TARGETS,
    LoRALinear,
    adapter_size_bytes,
    apply_lora,
    load_adapter,
    lora_config_for,
    lora_delta,
    merge_lora,
    prompt_completion_dataset,
    sft_config_for,
    trainable_parameters,
)


class OneLayer(nn.Module):
    def __init__(self, in_features: int = 16, out_features: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _targeted_linears(model: nn.Module, targets: list[str]) -> list[nn.Linear]:
    """The base model's linear layers PEFT wraps for ``targets`` (same suffix rule as PEFT)."""
    return [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]


def _lora_count(model: nn.Module, targets: list[str], r: int) -> int:
    return sum(r * (layer.in_features + layer.out_features) for layer in _targeted_linears(model, targets))


def test_lora_by_hand_matches_peft_on_one_layer():
    torch.manual_seed(0)
    r, alpha = 4, 12
    layer = OneLayer()
    by_hand = LoRALinear(copy.deepcopy(layer.proj), r=r, alpha=alpha)
    x = torch.randn(5, 16)
    # A fresh layer is the base layer (B = 0); A follows PEFT's init: Kaiming-uniform, bound 1/sqrt(in).
    assert torch.equal(by_hand(x), layer(x))
    assert torch.count_nonzero(by_hand.B) == 0 and by_hand.A.abs().max() <= 1 / math.sqrt(16)
    assert {n for n, p in by_hand.named_parameters() if p.requires_grad} == {"A", "B"}
    with torch.no_grad():
        by_hand.B.normal_()  # a trained-looking update

    peft_model = get_peft_model(
        copy.deepcopy(layer), LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["proj"])
    )
    lora_layer = peft_model.base_model.model.proj
    assert torch.count_nonzero(lora_layer.lora_B["default"].weight) == 0
    assert lora_layer.lora_A["default"].weight.abs().max() <= 1 / math.sqrt(16)
    with torch.no_grad():
        lora_layer.lora_A["default"].weight.copy_(by_hand.A)
        lora_layer.lora_B["default"].weight.copy_(by_hand.B)
    expected = peft_model(x)
    torch.testing.assert_close(by_hand(x), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(expected, layer(x), atol=1e-3)  # the update is really there

    # W + (alpha/r) B A is what PEFT's merge writes into the layer.
    delta = lora_delta(layer.proj.weight.shape, by_hand.A, by_hand.B, alpha, r)
    torch.testing.assert_close(by_hand.merged_weight(), layer.proj.weight + delta)
    merged = merge_lora(peft_model)
    torch.testing.assert_close(merged.proj.weight, by_hand.merged_weight(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="A must be"):
        lora_delta((8, 16), by_hand.B, by_hand.A, alpha, r)


def test_lora_config_for_targets_and_errors():
    config = lora_config_for("seq_cls", r=8)
    assert config.lora_alpha == 16 and config.r == 8 and config.lora_dropout == 0.05
    assert config.modules_to_save == ["classifier"] and config.task_type == "SEQ_CLS"
    assert set(config.target_modules) == {"query", "key", "value", "attention.output.dense"}
    config = lora_config_for("causal_lm", r=4, alpha=4, target="attention+mlp")
    assert config.task_type == "CAUSAL_LM" and not config.modules_to_save and config.lora_alpha == 4
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for bad in (
        dict(model_kind="seq2seq", r=4),
        dict(model_kind="seq_cls", r=4, target="mlp"),
        dict(model_kind="causal_lm", r=0),
    ):
        with pytest.raises(ValueError):
            lora_config_for(**bad)


def _logits(model: nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_bert_lora_trains_adapters_and_head_and_merges(tiny_classifier, tmp_path):
    from helpers.data.loaders import rotten_tomatoes

    model, tokenizer = tiny_classifier
    base = copy.deepcopy(model).eval()
    rows = rotten_tomatoes(seed=0)["train"].select(range(8))
    batch = dict(tokenizer(list(rows["text"]), padding=True, truncation=True, max_length=48, return_tensors="pt"))
    labels = torch.tensor(list(rows["label"]))
    base_logits = _logits(base, batch)

    r = 4
    peft_model = apply_lora(model, lora_config_for("seq_cls", r=r, target="attention"))
    targets = LORA_TARGETS["seq_cls"]["attention"]
    layers = _targeted_linears(base, targets)
    assert len(layers) == 4 * base.config.num_hidden_layers  # q, k, v and the attention output, in every block
    head = sum(p.numel() for p in base.classifier.parameters())
    counts = trainable_parameters(peft_model)
    assert counts["trainable"] == _lora_count(base, targets, r) + head
    assert 0 < counts["share"] < 0.02
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or "classifier.modules_to_save" in name for name in trainable)
    # B = 0: a fresh LoRA model computes what the base model computes.
    torch.testing.assert_close(_logits(peft_model, batch), base_logits, rtol=0, atol=1e-6)

    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model(**batch, labels=labels).loss.backward()
    optimizer.step()
    tuned = _logits(peft_model, batch)
    assert not torch.allclose(tuned, base_logits, atol=1e-3)

    size = adapter_size_bytes(peft_model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert 0 < size < sum(p.numel() * p.element_size() for p in base.parameters()) / 10
    reloaded = load_adapter(copy.deepcopy(base), tmp_path / "adapter")
    assert isinstance(reloaded, PeftModel)
    torch.testing.assert_close(_logits(reloaded, batch), tuned, rtol=0, atol=1e-6)

    merged = merge_lora(peft_model)
    assert not isinstance(merged, PeftModel)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, batch), tuned, rtol=0, atol=1e-5)


def test_llama_lora_attention_and_mlp(tiny_lm):
    model, tokenizer = tiny_lm
    base = copy.deepcopy(model).eval()
    batch = dict(tokenizer(["The capital of France is", "A short story:"], padding=True, return_tensors="pt"))
    base_logits = _logits(base, batch)

    r = 4
    peft_model = apply_lora(model, lora_config_for("causal_lm", r=r, target="attention+mlp"))
    targets = LORA_TARGETS["causal_lm"]["attention+mlp"]
    assert len(_targeted_linears(base, targets)) == 7 * base.config.num_hidden_layers
    assert trainable_parameters(peft_model)["trainable"] == _lora_count(base, targets, r)
    assert all("lora_" in name for name, p in peft_model.named_parameters() if p.requires_grad)
    torch.testing.assert_close(_logits(peft_model, batch), base_logits, rtol=0, atol=1e-5)

    with torch.no_grad():  # a trained-looking update on every B
        generator = torch.Generator().manual_seed(0)
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 1e-2)
    tuned = _logits(peft_model, batch)
    assert not torch.allclose(tuned, base_logits, atol=1e-3)
    torch.testing.assert_close(_logits(merge_lora(peft_model), batch), tuned, rtol=1e-4, atol=1e-4)


def test_sft_config_for_is_explicit_for_the_machine(tmp_path):
    from helpers.device import Precision

    precision = Precision(name="fp32", reason="test", device="cpu")
    config = sft_config_for(tmp_path, precision, "cpu", max_steps=3, lr=1e-4, batch_size=2, seed=1, max_length=64)
    assert config.use_cpu and not config.bf16 and not config.fp16
    assert config.completion_only_loss is True and config.packing is False and config.max_length == 64
    assert config.gradient_checkpointing is False and getattr(config, "activation_checkpointing", False) is False
    assert config.report_to in ("none", [], ["none"])
    assert (config.max_steps, config.learning_rate, config.per_device_train_batch_size, config.seed) == (3, 1e-4, 2, 1)
    with pytest.raises(ValueError, match="chosen for"):
        sft_config_for(tmp_path, precision, "cuda", max_steps=1)


def test_trl_sft_loss_equals_the_course_recipe(tiny_lm, tmp_path):
    """TRL's SFTTrainer and lesson 04's tokenize_instructions + instruction_collator build the same batch."""
    from trl import SFTTrainer

    from helpers.data.causal_lm import IGNORE_INDEX, instruction_collator, tokenize_instructions
    from helpers.data.instructions import instruction_dataset
    from helpers.device import Precision

    model, tokenizer = tiny_lm
    model.eval()
    rows = instruction_dataset({"train": 1, "validation": 0, "test": 0})["train"]  # one row per task: 4 rows
    assert len(rows) == 4
    max_length = 256
    ours = instruction_collator(tokenizer)(list(tokenize_instructions(rows, tokenizer, "chat", max_length)))

    data = prompt_completion_dataset(rows, tokenizer, "chat")
    assert data.column_names == ["prompt", "completion"]
    assert all(c.endswith(tokenizer.eos_token) for c in data["completion"])
    config = sft_config_for(
        tmp_path,
        Precision(name="fp32", reason="test", device="cpu"),
        "cpu",
        max_steps=1,
        batch_size=4,
        max_length=max_length,
        progress=False,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    features = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    theirs = trainer.data_collator(features)

    assert torch.equal(theirs["input_ids"], ours["input_ids"])
    assert torch.equal(theirs["attention_mask"], ours["attention_mask"])
    assert torch.equal(theirs["labels"], ours["labels"])
    learned = ours["labels"] != IGNORE_INDEX
    assert 0 < learned.sum() < ours["attention_mask"].sum()  # the prompt is masked, the response is not

    with torch.no_grad():
        our_loss = model(**ours).loss
        their_loss = model(**theirs).loss
        trainer_loss = trainer.compute_loss(model, {k: v.clone() for k, v in theirs.items()})
    torch.testing.assert_close(their_loss, our_loss, rtol=0, atol=1e-5)
    # SFTTrainer.compute_loss computes it in chunks from the hidden states (fused_lm_head): rounding, ~1e-5.
    torch.testing.assert_close(trainer_loss, our_loss, rtol=0, atol=1e-4)


def test_prompt_completion_refuses_qa_style(tiny_lm):
    from datasets import Dataset

    _, tokenizer = tiny_lm
    rows = Dataset.from_list([{"instruction": "Is it good?", "input": "", "output": "Yes"}])
    with pytest.raises(ValueError, match="space"):
        prompt_completion_dataset(rows, tokenizer, "qa")
    alpaca = prompt_completion_dataset(rows, tokenizer, "alpaca")[0]
    assert alpaca["prompt"].endswith("\n") and alpaca["completion"] == "Yes" + tokenizer.eos_token
