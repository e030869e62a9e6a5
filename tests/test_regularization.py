"""Elastic Weight Consolidation (helpers.training.regularization) on Rotten Tomatoes.

The Fisher's shapes and formula and the penalty's algebra do not depend on the weights: those tests run on
``tiny_classifier`` (tests/conftest.py), a fresh 2-block random BERT with MiniLM's tokenizer. Whether a strong EWC
holds the real MiniLM near its anchor stays on ``minilm`` (slow).
"""

import copy

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from helpers.data.loaders import rotten_tomatoes
from helpers.training.freezing import freeze_backbone
from helpers.training.regularization import EWC, DecoupledEWCCallback, EWCTrainer, fisher_diagonal
from helpers.training.trainers import LossTrainer
from tests.conftest import cpu_training_args


def reviews(tokenizer, n):
    data = rotten_tomatoes(seed=0)["train"].select(range(n))
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=16), batched=True)
    return data.remove_columns(["text", "movie"]).rename_column("label", "labels")


def loader(tokenizer, data, batch_size):
    return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=DataCollatorWithPadding(tokenizer))


def freeze_word_embeddings(model):
    """Most of the parameters (11.7M of MiniLM's 22.7M); frozen, they are skipped, and the tests run faster."""
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)


def test_fisher_has_the_parameters_shapes_is_non_negative_and_leaves_the_model_as_it_was(tiny_classifier):
    model, tokenizer = tiny_classifier
    freeze_word_embeddings(model)
    model.train()
    fisher = fisher_diagonal(model, loader(tokenizer, reviews(tokenizer, 4), batch_size=2))
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert set(fisher) == set(trainable) and "bert.embeddings.word_embeddings.weight" not in fisher
    for name, value in fisher.items():
        assert value.shape == trainable[name].shape and value.dtype == torch.float32
        assert bool((value >= 0).all()), name
    assert float(fisher["classifier.weight"].sum()) > 0
    assert sum(int((value > 0).sum()) for value in fisher.values()) > 0.5 * sum(v.numel() for v in fisher.values())
    # The rows of positions and token types no batch uses get no gradient; the blocks' entries almost all do.
    blocks = [value for name, value in fisher.items() if ".encoder." in name]
    assert sum(int((value > 0).sum()) for value in blocks) > 0.9 * sum(v.numel() for v in blocks)
    assert model.training  # put back in train mode
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated into .grad
    model.eval()
    fisher_diagonal(model, loader(tokenizer, reviews(tokenizer, 2), batch_size=2))
    assert not model.training


def test_fisher_is_the_mean_squared_gradient_of_the_loss(tiny_classifier):
    model, tokenizer = tiny_classifier
    freeze_backbone(model)  # only the head: classifier.weight and classifier.bias
    batches = list(loader(tokenizer, reviews(tokenizer, 6), batch_size=2))
    fisher = fisher_diagonal(model, batches)
    assert set(fisher) == {"classifier.weight", "classifier.bias"}
    model.eval()  # the estimate is computed without dropout
    squares = []
    for batch in batches:
        grads = torch.autograd.grad(model(**batch).loss, [model.classifier.weight, model.classifier.bias])
        squares.append([g.pow(2) for g in grads])
    for index, name in enumerate(["classifier.weight", "classifier.bias"]):
        expected = sum(square[index] for square in squares) / len(batches)
        assert torch.allclose(fisher[name], expected, rtol=1e-5, atol=1e-12)
    first = fisher_diagonal(model, batches, max_batches=1)
    assert torch.allclose(first["classifier.bias"], squares[0][1], rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="max_batches"):
        fisher_diagonal(model, batches, max_batches=0)
    with pytest.raises(ValueError, match="no batch"):
        fisher_diagonal(model, [])
    with pytest.raises(ValueError, match="labels"):
        fisher_diagonal(model, [{k: v for k, v in batches[0].items() if k != "labels"}])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        fisher_diagonal(model, batches)


def test_penalty_is_zero_at_the_anchor_and_quadratic_around_it(tiny_classifier):
    model, tokenizer = tiny_classifier
    freeze_word_embeddings(model)
    ewc = EWC.from_model(model, loader(tokenizer, reviews(tokenizer, 2), batch_size=2), lam=3.0)
    assert ewc.penalty(model).item() == 0.0 and ewc.distance(model) == 0.0
    delta = 1e-3
    total_fisher = sum(float(f.sum()) for f in ewc.fisher.values())
    anchored = [p for name, p in model.named_parameters() if name in ewc.anchor]
    with torch.no_grad():
        for p in anchored:
            p.add_(delta)
    once = ewc.penalty(model)
    assert once.item() == pytest.approx(3.0 / 2 * delta**2 * total_fisher, rel=1e-3)
    assert ewc.distance(model) == pytest.approx(delta * sum(p.numel() for p in anchored) ** 0.5, rel=1e-3)
    assert ewc.fisher_distance(model) == pytest.approx(delta * total_fisher**0.5, rel=1e-3)
    assert ewc.fisher_distance(model) ** 2 == pytest.approx(2 * once.item() / 3.0, rel=1e-3)  # penalty = lam/2 d^2
    # Its gradient is the spring's force lam * F * (theta - theta*).
    once.backward()
    assert torch.allclose(model.classifier.weight.grad, 3.0 * ewc.fisher["classifier.weight"] * delta, rtol=1e-3)
    with torch.no_grad():
        for p in anchored:
            p.add_(delta)
    assert ewc.penalty(model).item() == pytest.approx(4 * once.item(), rel=1e-3)
    # Twice the strength, twice the penalty.
    assert EWC(ewc.anchor, ewc.fisher, lam=6.0).penalty(model).item() == pytest.approx(8 * once.item(), rel=1e-3)


def test_pull_toward_anchor_is_a_stable_step_of_the_penalty_alone(tiny_classifier):
    model, tokenizer = tiny_classifier
    freeze_word_embeddings(model)
    ewc = EWC.from_model(model, loader(tokenizer, reviews(tokenizer, 4), batch_size=1), lam=2.0)
    names = list(ewc.anchor)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            named[name].add_(1e-2)
    moved = {name: named[name].detach().clone() for name in names}
    # A small step: the gradient step theta - s * lam * F * (theta - theta*), to first order.
    step = 1e-3 / max(float(f.max()) for f in ewc.fisher.values()) / 2.0
    ewc.pull_toward_anchor(model, step)
    for name in names:
        expected = moved[name] - step * 2.0 * ewc.fisher[name] * (moved[name] - ewc.anchor[name])
        assert torch.allclose(named[name], expected, rtol=0, atol=1e-8), name
    # A huge step lands on the anchor (no overshoot) wherever F > 0, and leaves F == 0 weights alone.
    before = {name: named[name].detach().clone() for name in names}
    EWC(ewc.anchor, ewc.fisher, lam=1e30).pull_toward_anchor(model, 1.0)
    for name in names:
        held = ewc.fisher[name] > 1e-20
        assert torch.allclose(named[name][held], ewc.anchor[name][held], atol=1e-7), name
        assert torch.equal(named[name][ewc.fisher[name] == 0], before[name][ewc.fisher[name] == 0]), name
    assert ewc.fisher_distance(model) < 1e-9
    # lam = 0 changes nothing; a negative step is refused.
    frozen = {name: named[name].detach().clone() for name in names}
    EWC(ewc.anchor, ewc.fisher, lam=0.0).pull_toward_anchor(model, 1.0)
    assert all(torch.equal(named[name], frozen[name]) for name in names)
    with pytest.raises(ValueError, match="step_size"):
        ewc.pull_toward_anchor(model, -1.0)


def test_ewc_rejects_inconsistent_parts(tiny_classifier):
    model, _ = tiny_classifier
    head = {"classifier.bias": torch.zeros(2)}
    with pytest.raises(ValueError, match="same parameters"):
        EWC(anchor=head, fisher={"classifier.weight": torch.zeros(2, model.config.hidden_size)})
    with pytest.raises(ValueError, match="non-negative"):
        EWC(anchor=head, fisher={"classifier.bias": -torch.ones(2)})
    with pytest.raises(ValueError, match="lam"):
        EWC(anchor=head, fisher={"classifier.bias": torch.ones(2)}, lam=-1.0)
    with pytest.raises(KeyError, match="no parameters named"):
        EWC(anchor={"nope": torch.zeros(1)}, fisher={"nope": torch.ones(1)}).penalty(model)
    with pytest.raises(ValueError, match="differs"):
        EWC(anchor={"classifier.bias": torch.zeros(3)}, fisher={"classifier.bias": torch.ones(3)}).penalty(model)


def test_a_strong_ewc_keeps_the_weights_closer_to_the_anchor(minilm, tmp_path):
    """Same model, data, seed and 4 AdamW steps at lr 1e-3: with EWC the weights end up much nearer the anchor.

    The Fisher of single examples is about 1e-7 per weight (22M weights share the loss), so lam must be
    large for lam * F * (theta - theta*) to outweigh the task's gradient. Gradient clipping is off: with
    Trainer's default max_grad_norm=1.0, the penalty's huge gradient is clipped, Adam's momentum from the
    first step wins, and over 4 steps the weights move *further* (measured: 6.1 against 5.1).
    """
    model, tokenizer = minilm
    freeze_word_embeddings(model)
    data = reviews(tokenizer, 8)
    ewc = EWC.from_model(model, loader(tokenizer, data.select(range(4)), batch_size=1), lam=1e10)

    def train(trainer_class, **kwargs):
        args = cpu_training_args(
            tmp_path, max_steps=4, per_device_train_batch_size=2, learning_rate=1e-3, max_grad_norm=0.0
        )
        trained = copy.deepcopy(model)
        trainer = trainer_class(
            model=trained, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer), **kwargs
        )
        trainer.train()
        return trained, trainer

    plain, _ = train(LossTrainer)
    held, trainer = train(EWCTrainer, ewc=ewc)
    assert ewc.distance(held) < 0.5 * ewc.distance(plain)
    assert ewc.penalty(held) < ewc.penalty(plain)
    penalties = [entry["ewc_penalty"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(penalties) == 4 and penalties[0] == 0.0 and penalties[-1] > 0  # zero at the anchor, the first step

    # The penalty joins the loss in training only: eval loss stays the task's.
    batch = next(iter(loader(tokenizer, data, batch_size=4)))
    with torch.no_grad():
        held.eval()
        assert trainer.compute_loss(held, batch).item() == pytest.approx(held(**batch).loss.item(), rel=1e-6)
        held.train()
        torch.manual_seed(0)
        total = trainer.compute_loss(held, batch)
        torch.manual_seed(0)  # the same dropout masks
        task = held(**batch).loss
        assert total.item() == pytest.approx(task.item() + ewc.penalty(held).item(), rel=1e-5)
    with pytest.raises(TypeError, match="EWC"):
        EWCTrainer(model=held, args=trainer.args, ewc={"lam": 1.0})


def test_decoupled_ewc_keeps_acting_where_the_penalty_in_the_loss_saturates(tiny_classifier, tmp_path):
    """Trainer's defaults (AdamW, clipping at 1), 6 steps of a tiny classifier, the Fisher of other reviews.

    In the loss, past some lam the penalty dominates every clipped gradient and Adam divides it out: lam 1e12
    and 1e16 end at the same weights. Decoupled (one proximal step of the penalty after each update), a
    larger lam holds the weights ever closer to the anchor, down to about nothing.
    """
    model, tokenizer = tiny_classifier
    freeze_word_embeddings(model)
    data = reviews(tokenizer, 12)
    ewc = EWC.from_model(model, loader(tokenizer, data.select(range(8, 12)), batch_size=1))

    def train(trainer_class=LossTrainer, **kwargs):
        args = cpu_training_args(  # Trainer's default clipping
            tmp_path, max_steps=6, per_device_train_batch_size=2, learning_rate=1e-3
        )
        trained = copy.deepcopy(model)
        trainer = trainer_class(
            model=trained,
            args=args,
            train_dataset=data.select(range(8)),
            data_collator=DataCollatorWithPadding(tokenizer),
            **kwargs,
        )
        trainer.train()
        return ewc.fisher_distance(trained)

    free = train()
    in_loss = {lam: train(EWCTrainer, ewc=EWC(ewc.anchor, ewc.fisher, lam=lam)) for lam in (1e12, 1e16)}
    assert in_loss[1e12] == pytest.approx(in_loss[1e16], rel=1e-3)
    assert in_loss[1e16] > 0.1 * free  # saturated well short of the anchor
    decoupled = {
        lam: train(callbacks=[DecoupledEWCCallback(EWC(ewc.anchor, ewc.fisher, lam=lam))])
        for lam in (0.0, 1e3, 1e6, 1e12)
    }
    assert decoupled[0.0] == pytest.approx(free, rel=1e-6)  # lam = 0: the plain run
    assert free > decoupled[1e3] > decoupled[1e6] > decoupled[1e12]
    assert decoupled[1e12] < 1e-2 * free
    with pytest.raises(TypeError, match="EWC"):
        DecoupledEWCCallback({"lam": 1.0})
