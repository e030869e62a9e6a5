import pytest
import torch

from helpers.data.loaders import rotten_tomatoes
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

# ``minilm`` (tests/conftest.py) is a private copy for each test: freezing changes it.


@pytest.fixture(scope="module")
def batch(minilm_shared):
    _, tokenizer = minilm_shared
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


def test_bert_parts(minilm_shared):
    model, _ = minilm_shared
    parts = model_parts(model)
    assert len(parts.layers) == 6 and parts.head == [model.classifier] and parts.top == [model.bert.pooler]


def test_frozen_backbone_gets_no_gradient_and_does_not_move(minilm, batch):
    model, _ = minilm
    freeze_backbone(model)
    assert trainable_names(model) == {"classifier.weight", "classifier.bias"}
    assert one_step(model, batch) == {"classifier.weight", "classifier.bias"}
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("classifier"))
    assert trainable_summary(model)["trainable"] == 384 * 2 + 2


def test_progressive_unfreezing(minilm, batch):
    model, _ = minilm
    unfreeze_last_layers(model, 2)
    names = trainable_names(model)
    assert any(n.startswith("bert.encoder.layer.5.") for n in names) and any(
        n.startswith("bert.encoder.layer.4.") for n in names
    )
    assert not any(n.startswith(("bert.encoder.layer.3.", "bert.embeddings.")) for n in names)
    assert {n for n in names if n.startswith(("bert.pooler", "classifier"))} == {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    }
    changed = one_step(model, batch)
    assert changed and changed <= names
    with pytest.raises(ValueError, match="between 0 and 6"):
        unfreeze_last_layers(model, 7)


def test_frozen_embeddings_only(minilm, batch):
    model, _ = minilm
    unfreeze_all(model)
    freeze_embeddings(model)
    names = trainable_names(model)
    assert not any(n.startswith("bert.embeddings.") for n in names)
    assert len(names) == len(list(model.parameters())) - 5
    assert not any(n.startswith("bert.embeddings.") for n in one_step(model, batch))
    unfreeze_all(model)
    assert trainable_summary(model)["share"] == 1.0


def test_parameter_groups_rates_and_decay(minilm):
    model, _ = minilm
    unfreeze_all(model)
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.05, layer_lr_decay=0.5)
    where = {name: g for g in groups for name in g["names"]}
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
    assert where["classifier.weight"]["lr"] == 1e-3 and where["classifier.weight"]["weight_decay"] == 0.05
    assert where["classifier.bias"]["weight_decay"] == 0.0
    assert where["bert.encoder.layer.5.output.dense.weight"]["lr"] == pytest.approx(1e-3 * 0.5)
    assert where["bert.encoder.layer.0.output.dense.weight"]["lr"] == pytest.approx(1e-3 * 0.5**6)
    assert where["bert.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(1e-3 * 0.5**7)
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


def test_parameter_groups_skip_frozen_and_check_inputs(minilm):
    model, _ = minilm
    freeze_backbone(model)
    groups = parameter_groups(model, lr=1e-3)
    assert sorted(n for g in groups for n in g["names"]) == ["classifier.bias", "classifier.weight"]
    with pytest.raises(ValueError):
        parameter_groups(model, lr=1e-3, layer_lr_decay=1.5)
    unfreeze_all(model)


def test_llama_style_model(smollm_copy):
    model, _ = smollm_copy
    parts = model_parts(model)
    assert len(parts.layers) == 30 and parts.top == [model.model.norm] and parts.head == [model.lm_head]
    unfreeze_last_layers(model, 2)
    names = trainable_names(model)
    assert any(n.startswith("model.layers.29.") for n in names) and any(n.startswith("model.layers.28.") for n in names)
    assert not any(n.startswith("model.layers.27.") for n in names)
    assert "model.norm.weight" in names
    groups = parameter_groups(model, lr=1e-4)
    norms = [n for g in groups for n in g["names"] if "norm" in n]
    assert norms and all(g["weight_decay"] == 0.0 for g in groups for n in g["names"] if "norm" in n)


def test_training_state_bytes_follow_what_trains(minilm, batch):
    model, _ = minilm
    freeze_backbone(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    optimizer.step()
    state = training_state_bytes(model, optimizer)
    head = (384 * 2 + 2) * 4
    assert state["weights"] == sum(p.numel() for p in model.parameters()) * 4
    assert state["gradients"] == head and state["optimizer"] == 2 * head  # Adam: two moments per weight
    model.zero_grad(set_to_none=True)
    unfreeze_all(model)
