"""The explicit training loop (helpers.training.loops) and the metrics.

Whether the loop learns is a claim about the real MiniLM (``minilm``, slow); schedules, accumulation,
evaluation, precision and timing are mechanics, checked on ``tiny_classifier`` (tests/conftest.py): a fresh
2-block random BERT with MiniLM's tokenizer.
"""

import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from helpers.data.loaders import rotten_tomatoes
from helpers.device import Precision
from helpers.evaluation.metrics import classification_metrics
from helpers.training.freezing import optimizer_for
from helpers.training.loops import evaluate, time_training_steps, train_loop


def loaders(tokenizer, n_train=32, n_eval=16, batch_size=8):
    splits = rotten_tomatoes(seed=0)

    def prepare(part, n):
        data = part.select(range(n)).map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True)
        return data.remove_columns(["text", "movie"]).rename_column("label", "labels")

    collate = DataCollatorWithPadding(tokenizer)
    return (
        DataLoader(prepare(splits["train"], n_train), batch_size=batch_size, shuffle=False, collate_fn=collate),
        DataLoader(prepare(splits["validation"], n_eval), batch_size=batch_size, collate_fn=collate),
    )


def test_explicit_loop_lowers_the_loss_on_real_data(minilm):
    model, tokenizer = minilm
    train, valid = loaders(tokenizer)
    history = train_loop(
        model,
        train,
        optimizer_for(model, lr=1e-4),
        num_epochs=3,
        eval_loader=valid,
        compute_metrics=classification_metrics,
        progress=False,
    )
    assert len(history["loss"]) == 3 * 4 and len(history["epoch_loss"]) == 3
    assert history["epoch_loss"][-1] < history["epoch_loss"][0]
    assert len(history["eval_loss"]) == 3 and set(history["eval_metrics"][0]) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "macro_f1",
        "balanced_accuracy",
    }
    lrs = history["lr"]  # warmup (ceil(0.1 * 12) = 2 updates of 12, as Trainer counts them) then linear decay
    assert lrs[:3] == pytest.approx([0, 5e-5, 1e-4]) and all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_a_run_stopped_early_follows_the_learning_rates_of_trainer_over_its_whole_schedule(tiny_classifier, tmp_path):
    """Trainer for 3 epochs and the loop stopped after 5 of the same 15 updates: same warmup, same decay."""
    import copy

    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, tokenizer = tiny_classifier
    train, valid = loaders(tokenizer, n_train=40, batch_size=8)  # 5 updates per epoch, 15 in all: warmup ceil(1.5) = 2

    class RecordLearningRate(TrainerCallback):
        def __init__(self):
            self.lrs = []

        def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
            self.lrs.append(lr_scheduler.get_last_lr()[0])  # the learning rate of the update about to be made

    recorder = RecordLearningRate()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-4,
        per_device_train_batch_size=8,
        num_train_epochs=3,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    Trainer(
        model=copy.deepcopy(model),
        args=args,
        train_dataset=train.dataset,
        data_collator=train.collate_fn,
        callbacks=[recorder],
    ).train()
    history = train_loop(
        copy.deepcopy(model),
        train,
        optimizer_for(model, lr=1e-4),
        num_epochs=3,
        stop_after_updates=7,
        warmup_ratio=0.1,
        eval_loader=valid,
        progress=False,
    )
    assert len(recorder.lrs) == 15 and recorder.lrs[2] == pytest.approx(1e-4)  # 2 warmup updates, then the peak
    assert history["lr"] == pytest.approx(recorder.lrs[:7], abs=1e-12)  # stopped in its second epoch
    assert len(history["loss"]) == 7 and len(history["eval_loss"]) == 2  # after epoch 1, then where it stopped
    whole = train_loop(copy.deepcopy(model), train, optimizer_for(model, lr=1e-4), num_epochs=1, progress=False)
    assert whole["lr"][-1] < history["lr"][4]  # a 1-epoch schedule decays faster: not the same run
    for wrong in (0, 16):
        with pytest.raises(ValueError, match="stop_after_updates"):
            train_loop(
                model, train, optimizer_for(model, lr=1e-4), num_epochs=3, stop_after_updates=wrong, progress=False
            )


def test_gradient_accumulation_makes_fewer_updates_of_the_same_size(tiny_classifier):
    model, tokenizer = tiny_classifier
    train, _ = loaders(tokenizer, n_train=40)  # 5 batches
    history = train_loop(
        model, train, optimizer_for(model, lr=1e-5), num_epochs=1, gradient_accumulation_steps=2, progress=False
    )
    assert len(history["loss"]) == 3  # 2 + 2 + a last partial group of 1


def without_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def accumulate_by_two_with_sgd(model, train):
    """One epoch of train_loop, k = 2, plain SGD at a constant 0.5: no warmup, no clipping, nothing but the groups."""
    return train_loop(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.5),
        gradient_accumulation_steps=2,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=None,
        progress=False,
    )


def test_a_last_partial_accumulation_group_is_the_mean_of_its_batches(tiny_classifier):
    """3 batches, k = 2: the groups are [1, 2] and [3]. The last update is batch 3's full gradient (not half of it),
    and each logged loss is the mean loss of its group's batches."""
    model, tokenizer = tiny_classifier
    without_dropout(model)
    train, _ = loaders(tokenizer, n_train=20)  # batches of 8, 8 and 4
    batches = list(train)
    expected = copy.deepcopy(model)
    expected.train()
    sgd = torch.optim.SGD(expected.parameters(), lr=0.5)
    expected_losses = []
    for group in (batches[:2], batches[2:]):
        losses = [expected(**batch).loss for batch in group]
        mean = torch.stack(losses).mean()
        mean.backward()
        sgd.step()
        sgd.zero_grad()
        expected_losses.append(mean.item())

    history = accumulate_by_two_with_sgd(model, train)
    assert history["loss"] == pytest.approx(expected_losses, rel=1e-5)
    for (name, got), want in zip(model.named_parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)


def test_an_epoch_of_accumulation_gives_trainers_losses_and_weights(tiny_classifier, tmp_path):
    """The same batches in the same order, k = 2 with a partial last group, SGD at a constant rate: the explicit
    loop and the course's Trainer log the same loss per update and end with the same weights.

    The course's Trainer is LossTrainer (helpers.training.trainers): the plain Trainer would not divide a BERT
    head's loss by k, because the head declares **kwargs without using num_items_in_batch (transformers issue
    #47688), and would log and step with k times the loss."""
    from transformers import TrainingArguments

    from helpers.training.trainers import LossTrainer

    model, tokenizer = tiny_classifier
    without_dropout(model)
    twin = copy.deepcopy(model)
    train, _ = loaders(tokenizer, n_train=40)  # 5 batches: groups of 2, 2 and 1
    history = accumulate_by_two_with_sgd(model, train)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        num_train_epochs=1,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping, as max_grad_norm=None above
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = LossTrainer(
        model=twin,
        args=args,
        train_dataset=train.dataset,
        data_collator=train.collate_fn,
        optimizers=(torch.optim.SGD(twin.parameters(), lr=0.5), None),
    )
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == len(history["loss"]) == 3
    assert history["loss"] == pytest.approx(logged, rel=1e-5)
    for (name, got), want in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)


def test_evaluate_matches_the_model_loss(tiny_classifier):
    model, tokenizer = tiny_classifier
    _, valid = loaders(tokenizer, n_eval=8)
    result = evaluate(model, valid)
    batch = next(iter(valid))
    with torch.no_grad():
        assert result["loss"] == pytest.approx(model(**batch).loss.item(), rel=1e-5)
    assert result["logits"].shape == (8, 2) and result["labels"].tolist() == batch["labels"].tolist()


def test_mixed_precision_settings_and_a_bf16_autocast_run(tiny_classifier):
    fp16 = Precision("fp16", "test", torch.float16, use_grad_scaler=True, device="cuda")
    assert fp16.trainer_kwargs() == {"bf16": False, "fp16": True}
    model, tokenizer = tiny_classifier
    train, _ = loaders(tokenizer, n_train=8)
    bf16 = Precision("bf16", "test", torch.bfloat16)
    history = train_loop(model, train, optimizer_for(model, lr=1e-5), precision=bf16, progress=False)
    assert np.isfinite(history["loss"]).all()


def test_metrics_match_scikit_learn_definitions():
    labels, preds = [0, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 1]
    m = classification_metrics(labels, preds)
    tp, fp, fn = 3, 0, 1
    assert m == pytest.approx(
        {
            "accuracy": 5 / 6,
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "macro_f1": f1_score(labels, preds, average="macro"),
            "balanced_accuracy": balanced_accuracy_score(labels, preds),
        }
    )
    macro = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2])
    assert macro["recall"] == pytest.approx((1 + 0 + 1) / 3)
    assert macro["balanced_accuracy"] == pytest.approx(balanced_accuracy_score([0, 1, 2, 2], [0, 2, 2, 2]))


def test_the_majority_baseline_is_not_flattered_by_class_weighted_scores():
    """The majority class is positive (label 1) on 60 % of the items: its F1 of class 1 is above its accuracy,
    its macro-F1 below it, and its balanced accuracy is exactly one half."""
    labels = [1] * 6 + [0] * 4
    always_positive = classification_metrics(labels, [1] * 10)
    assert always_positive["accuracy"] == pytest.approx(0.6)
    assert always_positive["f1"] == pytest.approx(0.75) and always_positive["f1"] > always_positive["accuracy"]
    assert always_positive["macro_f1"] == pytest.approx(0.375) and always_positive["balanced_accuracy"] == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        classification_metrics([0, 1], [0])


def test_time_training_steps_trains_and_times(tiny_classifier):
    model, tokenizer = tiny_classifier
    train, _ = loaders(tokenizer, n_train=24)
    before = model.classifier.weight.detach().clone()
    seconds = time_training_steps(model, train, torch.optim.SGD(model.parameters(), lr=0.1), num_steps=2)
    assert seconds > 0 and not torch.equal(before, model.classifier.weight)


def test_trainer_metrics_and_highest_loss_examples():
    from helpers.evaluation.metrics import highest_loss_examples, trainer_classification_metrics

    logits = np.array([[2.0, -1.0], [0.0, 3.0], [1.0, 0.0], [-2.0, 2.0]])
    labels = np.array([0, 0, 0, 1])
    assert trainer_classification_metrics((logits, labels)) == classification_metrics(labels, logits.argmax(-1))
    worst = highest_loss_examples(["a", "b", "c", "d"], labels, logits, ["neg", "pos"], k=2)
    assert list(worst["text"]) == ["b", "c"]  # b: confidently wrong; c: right but unsure
    expected = -torch.log_softmax(torch.tensor(logits[1]), -1)[0].item()
    assert worst.loc[0, "loss"] == pytest.approx(expected) and worst.loc[0, "predicted"] == "pos"
    assert worst.loc[0, "p(label)"] == pytest.approx(np.exp(-expected))
    with pytest.raises(ValueError, match="expected logits of shape"):
        highest_loss_examples(["a"], labels, logits, ["neg", "pos"])


def test_plot_trainer_log_reads_losses_and_metrics():
    import matplotlib

    matplotlib.use("Agg")
    from helpers.plots import plot_trainer_log

    log = [
        {"loss": 0.7, "step": 5, "epoch": 0.5},
        {"loss": 0.5, "step": 10, "epoch": 1.0},
        {"eval_loss": 0.6, "eval_accuracy": 0.7, "step": 10, "epoch": 1.0},
    ]
    axes = plot_trainer_log(log)
    assert len(axes) == 2 and list(axes[1].lines[0].get_ydata()) == [0.7]
    assert list(axes[0].lines[0].get_ydata()) == [0.7, 0.5]
    assert len(plot_trainer_log(log, metric=None)) == 1
    with pytest.raises(ValueError, match="no evaluation"):
        plot_trainer_log(log[:2])
    with pytest.raises(ValueError, match="no 'eval_f1'"):
        plot_trainer_log(log, metric="eval_f1")
