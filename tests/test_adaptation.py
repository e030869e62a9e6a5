"""Full, partial and LoRA runs measured alike (helpers.training.adaptation), and the tables built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel
from torch import nn

from helpers.device import Precision
from helpers.evaluation.adaptation import adaptation_table
from helpers.measure import PeakMemory, peak_rss, stored_bytes
from helpers.training.adaptation import (
    AdaptationMethod,
    adapt_causal_lm,
    adapt_classifier,
    prepare_model,
    qlora_training_step,
    quantized_weight_bytes,
)
from helpers.training.lora import unwrap_peft

FP32 = Precision(name="fp32", reason="test", device="cpu")


def _trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def test_method_checks_its_fields():
    with pytest.raises(ValueError, match="kind"):
        AdaptationMethod("x", "adapter", 1e-3)
    with pytest.raises(ValueError, match="last_layers"):
        AdaptationMethod("x", "partial", 1e-3)
    with pytest.raises(ValueError, match="r >= 1"):
        AdaptationMethod("x", "lora", 1e-3, r=0)
    with pytest.raises(ValueError, match="learning_rate"):
        AdaptationMethod("x", "full", 0.0)


def test_prepare_model_leaves_the_base_alone(minilm_shared):
    base, _ = minilm_shared
    before = {name: p.requires_grad for name, p in base.named_parameters()}
    weights = {name: p.detach().clone() for name, p in base.named_parameters()}

    full = prepare_model(base, AdaptationMethod("full", "full", 1e-4), "seq_cls")
    assert all(p.requires_grad for p in full.parameters())
    partial = prepare_model(base, AdaptationMethod("partial", "partial", 1e-4, last_layers=2), "seq_cls")
    names = _trainable_names(partial)
    assert names and all(
        n.startswith(("bert.encoder.layer.4.", "bert.encoder.layer.5.", "classifier.", "bert.pooler")) for n in names
    )
    lora = prepare_model(base, AdaptationMethod("lora", "lora", 1e-3, r=4), "seq_cls")
    assert isinstance(lora, PeftModel)
    assert all("lora_" in n or "modules_to_save" in n for n in _trainable_names(lora))

    assert {name: p.requires_grad for name, p in base.named_parameters()} == before
    assert not any(isinstance(m, PeftModel) for m in base.modules())
    for name, p in base.named_parameters():
        assert torch.equal(p, weights[name])


def test_peak_rss_sees_memory_allocated_inside_the_block():
    outside = torch.ones(10_000_000)  # 40 MB held before the block: not counted
    with peak_rss() as memory:
        inside = torch.ones(50_000_000)  # 200 MB
        inside += 1
    if memory.method == "unavailable":
        pytest.skip("no way to read the resident memory on this system")
    assert memory.above_start is not None
    assert 150e6 < memory.above_start < 400e6
    del inside, outside


def test_peak_memory_without_numbers_has_none():
    assert PeakMemory().above_start is None
    assert PeakMemory(start=100, peak=50).above_start == 0


def _tiny_reviews(tokenizer, n: int = 16):
    from helpers.data.batching import tokenize_for_classification
    from helpers.data.loaders import rotten_tomatoes

    rows = rotten_tomatoes(seed=0)["train"].select(range(n))
    return tokenize_for_classification(rows, tokenizer, max_length=32)


@pytest.mark.parametrize(
    "method", [AdaptationMethod("full", "full", 1e-4), AdaptationMethod("lora", "lora", 1e-3, r=4)]
)
def test_adapt_classifier_measures_the_real_training_state(minilm_shared, tmp_path, method):
    base, tokenizer = minilm_shared
    data = _tiny_reviews(tokenizer)
    weights = {name: p.detach().clone() for name, p in base.named_parameters()}
    run = adapt_classifier(base, tokenizer, method, data, FP32, tmp_path, epochs=1, batch_size=8, progress=False)

    assert run.trainer.state.global_step == 2
    # fp32 weights, one fp32 gradient per trainable weight, AdamW's two moments per trainable weight
    assert run.state_bytes["weights"] == 4 * run.total
    assert run.state_bytes["gradients"] == 4 * run.trainable
    assert run.state_bytes["optimizer"] == 8 * run.trainable
    assert run.examples_per_second == pytest.approx(len(data) / run.seconds)
    assert run.tokens_per_second is None
    if method.kind == "lora":
        assert isinstance(run.model, PeftModel)
        assert run.trainable < 0.02 * run.total
        assert 4 * run.trainable < run.stored_bytes < 4 * run.trainable + 100_000  # the adapter file, not the model
    else:
        assert run.trainable == run.total
        assert run.stored_bytes > 4 * run.total
    for name, p in base.named_parameters():  # the base model did not train
        assert torch.equal(p, weights[name])
    row = run.costs()
    assert row["method"] == method.kind and row["trainable_share"] == run.trainable / run.total


def test_adapt_causal_lm_partial_and_lora_see_the_same_batches(smollm, tmp_path):
    from helpers.data.causal_lm import tokenize_instructions
    from helpers.data.instructions import instruction_dataset

    model, tokenizer = smollm
    rows = instruction_dataset(
        {"train": {"sentiment": 4, "topic": 0, "describe": 0, "qa": 0}, "validation": 0, "test": 0},
        seed=0,
        max_words=12,
    )["train"]
    data = tokenize_instructions(rows, tokenizer)
    partial = adapt_causal_lm(
        model,
        tokenizer,
        AdaptationMethod("p", "partial", 1e-4, last_layers=1),
        data,
        FP32,
        tmp_path / "p",
        batch_size=2,
        progress=False,
    )
    lora = adapt_causal_lm(
        model,
        tokenizer,
        AdaptationMethod("l", "lora", 1e-3, r=2),
        data,
        FP32,
        tmp_path / "l",
        batch_size=2,
        progress=False,
    )
    tokens = sum(len(ids) for ids in data["input_ids"])
    for run in (partial, lora):
        assert run.trainer.state.global_step == 2
        assert run.tokens_per_second == pytest.approx(tokens / run.seconds)
        assert run.state_bytes["optimizer"] == 8 * run.trainable
    # partial: the embeddings (tied with the output layer) stay frozen
    assert not unwrap_peft(partial.model).get_input_embeddings().weight.requires_grad
    assert lora.trainable < partial.trainable
    # the first logged losses are those of the same first batch through two copies of the same model
    first = [next(row["loss"] for row in run.trainer.state.log_history if "loss" in row) for run in (partial, lora)]
    assert first[0] == pytest.approx(first[1], abs=1e-4)


def test_stored_bytes_of_a_plain_model(minilm):
    base, _ = minilm  # a private copy: save_pretrained writes into the model's config (architectures)
    size = stored_bytes(base)
    weights = sum(p.numel() * p.element_size() for p in base.parameters())
    assert weights <= size < weights * 1.05


def test_adaptation_table_verdicts_and_starting_row():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 200).astype(float)
    better = np.maximum(base, rng.integers(0, 2, 200))  # right wherever base is, and more
    quality = {"départ": base, "complet": better, "lora": better.copy()}
    losses = rng.normal(3.0, 0.3, 50)
    retention = {"départ": losses, "complet": losses + 0.5, "lora": losses - 0.0}
    table = adaptation_table(
        {},
        quality,
        retention,
        quality_reference="complet",
        retention_reference="départ",
        retention_higher_is_better=False,
        seed=0,
    )
    assert list(table.index) == ["départ", "complet", "lora"]
    assert table.loc["complet", "quality_verdict"] == "reference"
    assert table.loc["départ", "quality_verdict"] == "worse"
    assert table.loc["lora", "quality_verdict"] == "indistinguishable"
    assert table.loc["complet", "retention_verdict"] == "worse"  # a higher loss is worse
    assert table.loc["départ", "retention_verdict"] == "reference"
    assert table.loc["départ", "method"] == "—"
    assert table.loc["complet", "quality"] == pytest.approx(better.mean())
    with pytest.raises(KeyError, match="quality reference"):
        adaptation_table({}, quality, retention, "missing", "départ", False)


def test_quantized_weight_bytes_by_hand():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 8)  # 800, stays in bf16
            self.block = nn.Linear(8, 16, bias=False)  # 128, quantized
            self.head = nn.Linear(8, 100, bias=False)  # 800: the output layer, stays in bf16
            self.norm = nn.LayerNorm(8)  # 16, stays in bf16

        def get_output_embeddings(self):
            return self.head

    sizes = quantized_weight_bytes(Tiny())
    total = 800 + 128 + 800 + 16
    assert sizes["fp32"] == 4 * total and sizes["bf16"] == 2 * total
    assert sizes["quantized_share"] == pytest.approx(128 / total)
    assert sizes["nf4"] == pytest.approx(128 * (4 + 8 / 64 + 32 / (64 * 256)) / 8 + 2 * (total - 128))


def test_qlora_refuses_without_a_cuda_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        qlora_training_step("smollm2-135m", 8, {}, device="cpu")


def test_peft_causal_lm_gets_the_scored_logits_collator(smollm_copy):
    from helpers.data.causal_lm import ScoredLogitsCollator, accepts_scored_logits, tokenize_instruction
    from helpers.training.lora import apply_lora, lora_config_for

    model, tokenizer = smollm_copy
    peft_model = apply_lora(model, lora_config_for("causal_lm", r=2))
    assert accepts_scored_logits(peft_model)
    features = [
        tokenize_instruction("Say yes.\n", "yes", tokenizer),
        tokenize_instruction("A longer prompt here.\n", "no", tokenizer),
    ]
    batch = ScoredLogitsCollator(tokenizer)(features)
    assert "logits_to_keep" in batch
    full = {k: v for k, v in batch.items() if k not in ("logits_to_keep", "shift_labels")}
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).loss, peft_model(**full).loss, rtol=0, atol=1e-5)


def test_encoder_probe_reads_the_adapters(minilm_shared):
    from helpers.data.loaders import stratified_subsample, wiki_topics
    from helpers.evaluation.forgetting import encoder_probe_correct

    base, tokenizer = minilm_shared
    topics = wiki_topics(seed=0)
    train, test = stratified_subsample(topics["train"], 44, seed=0), stratified_subsample(topics["test"], 22, seed=0)
    args = (tokenizer, train["text"], train["label"], test["text"], test["label"])
    correct = encoder_probe_correct(base, *args)
    assert correct.shape == (22,) and set(np.unique(correct)) <= {0.0, 1.0}
    assert correct.mean() > 1 / 11  # better than chance on 11 topics
    lora = prepare_model(base, AdaptationMethod("lora", "lora", 1e-3, r=4), "seq_cls")
    np.testing.assert_array_equal(encoder_probe_correct(lora, *args), correct)  # B = 0: the same encoder
    from helpers.models.inference import sentence_embeddings

    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    moved = sentence_embeddings(unwrap_peft(lora), tokenizer, test["text"][:4])
    assert not np.allclose(moved, sentence_embeddings(base, tokenizer, test["text"][:4]), atol=1e-3)


def test_stop_after_steps_keeps_the_planned_schedule(minilm_shared, tmp_path):
    from helpers.training.adaptation import StopAfterSteps
    from helpers.training.classifier_runs import train_classifier

    base, tokenizer = minilm_shared
    model = prepare_model(base, AdaptationMethod("lora", "lora", 1e-3, r=2), "seq_cls")
    run = train_classifier(
        model,
        tokenizer,
        _tiny_reviews(tokenizer, 24),
        tmp_path,
        num_epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        warmup=0.0,
        progress=False,
        callbacks=[StopAfterSteps(1)],
    )
    assert run.trainer.state.global_step == 1
    assert run.trainer.state.max_steps == 3  # planned for the whole run
    # linear decay planned over 3 steps: after one step the rate is 2/3 of the peak, not 0 as a 1-step plan gives
    assert run.trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 2 / 3)
    with pytest.raises(ValueError):
        StopAfterSteps(0)


def test_a_model_trained_in_bf16_is_given_back_without_the_autocast_wrapper(minilm_shared, tmp_path):
    """Trainer's accelerate wraps forward in autocast for bf16 training; the run's model computes in fp32 again."""
    base, tokenizer = minilm_shared
    bf16 = Precision(name="bf16", reason="test", autocast_dtype=torch.bfloat16, device="cpu")
    data = _tiny_reviews(tokenizer, 8)
    run = adapt_classifier(
        base,
        tokenizer,
        AdaptationMethod("full", "full", 1e-4),
        data,
        bf16,
        tmp_path,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    model = run.model.eval()
    assert "_original_forward" not in model.__dict__
    batch = dict(tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        plain = type(model).forward(model, **batch).logits  # the class's forward: no autocast
        torch.testing.assert_close(model(**batch).logits, plain, rtol=0, atol=0)
