"""train_classifier / predict_probabilities (helpers.training.classifier_runs) and dropout through the model
config, on the real MiniLM and Rotten Tomatoes (tiny sizes)."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers.data.batching import tokenize_for_classification
from helpers.data.loaders import rotten_tomatoes
from helpers.models import load_classifier
from helpers.training.classifier_runs import predict_probabilities, train_classifier


def tokenized(tokenizer, split, n):
    return tokenize_for_classification(rotten_tomatoes(seed=0)[split].select(range(n)), tokenizer, max_length=24)


@pytest.mark.slow
def test_dropout_comes_from_the_config_overrides():
    model, _ = load_classifier(
        "minilm",
        num_labels=2,
        seed=0,
        config_overrides={"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.3},
    )
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.3} and model.config.hidden_dropout_prob == 0.3
    default, _ = load_classifier("minilm", num_labels=2, seed=0)
    assert {m.p for m in default.modules() if isinstance(m, nn.Dropout)} == {0.1}
    assert default.config.num_labels == 2


def test_early_stopping_restores_the_best_epoch_and_curves_are_logged(minilm, tmp_path):
    model, tokenizer = minilm
    train, validation = tokenized(tokenizer, "train", 16), tokenized(tokenizer, "validation", 16)
    run = train_classifier(
        model,
        tokenizer,
        train,
        tmp_path,
        num_epochs=4,
        learning_rate=3e-4,
        batch_size=8,
        eval_sets={"train": train, "validation": validation},
        early_stopping_patience=1,
        progress=False,
    )
    rows = run.epoch_metrics()
    validation_accuracies = [r["eval_validation_accuracy"] for r in rows if "eval_validation_accuracy" in r]
    assert any("eval_train_loss" in r for r in rows) and len(validation_accuracies) == round(run.epochs)
    assert run.trainer.state.best_metric == max(validation_accuracies)
    # The model in hand is the best epoch's, not the last one's: its validation accuracy is the best one.
    probabilities = predict_probabilities(run.trainer, validation)
    accuracy = float(np.mean(probabilities.argmax(-1) == np.asarray(validation["labels"])))
    assert accuracy == pytest.approx(run.trainer.state.best_metric)
    assert probabilities.shape == (16, 2) and np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    assert run.examples_seen == round(16 * run.epochs) and run.seconds > 0


def test_early_stopping_needs_a_validation_set_and_loss_fn_is_used(minilm, tmp_path):
    model, tokenizer = minilm
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
