"""Lesson 05's helpers with tiny sizes: schedules, gradient accumulation, LR range test, search.

Every claim here is mechanics (a schedule followed, equal gradients, weights restored, trials recorded), so the
models are the tiny random BERT of tests/conftest.py with MiniLM's tokenizer: ``tiny_classifier`` (fresh for each
test) or loaded from ``tiny_bert_dir``.
"""

import copy

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithPadding

from helpers.data.batching import make_loader, tokenize_for_classification
from helpers.data.loaders import rotten_tomatoes, subsample
from helpers.training.accumulation import accumulation_check, batch_gradients, saved_activation_bytes, split_batch
from helpers.training.freezing import optimizer_for
from helpers.training.loops import time_training_steps, train_loop
from helpers.training.lr_finder import lr_range_test, smooth_losses, steepest_descent_lr
from helpers.training.schedules import make_scheduler, schedule_curve, warmup_steps_for


def tokenized(tokenizer, part="train", n=32, seed=0):
    return tokenize_for_classification(subsample(rotten_tomatoes(seed=0)[part], n, seed=seed), tokenizer, max_length=48)


# --- schedules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["constant", "linear", "cosine"])
def test_warmup_rises_from_zero_to_the_peak_over_its_length(name):
    curve = schedule_curve(name, num_training_steps=20, warmup_ratio=0.2, lr=0.5)
    warmup = warmup_steps_for(0.2, 20)
    assert warmup == 4
    assert curve[0] == 0.0
    assert curve[:warmup] == pytest.approx([0.5 * i / warmup for i in range(warmup)])
    assert curve[warmup] == pytest.approx(0.5) and curve.max() == pytest.approx(0.5)


def test_schedule_shapes_after_warmup_and_at_the_end():
    steps = 10
    constant = schedule_curve("constant", steps, 0.0, lr=1.0)
    linear = schedule_curve("linear", steps, 0.0, lr=1.0)
    cosine = schedule_curve("cosine", steps, 0.0, lr=1.0)
    assert np.all(constant == 1.0)
    assert linear == pytest.approx([1 - i / steps for i in range(steps)])
    assert cosine == pytest.approx([0.5 * (1 + np.cos(np.pi * i / steps)) for i in range(steps)])
    # after the last update both decaying schedules reach 0; the constant one stays at its peak
    for name, end in [("linear", 0.0), ("cosine", 0.0), ("constant", 1.0)]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make_scheduler(optimizer, name, steps, 2)
        for _ in range(steps):
            optimizer.step()
            scheduler.step()
        assert scheduler.get_last_lr()[0] == pytest.approx(end, abs=1e-12)


def test_schedule_arguments_are_checked():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_scheduler(optimizer, "polynomial", 10)
    with pytest.raises(ValueError, match="num_warmup_steps"):
        make_scheduler(optimizer, "linear", 10, 11)
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_steps_for(1.0, 10)


def test_train_loop_follows_the_schedule_it_is_given_and_keeps_predictions(tiny_classifier):
    model, tokenizer = tiny_classifier
    train = make_loader(tokenized(tokenizer, n=24), tokenizer, 4, shuffle=False)
    evaluation = tokenized(tokenizer, "validation", n=8)
    history = train_loop(
        model,
        train,
        optimizer_for(model, lr=1e-4),
        num_epochs=2,
        warmup_ratio=0.25,
        lr_scheduler_type="cosine",
        eval_loader=make_loader(evaluation, tokenizer, 4, shuffle=False),
        progress=False,
    )
    assert history["lr"] == pytest.approx(list(schedule_curve("cosine", 12, 0.25, lr=1e-4)))
    assert len(history["eval_predictions"]) == 2 and history["eval_predictions"][0].shape == (8,)
    assert list(history["eval_labels"]) == list(evaluation["labels"])


# --- batch size and gradient accumulation -------------------------------------------------------------------------


def test_accumulated_micro_batches_give_the_big_batch_gradient_and_update(tiny_classifier):
    model, tokenizer = tiny_classifier
    batch = next(iter(make_loader(tokenized(tokenizer, n=16), tokenizer, 16, shuffle=False)))
    weights = copy.deepcopy(model.state_dict())
    model.train()  # the check turns dropout off for itself, then gives the mode back
    check = accumulation_check(model, batch, accumulation_steps=4, lr=1e-4)
    assert check.batch_size == 16 and check.accumulation_steps == 4
    assert check.gradient_relative_difference < 1e-5 and check.update_relative_difference < 1e-4
    assert check.same()
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in weights.items())
    assert model.training


def test_micro_batches_without_the_1_over_k_weight_are_not_the_big_batch(tiny_classifier):
    """The check can fail: summing 4 micro-batch means (no division by 4) gives 4 times the gradient."""
    model, tokenizer = tiny_classifier
    model.eval()
    batch = next(iter(make_loader(tokenized(tokenizer, n=16), tokenizer, 16, shuffle=False)))
    whole = batch_gradients(model, batch, 1)
    model.zero_grad()
    for micro_batch in split_batch(batch, 4):
        model(**micro_batch).loss.backward()  # the mistake: no / 4
    summed = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    name = "classifier.weight"
    assert torch.allclose(summed[name], 4 * whole[name], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(summed[name], whole[name], rtol=1e-2)


def test_split_batch_refuses_unequal_micro_batches():
    batch = {"input_ids": torch.zeros(10, 3, dtype=torch.long), "labels": torch.zeros(10, dtype=torch.long)}
    assert [len(part["labels"]) for part in split_batch(batch, 5)] == [2] * 5
    with pytest.raises(ValueError, match="cannot be cut into 4 equal"):
        split_batch(batch, 4)


def test_saved_activations_grow_with_the_batch_and_time_covers_the_accumulated_update(tiny_classifier):
    model, tokenizer = tiny_classifier
    data = tokenized(tokenizer, n=32)
    big = next(iter(make_loader(data, tokenizer, 16, padding="max_length", max_length=48, shuffle=False)))
    small = split_batch(big, 4)[0]
    ratio = saved_activation_bytes(model, big) / saved_activation_bytes(model, small)
    assert 3.5 < ratio < 4.5
    loader = make_loader(data, tokenizer, 4, padding="max_length", max_length=48, shuffle=False)
    seconds = time_training_steps(
        model, loader, torch.optim.SGD(model.parameters(), lr=1e-3), num_steps=1, gradient_accumulation_steps=4
    )
    assert seconds > 0
    with pytest.raises(StopIteration):  # 8 batches hold one untimed and one timed update of 4, not two timed
        time_training_steps(
            model, loader, torch.optim.SGD(model.parameters(), lr=1e-3), num_steps=2, gradient_accumulation_steps=4
        )


# --- LR range test ------------------------------------------------------------------------------------------------


def test_lr_range_test_restores_weights_and_optimizer_state_and_stops_on_divergence(tiny_classifier):
    model, tokenizer = tiny_classifier
    loader = make_loader(tokenized(tokenizer, n=16), tokenizer, 8, shuffle=False)
    optimizer = optimizer_for(model, lr=3e-5)
    train_loop(model, loader, optimizer, progress=False)  # an optimizer with real Adam moments to restore
    weights = copy.deepcopy(model.state_dict())
    moments = copy.deepcopy(optimizer.state_dict())
    result = lr_range_test(model, loader, optimizer, min_lr=1e-6, max_lr=100.0, num_steps=30, progress=False)
    assert result.diverged and len(result.losses) < 30
    assert result.losses[-1] > 4 * min(result.losses[:-1])
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in weights.items())
    restored = optimizer.state_dict()
    assert [g["lr"] for g in restored["param_groups"]] == [g["lr"] for g in moments["param_groups"]]
    for key, state in moments["state"].items():
        assert torch.equal(restored["state"][key]["exp_avg"], state["exp_avg"])
    assert result.lrs[0] == pytest.approx(1e-6)
    assert result.lrs[1] / result.lrs[0] == pytest.approx(result.lrs[2] / result.lrs[1])
    assert result.suggested_lr == steepest_descent_lr(result.lrs, result.losses)  # smoothing 0: the exercise's rule


def test_smoothing_and_suggestion_rules():
    assert smooth_losses([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    smoothed = smooth_losses([2.0, 2.0, 2.0], 0.9)
    assert smoothed == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected: a constant stays constant
    assert steepest_descent_lr([1.0, 2.0, 3.0, 4.0], [5.0, 4.9, 1.0, 0.9]) in (2.0, 3.0)
    assert steepest_descent_lr([1e-3], [0.7]) == 1e-3
    with pytest.raises(ValueError, match="smoothing"):
        smooth_losses([1.0], 1.0)


# --- hyperparameter search ----------------------------------------------------------------------------------------


@pytest.mark.slow  # four Trainer runs under Optuna: ~5 s even on the tiny model
def test_search_returns_its_best_trial_and_repeats_its_proposals(tiny_bert_dir, tmp_path):
    from helpers.models.loading import load_classifier, load_tokenizer
    from helpers.training.search import search_hyperparameters

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    train, validation = tokenized(tokenizer, n=16), tokenized(tokenizer, "validation", n=12)

    def new_model():
        return load_classifier(str(tiny_bert_dir), num_labels=2, seed=0, pooling="mean")[0]

    space = {"learning_rate": (1e-5, 1e-3, "log"), "weight_decay": (0.0, 0.1, "linear")}
    first = search_hyperparameters(
        new_model, tokenizer, train, validation, tmp_path / "a", n_trials=3, space=space, batch_size=8
    )
    assert len(first.trials) == 3 and set(first.trials.columns) >= {"accuracy", "learning_rate", "weight_decay"}
    assert first.best_value == first.trials["accuracy"].max()
    assert first.trials.loc[first.best_number, "accuracy"] == first.best_value
    assert first.best_params == {k: first.trials.loc[first.best_number, k] for k in space}
    for number, correct in first.correct.items():  # the recorded items give back each trial's accuracy
        assert correct.shape == (12,) and correct.mean() == pytest.approx(first.trials.loc[number, "accuracy"])
    assert all(1e-5 <= lr <= 1e-3 for lr in first.trials["learning_rate"])
    again = search_hyperparameters(
        new_model, tokenizer, train, validation, tmp_path / "b", n_trials=1, space=space, batch_size=8
    )
    assert again.trials.loc[0, "learning_rate"] == first.trials.loc[0, "learning_rate"]  # seeded sampler
    with pytest.raises(ValueError, match="n_trials"):
        search_hyperparameters(new_model, tokenizer, train, validation, tmp_path / "c", n_trials=0)


# --- one run per setting --------------------------------------------------------------------------------------------


def test_train_and_evaluate_starts_from_the_given_head_and_scores_items_in_order(tiny_bert_dir):
    from helpers.models.loading import load_classifier, load_tokenizer
    from helpers.training.sweeps import train_and_evaluate

    name = str(tiny_bert_dir)
    tokenizer = load_tokenizer(name)
    train, evaluation = tokenized(tokenizer, n=16), tokenized(tokenizer, "validation", n=12)
    donor, _ = load_classifier(name, num_labels=2, seed=123, pooling="mean")
    head = copy.deepcopy(donor.classifier.state_dict())
    # a learning rate of ~0 leaves the model where it started: its predictions are the donor head's
    run = train_and_evaluate(
        train, evaluation, tokenizer, lr=1e-12, seed=0, num_epochs=2, batch_size=8, head_state=head, model_name=name
    )
    donor.eval()
    with torch.no_grad():
        batch = make_loader(evaluation, tokenizer, 12, shuffle=False)
        logits = donor(**{k: v for k, v in next(iter(batch)).items() if k != "labels"}).logits
    expected = (logits.argmax(-1).numpy() == np.asarray(evaluation["labels"])).astype(float)
    assert len(run.correct) == 2 and np.array_equal(run.final, expected)
    assert 0.5 <= run.majority_prediction_share() <= 1.0 and run.seconds > 0
    assert len(run.history["loss"]) == 4 and len(run.history["eval_loss"]) == 2


def test_skip_start_leaves_the_first_steps_out_of_the_suggestion():
    """A toy model whose loss is a known function of the step: the suggestion follows the documented rule."""

    class Scripted(torch.nn.Module):
        def __init__(self, losses):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.losses, self.calls = losses, 0

        def forward(self, x):
            loss = self.weight.sum() * 0 + self.losses[self.calls]
            self.calls += 1
            return type("Output", (), {"loss": loss})()

    # the steepest fall is at the first step; after step 2 it is at step 4
    losses = [5.0, 3.0, 2.9, 2.8, 2.0, 1.9, 1.85, 1.8]
    loader = [{"x": torch.zeros(1)}]
    model = Scripted(losses)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    whole = lr_range_test(model, loader, optimizer, min_lr=1e-4, max_lr=1.0, num_steps=8, progress=False)
    model.calls = 0
    skipped = lr_range_test(
        model, loader, optimizer, min_lr=1e-4, max_lr=1.0, num_steps=8, skip_start=2, progress=False
    )
    assert whole.suggested_lr == steepest_descent_lr(whole.lrs, losses) == whole.lrs[0]
    assert skipped.suggested_lr == steepest_descent_lr(skipped.lrs[2:], losses[2:])
    assert skipped.suggested_lr in (skipped.lrs[3], skipped.lrs[4])
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_unequal_micro_batches_need_sum_over_total_not_mean_over_k(tiny_classifier):
    """24 + 8 examples: the mean of the two means (each / 2) is not the 32 examples' mean, the sum / 32 is."""
    from helpers.training.accumulation import relative_difference, unequal_accumulation_gradients

    model, tokenizer = tiny_classifier
    model.eval()
    texts = rotten_tomatoes(seed=0)["train"].select(range(32))
    batch = DataCollatorWithPadding(tokenizer)(
        [
            dict(tokenizer(t, truncation=True, max_length=32), labels=label)
            for t, label in zip(texts["text"], texts["label"])
        ]
    )
    gradients = unequal_accumulation_gradients(model, batch, [24, 8])
    assert relative_difference(gradients["one batch"], gradients["sum / total"]) < 1e-5
    assert relative_difference(gradients["one batch"], gradients["mean / k"]) > 1e-2
    equal = unequal_accumulation_gradients(model, batch, [16, 16])  # equal sizes: both recipes are right
    assert relative_difference(equal["one batch"], equal["mean / k"]) < 1e-5
    with pytest.raises(ValueError, match="add up"):
        unequal_accumulation_gradients(model, batch, [24, 4])
