"""Freezing, parameter groups and training-state sizes (helpers.training.freezing).

The claims are about which parameters train, so they run on the tiny random models of tests/conftest.py
(``tiny_classifier``: a 2-block BERT, ``tiny_lm``: a 2-block Llama), fresh for each test: freezing changes them.
Expected layer indices and sizes are read from the model's config.
"""

import pytest
import torch

from helpers.data.loaders import rotten_tomatoes
from helpers.models.loading import load_tokenizer
from helpers.training.freezing import (
    freeze_backbone,
    freeze_embeddings,
    model_parts,
    optimizer_for,
    parameter_groups,
    trainable_summary,
    training_state_bytes,
    unfreeze_all,
    unfreeze_last_layers,
)


@pytest.fixture(scope="module")
def batch(tiny_bert_dir):
    tokenizer = load_tokenizer(str(tiny_bert_dir))  # MiniLM's tokenizer
    data = rotten_tomatoes(seed=0)["train"].select(range(8))
    encoded = tokenizer(list(data["text"]), padding=True, truncation=True, return_tensors="pt")
    encoded["labels"] = torch.tensor(list(data["label"]))
    return encoded


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def one_step(model, batch):
    """One AdamW step over *all* parameters: frozen ones must still not move."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    optimizer.zero_grad()
    model(**batch).loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}
    with torch.no_grad():  # put the weights back: one_step only reports what moves
        for name, p in model.named_parameters():
            p.copy_(before[name])
    return changed


def test_bert_parts(tiny_classifier):
    model, _ = tiny_classifier
    parts = model_parts(model)
    assert len(parts.layers) == model.config.num_hidden_layers == 2
    assert parts.layers == list(model.bert.encoder.layer) and parts.embeddings == [model.bert.embeddings]
    assert parts.head == [model.classifier] and parts.top == [model.bert.pooler]


def test_frozen_backbone_gets_no_gradient_and_does_not_move(tiny_classifier, batch):
    model, _ = tiny_classifier
    freeze_backbone(model)
    assert trainable_names(model) == {"classifier.weight", "classifier.bias"}
    assert one_step(model, batch) == {"classifier.weight", "classifier.bias"}
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("classifier"))
    assert trainable_summary(model)["trainable"] == model.config.hidden_size * 2 + 2


def test_progressive_unfreezing(tiny_classifier, batch):
    model, _ = tiny_classifier
    last = model.config.num_hidden_layers - 1  # 2 blocks: the last one trains, the one below stays frozen
    unfreeze_last_layers(model, 1)
    names = trainable_names(model)
    assert any(n.startswith(f"bert.encoder.layer.{last}.") for n in names)
    assert not any(n.startswith((f"bert.encoder.layer.{last - 1}.", "bert.embeddings.")) for n in names)
    assert {n for n in names if n.startswith(("bert.pooler", "classifier"))} == {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    }
    changed = one_step(model, batch)
    assert changed and changed <= names
    assert any(n.startswith(f"bert.encoder.layer.{last}.") for n in changed)  # the unfrozen block does learn
    unfreeze_last_layers(model, last + 1)  # all the blocks, still not the embeddings
    assert not any(n.startswith("bert.embeddings.") for n in trainable_names(model))
    assert any(n.startswith("bert.encoder.layer.0.") for n in trainable_names(model))
    with pytest.raises(ValueError, match=f"between 0 and {last + 1}"):
        unfreeze_last_layers(model, last + 2)


def test_frozen_embeddings_only(tiny_classifier, batch):
    model, _ = tiny_classifier
    unfreeze_all(model)
    freeze_embeddings(model)
    names = trainable_names(model)
    assert not any(n.startswith("bert.embeddings.") for n in names)
    assert len(names) == len(list(model.parameters())) - 5  # word, position, token type, LayerNorm weight and bias
    assert not any(n.startswith("bert.embeddings.") for n in one_step(model, batch))
    unfreeze_all(model)
    assert trainable_summary(model)["share"] == 1.0


def test_parameter_groups_rates_and_decay(tiny_classifier):
    model, _ = tiny_classifier
    blocks = model.config.num_hidden_layers
    unfreeze_all(model)
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.05, layer_lr_decay=0.5)
    where = {name: g for g in groups for name in g["names"]}
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
    assert where["classifier.weight"]["lr"] == 1e-3 and where["classifier.weight"]["weight_decay"] == 0.05
    assert where["bert.pooler.dense.weight"]["lr"] == 1e-3  # the top learns at the head's rate
    assert where["classifier.bias"]["weight_decay"] == 0.0
    assert where[f"bert.encoder.layer.{blocks - 1}.output.dense.weight"]["lr"] == pytest.approx(1e-3 * 0.5)
    assert where["bert.encoder.layer.0.output.dense.weight"]["lr"] == pytest.approx(1e-3 * 0.5**blocks)
    assert where["bert.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(1e-3 * 0.5 ** (blocks + 1))
    for name, group in where.items():
        if name.endswith(".bias") or "LayerNorm" in name:
            assert group["weight_decay"] == 0.0, name
    named = dict(model.named_parameters())
    for group in groups:
        assert all(p is named[n] for p, n in zip(group["params"], group["names"]))
    optimizer = optimizer_for(model, lr=1e-3, layer_lr_decay=0.5)
    assert sorted(g["lr"] for g in optimizer.param_groups) == sorted(
        g["lr"] for g in parameter_groups(model, 1e-3, 0.01, 0.5)
    )


def test_parameter_groups_skip_frozen_and_check_inputs(tiny_classifier):
    model, _ = tiny_classifier
    freeze_backbone(model)
    groups = parameter_groups(model, lr=1e-3)
    assert sorted(n for g in groups for n in g["names"]) == ["classifier.bias", "classifier.weight"]
    with pytest.raises(ValueError):
        parameter_groups(model, lr=1e-3, layer_lr_decay=1.5)
    unfreeze_all(model)


def test_llama_style_model(tiny_lm):
    model, _ = tiny_lm
    last = model.config.num_hidden_layers - 1
    parts = model_parts(model)
    assert len(parts.layers) == last + 1 == 2 and parts.top == [model.model.norm] and parts.head == [model.lm_head]
    assert parts.embeddings == [model.model.embed_tokens]
    unfreeze_last_layers(model, 1)
    names = trainable_names(model)
    assert any(n.startswith(f"model.layers.{last}.") for n in names)
    assert not any(n.startswith(f"model.layers.{last - 1}.") for n in names)
    assert "model.norm.weight" in names
    # Tied input and output embeddings (as in SmolLM2): the head is the embedding matrix, so it trains too.
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.lm_head.weight.requires_grad
    groups = parameter_groups(model, lr=1e-4)
    norms = [n for g in groups for n in g["names"] if "norm" in n]
    assert norms and all(g["weight_decay"] == 0.0 for g in groups for n in g["names"] if "norm" in n)


def test_training_state_bytes_follow_what_trains(tiny_classifier, batch):
    model, _ = tiny_classifier
    freeze_backbone(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    optimizer.step()
    state = training_state_bytes(model, optimizer)
    head = (model.config.hidden_size * 2 + 2) * 4
    assert state["weights"] == sum(p.numel() for p in model.parameters()) * 4
    assert state["gradients"] == head and state["optimizer"] == 2 * head  # Adam: two moments per weight
    model.zero_grad(set_to_none=True)
    unfreeze_all(model)
