"""LossTrainer (helpers.training.trainers): Trainer with a loss of your choice, on Rotten Tomatoes.

The claims are mechanics (which loss is computed, what an update is), so they run on ``tiny_classifier``
(tests/conftest.py): a fresh 2-block random BERT with MiniLM's tokenizer for each test."""

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DataCollatorWithPadding, Trainer

from helpers.data.loaders import rotten_tomatoes
from helpers.training.losses import balanced_class_weights, focal_loss
from helpers.training.trainers import LossTrainer
from tests.conftest import cpu_training_args


def reviews(tokenizer, n=8, label=None, split="train"):
    """``n`` real Rotten Tomatoes reviews (only those of ``label`` if given), tokenized with ``labels``."""
    data = rotten_tomatoes(seed=0)[split]
    if label is not None:
        data = data.filter(lambda row: row["label"] == label)
    data = data.select(range(n)).map(lambda b: tokenizer(b["text"], truncation=True, max_length=16), batched=True)
    return data.remove_columns(["text", "movie"]).rename_column("label", "labels")


def fp32_args(tmp_path, **overrides):
    """Plain fp32 CPU arguments (whatever this CPU trains in natively), no saving, no reporting."""
    return cpu_training_args(tmp_path, **overrides)


def one_batch(tokenizer, data):
    return DataCollatorWithPadding(tokenizer)([data[i] for i in range(len(data))])


def test_loss_trainer_trains_and_evaluates_with_its_loss(tiny_classifier, tmp_path):
    model, tokenizer = tiny_classifier
    train, valid = reviews(tokenizer, 8), reviews(tokenizer, 8, split="validation")
    weights = balanced_class_weights(rotten_tomatoes(seed=0)["train"]["label"], num_classes=2)
    calls = []

    def weighted_ce(logits, labels):
        calls.append(len(labels))
        return F.cross_entropy(logits, labels, weight=weights)

    trainer = LossTrainer(
        model=model,
        args=fp32_args(tmp_path),
        train_dataset=train,
        eval_dataset=valid,
        data_collator=DataCollatorWithPadding(tokenizer),
        loss_fn=weighted_ce,
    )
    before = model.classifier.weight.detach().clone()
    result = trainer.train()
    assert result.global_step == 2 and calls == [4, 4]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, model.classifier.weight)
    # eval_loss is the same loss_fn, in eval mode, on the one validation batch.
    metrics = trainer.evaluate()
    batch = one_batch(tokenizer, valid)
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert metrics["eval_loss"] == pytest.approx(
        F.cross_entropy(logits, batch["labels"], weight=weights).item(), rel=1e-5
    )


@pytest.mark.parametrize(
    "loss_fn",
    [
        partial(F.cross_entropy, weight=torch.tensor([0.3, 1.7])),
        partial(focal_loss, gamma=2.0, alpha=torch.tensor([0.3, 1.7])),
    ],
    ids=["weighted-ce", "focal"],
)
def test_compute_loss_is_loss_fn_of_the_models_logits(tiny_classifier, tmp_path, loss_fn):
    model, tokenizer = tiny_classifier
    trainer = LossTrainer(model=model, args=fp32_args(tmp_path), loss_fn=loss_fn)
    batch = one_batch(tokenizer, reviews(tokenizer, 6))
    keys = set(batch)
    model.eval()  # dropout off: the two forward passes compute the same logits
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
        expected = loss_fn(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert outputs.logits.shape == (6, 2)
    assert set(batch) == keys  # the caller's batch keeps its labels
    # Without loss_fn, the model's own loss (the plain cross-entropy).
    plain = LossTrainer(model=model, args=fp32_args(tmp_path))
    with torch.no_grad():
        assert plain.compute_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-6)


def test_a_class_of_weight_zero_contributes_no_loss_and_no_update(tiny_classifier, tmp_path):
    model, tokenizer = tiny_classifier
    negatives = reviews(tokenizer, 8, label=0)
    loss_fn = partial(focal_loss, gamma=0.0, alpha=torch.tensor([0.0, 1.0]))  # class-weighted CE, plain mean
    trainer = LossTrainer(
        model=model,
        args=fp32_args(tmp_path, max_steps=1),
        train_dataset=negatives,
        data_collator=DataCollatorWithPadding(tokenizer),
        loss_fn=loss_fn,
    )
    batch = one_batch(tokenizer, negatives)
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    assert loss.item() == 0.0
    # PyTorch's weighted mean is 0 / 0 on such a batch.
    assert torch.isnan(F.cross_entropy(outputs.logits, batch["labels"], weight=torch.tensor([0.0, 1.0])))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.train()  # AdamW, weight decay 0: zero gradients make zero updates
    assert [entry["loss"] for entry in trainer.state.log_history if "loss" in entry] == [0.0]
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def _one_sgd_step(trainer_class, model, tokenizer, data, tmp_path, batch_size, accumulation, **kwargs):
    args = fp32_args(
        tmp_path,
        max_steps=1,
        optim="sgd",
        learning_rate=0.1,
        max_grad_norm=0.0,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer_class(
        model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer), **kwargs
    ).train()
    return torch.cat([(p.detach() - before[name]).flatten() for name, p in model.named_parameters()])


def close(update, reference):
    """Equal up to float rounding (the padding differs between batches of 2 and of 4)."""
    return float((update - reference).norm() / reference.norm()) < 1e-4


def test_gradient_accumulation_averages_a_per_batch_loss(tiny_classifier, tmp_path):
    """Batches of 2 accumulated twice make the same SGD step as one batch of 4 (no dropout, no clipping).

    In float64: the tiny random model's updates are small next to its weights (LayerNorm scales of 1), and
    float32 would round ``weight + update`` by ~1e-4 of the update."""
    model, tokenizer = tiny_classifier
    _no_dropout(model).double()
    data = reviews(tokenizer, 4)
    loss_fn = partial(F.cross_entropy, weight=torch.tensor([1.0, 1.0], dtype=torch.float64))
    one_batch_of_4 = _one_sgd_step(LossTrainer, copy.deepcopy(model), tokenizer, data, tmp_path, 4, 1, loss_fn=loss_fn)
    two_batches_of_2 = _one_sgd_step(
        LossTrainer, copy.deepcopy(model), tokenizer, data, tmp_path, 2, 2, loss_fn=loss_fn
    )
    assert one_batch_of_4.norm() > 0
    assert close(two_batches_of_2, one_batch_of_4)
    # The trap LossTrainer avoids: Trainer(compute_loss_func=...) counts the loss as already divided by the
    # accumulated batch, so a per-batch mean makes a step gradient_accumulation_steps times too large.
    per_batch_mean = lambda outputs, labels, num_items_in_batch=None: loss_fn(outputs.logits, labels)  # noqa: E731
    doubled = _one_sgd_step(
        Trainer, copy.deepcopy(model), tokenizer, data, tmp_path, 2, 2, compute_loss_func=per_batch_mean
    )
    assert close(doubled, 2 * one_batch_of_4)


def test_loss_trainer_rejects_compute_loss_func_and_batches_without_labels(tiny_classifier, tmp_path):
    model, tokenizer = tiny_classifier
    with pytest.raises(ValueError, match="compute_loss_func"):
        LossTrainer(
            model=model,
            args=fp32_args(tmp_path),
            loss_fn=F.cross_entropy,
            compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.logits.sum(),
        )
    with pytest.raises(TypeError, match="callable"):
        LossTrainer(model=model, args=fp32_args(tmp_path), loss_fn="cross_entropy")
    trainer = LossTrainer(model=model, args=fp32_args(tmp_path), loss_fn=F.cross_entropy)
    with pytest.raises(ValueError, match="'labels'"):
        trainer.compute_loss(model, dict(tokenizer(["a fine film"], return_tensors="pt")))


def test_step_timer_times_each_optimizer_step_and_only_those(tiny_classifier, tmp_path):
    """3 updates of 2 accumulated batches: 3 times, each covering its forward and backward passes (a model made slow
    in its forward by a known sleep shows it), none covering train()'s start-up."""
    import time

    from helpers.training.trainers import StepTimer

    model, tokenizer = tiny_classifier
    pause = 0.05
    original_forward = model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(pause)
        return original_forward(*args, **kwargs)

    model.forward = slow_forward
    timer = StepTimer()
    args = fp32_args(
        tmp_path, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2, remove_unused_columns=False
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=reviews(tokenizer, n=12),
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[timer],
    ).train()
    assert len(timer.step_seconds) == 3
    assert all(2 * pause <= seconds < 2 * pause + 5 for seconds in timer.step_seconds)  # two forwards per step
