"""train_classifier / predict_probabilities (helpers.training.classifier_runs) and dropout through the model
config, on Rotten Tomatoes (tiny sizes).

Early stopping, logging, the loss used and the dropout settings are mechanics: the model is the tiny random BERT
of tests/conftest.py (``tiny_classifier``, MiniLM's architecture and tokenizer at 2 blocks of width 32)."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers.data.batching import tokenize_for_classification
from helpers.data.loaders import rotten_tomatoes
from helpers.models.loading import load_classifier
from helpers.training.classifier_runs import predict_probabilities, restore_best_weights, train_classifier


def tokenized(tokenizer, split, n):
    return tokenize_for_classification(rotten_tomatoes(seed=0)[split].select(range(n)), tokenizer, max_length=24)


def test_dropout_comes_from_the_config_overrides(tiny_bert_dir):
    model, _ = load_classifier(
        str(tiny_bert_dir),
        num_labels=2,
        seed=0,
        config_overrides={"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.3},
    )
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.3} and model.config.hidden_dropout_prob == 0.3
    default, _ = load_classifier(str(tiny_bert_dir), num_labels=2, seed=0)
    assert {m.p for m in default.modules() if isinstance(m, nn.Dropout)} == {0.1}
    assert default.config.num_labels == 2


def four_epochs(tiny_classifier, tmp_path, learning_rate, eval_train=False, **settings):
    """Up to 4 epochs on 16 reviews, evaluated on 16 validation reviews (and the training ones with eval_train)."""
    model, tokenizer = tiny_classifier
    train, validation = tokenized(tokenizer, "train", 16), tokenized(tokenizer, "validation", 16)
    eval_sets = {"train": train, "validation": validation} if eval_train else {"validation": validation}
    run = train_classifier(
        model,
        tokenizer,
        train,
        tmp_path,
        num_epochs=4,
        learning_rate=learning_rate,
        batch_size=8,
        eval_sets=eval_sets,
        progress=False,
        **settings,
    )
    return run, validation


def validation_loss_in_hand(trainer, data):
    """Cross-entropy of the model in hand on ``data``, computed from its probabilities."""
    labels = np.asarray(data["labels"])
    probabilities = predict_probabilities(trainer, data)
    return -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))


def test_early_stopping_restores_the_best_epoch_and_curves_are_logged(tiny_classifier, tmp_path):
    run, validation = four_epochs(tiny_classifier, tmp_path, 3e-4, eval_train=True, early_stopping_patience=1)
    rows = run.epoch_metrics()
    validation_accuracies = [r["eval_validation_accuracy"] for r in rows if "eval_validation_accuracy" in r]
    assert any("eval_train_loss" in r for r in rows) and len(validation_accuracies) == round(run.epochs)
    assert run.trainer.state.best_metric == max(validation_accuracies)
    # The model in hand is the best epoch's, not the last one's: its validation accuracy is the best one.
    probabilities = predict_probabilities(run.trainer, validation)
    accuracy = float(np.mean(probabilities.argmax(-1) == np.asarray(validation["labels"])))
    assert accuracy == pytest.approx(run.trainer.state.best_metric)
    # Accuracies tie easily on 16 reviews; the validation loss tells the epochs apart. The run stopped after an
    # epoch that did not beat the best one (the first of equal ones), and the model in hand has the best one's loss.
    losses = [r["eval_validation_loss"] for r in rows if "eval_validation_loss" in r]
    best_epoch = validation_accuracies.index(max(validation_accuracies))
    assert best_epoch < len(losses) - 1 and losses[best_epoch] != pytest.approx(losses[-1], rel=1e-4)
    assert validation_loss_in_hand(run.trainer, validation) == pytest.approx(losses[best_epoch], rel=1e-4)
    assert probabilities.shape == (16, 2) and np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    assert run.examples_seen == round(16 * run.epochs) and run.seconds > 0


def test_early_stopping_needs_a_validation_set_and_loss_fn_is_used(tiny_classifier, tmp_path):
    model, tokenizer = tiny_classifier
    train = tokenized(tokenizer, "train", 8)
    with pytest.raises(ValueError, match="validation"):
        train_classifier(model, tokenizer, train, tmp_path, num_epochs=1, early_stopping_patience=1)
    calls = []

    def loss_fn(logits, labels):
        calls.append(len(labels))
        return torch.nn.functional.cross_entropy(logits, labels)

    before = next(model.parameters()).detach().clone()
    run = train_classifier(
        model, tokenizer, train, tmp_path, num_epochs=1, batch_size=4, loss_fn=loss_fn, progress=False
    )
    assert calls == [4, 4] and run.epochs == 1.0
    assert not torch.equal(before, next(run.model.parameters()).detach())  # it trained


def test_keep_best_weights_ends_on_the_last_epoch_and_restores_the_best_by_loss(tiny_classifier, tmp_path):
    run, validation = four_epochs(
        tiny_classifier, tmp_path, 3e-3, best_metric="validation_loss", keep_best_weights=True
    )
    rows = [r for r in run.epoch_metrics() if "eval_validation_loss" in r]
    losses = [r["eval_validation_loss"] for r in rows]
    assert run.epochs == 4.0 and len(losses) == 4  # no early stop
    assert run.trainer.state.best_metric == min(losses)
    assert losses.index(min(losses)) < 3  # this setting over-fits: the best epoch is not the last one
    assert validation_loss_in_hand(run.trainer, validation) == pytest.approx(losses[-1], rel=1e-4)  # the last epoch
    best_epoch = restore_best_weights(run)
    assert best_epoch == rows[losses.index(min(losses))]["epoch"]
    assert validation_loss_in_hand(run.trainer, validation) == pytest.approx(min(losses), rel=1e-4)
    # Only the best weights were saved, without optimizer state.
    saved = list(tmp_path.glob("checkpoint-*"))
    assert len(saved) == 1 and not list(saved[0].glob("optimizer.*"))


def test_best_weights_need_a_known_metric_a_validation_set_and_a_saved_run(tiny_classifier, tmp_path):
    model, tokenizer = tiny_classifier
    train = tokenized(tokenizer, "train", 8)
    with pytest.raises(ValueError, match="best_metric"):
        train_classifier(model, tokenizer, train, tmp_path, num_epochs=1, best_metric="validation_f1")
    with pytest.raises(ValueError, match="validation"):
        train_classifier(model, tokenizer, train, tmp_path, num_epochs=1, keep_best_weights=True)
    run = train_classifier(model, tokenizer, train, tmp_path, num_epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="keep_best_weights"):
        restore_best_weights(run)
