"""The mean-pooling classification head (helpers.models.heads, load_classifier(pooling="mean")).

How the head is built, pooled, frozen, saved and reloaded does not depend on the weights: those tests run on the
tiny random BERT of tests/conftest.py (MiniLM's architecture and tokenizer at 2 blocks of width 32). That Trainer's
steps lower the real MiniLM's loss stays on the real model (slow).
"""

import copy

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithPadding, Trainer

from helpers.data.batching import make_loader, tokenize_for_classification
from helpers.data.loaders import rotten_tomatoes
from helpers.models.heads import BertMeanPoolingForSequenceClassification, mean_pool
from helpers.models.inference import sentence_embeddings
from helpers.models.loading import load_classifier
from helpers.training.freezing import (
    freeze_backbone,
    model_parts,
    optimizer_for,
    parameter_groups,
    unfreeze_last_layers,
)
from helpers.training.loops import evaluate, train_loop
from tests.conftest import cpu_training_args

TEXTS = [
    "A wonderful, moving film.",
    "Dull and far too long; I left before the end and did not miss a thing.",
    "Short.",
    "The actors do what they can with a script that has nothing to say.",
]


@pytest.fixture(scope="module")
def mean_tiny(tiny_bert_dir):
    """``load_classifier(<tiny BERT folder>, 2, seed=0, pooling="mean")`` for the module: read it, never change it."""
    model, tokenizer = load_classifier(str(tiny_bert_dir), num_labels=2, seed=0, pooling="mean")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def mean_minilm():
    """``load_classifier("minilm", 2, seed=0, pooling="mean")`` for the module: read it, never change it."""
    model, tokenizer = load_classifier("minilm", num_labels=2, seed=0, pooling="mean")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def reviews(mean_tiny):
    """32 real Rotten Tomatoes training reviews, tokenized (max 32 tokens) by MiniLM's tokenizer, with labels."""
    _, tokenizer = mean_tiny
    return tokenize_for_classification(rotten_tomatoes(seed=0)["train"].select(range(32)), tokenizer, max_length=32)


def test_mean_head_is_built_around_the_pretrained_encoder(mean_tiny, tiny_classifier, tiny_bert_dir):
    model, _ = mean_tiny
    cls_model, _ = tiny_classifier
    assert isinstance(model, BertMeanPoolingForSequenceClassification)
    assert model.bert.pooler is None and model.classifier.weight.shape == (2, model.config.hidden_size)
    encoder = dict(cls_model.bert.named_parameters())
    for name, parameter in model.bert.named_parameters():  # the same pretrained weights, no pooler
        assert torch.equal(parameter, encoder[name]), name
    again, _ = load_classifier(str(tiny_bert_dir), num_labels=2, seed=0, pooling="mean")
    assert torch.equal(again.classifier.weight, model.classifier.weight)  # the seed fixes the new head
    other, _ = load_classifier(str(tiny_bert_dir), num_labels=2, seed=1, pooling="mean")
    assert not torch.equal(other.classifier.weight, model.classifier.weight)
    assert model.dropout.p == model.config.hidden_dropout_prob
    dropped, _ = load_classifier(
        str(tiny_bert_dir), num_labels=2, seed=0, pooling="mean", config_overrides={"classifier_dropout": 0.3}
    )
    assert dropped.dropout.p == 0.3
    with pytest.raises(ValueError, match="pooling must be one of"):
        load_classifier(str(tiny_bert_dir), num_labels=2, pooling="max")


def test_mean_pooled_features_are_the_sentence_embeddings_before_normalisation(mean_tiny):
    model, tokenizer = mean_tiny
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**batch).last_hidden_state
        pooled = mean_pool(hidden, batch["attention_mask"])
        logits = model(**batch).logits
    # By hand: the first text's real tokens only.
    length = int(batch["attention_mask"][0].sum())
    assert length < batch["input_ids"].shape[1]  # it is padded in this batch
    assert torch.allclose(pooled[0], hidden[0, :length].mean(dim=0), atol=1e-6)
    normalised = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    assert np.allclose(normalised, sentence_embeddings(model, tokenizer, TEXTS), atol=1e-5)
    # In eval mode (no dropout) the logits are the linear layer applied to these features.
    assert torch.allclose(logits, model.classifier(pooled), atol=1e-6)


def test_padding_does_not_change_a_sentences_logits(mean_tiny):
    model, tokenizer = mean_tiny
    with torch.no_grad():
        alone = model(**tokenizer(TEXTS[2:3], return_tensors="pt")).logits[0]
        padded_batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        in_batch = model(**padded_batch).logits[2]
        to_64 = model(**tokenizer(TEXTS[2:3], padding="max_length", max_length=64, return_tensors="pt")).logits[0]
    assert int(padded_batch["attention_mask"][2].sum()) < padded_batch["input_ids"].shape[1]
    assert torch.allclose(alone, in_batch, atol=1e-5) and torch.allclose(alone, to_64, atol=1e-5)


@pytest.mark.slow
def test_trainer_steps_reduce_the_loss(mean_minilm, reviews, tmp_path):
    model = copy.deepcopy(mean_minilm[0])
    tokenizer = mean_minilm[1]
    args = cpu_training_args(
        tmp_path,
        max_steps=8,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        per_device_eval_batch_size=32,
        learning_rate=3e-4,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=reviews,
        eval_dataset=reviews,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.1, (before, after)
    # The loss Trainer reports is the cross-entropy of the model's logits (eval mode, no dropout).
    batch = DataCollatorWithPadding(tokenizer)([reviews[i] for i in range(len(reviews))])
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    expected = torch.nn.functional.cross_entropy(output.logits, batch["labels"]).item()
    assert output.loss.item() == pytest.approx(expected, rel=1e-6) and after == pytest.approx(expected, rel=1e-4)


def test_freeze_backbone_leaves_only_the_mean_head_trainable(mean_tiny, reviews):
    model = copy.deepcopy(mean_tiny[0])
    tokenizer = mean_tiny[1]
    parts = model_parts(model)
    last = model.config.num_hidden_layers - 1
    assert parts.head == [model.classifier] and parts.top == [] and len(parts.layers) == last + 1
    freeze_backbone(model)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    names = [name for group in parameter_groups(model, lr=1e-3) for name in group["names"]]
    assert sorted(names) == ["classifier.bias", "classifier.weight"]
    # helpers.training.loops: the frozen encoder does not move, the head learns.
    encoder_before = {name: p.detach().clone() for name, p in model.bert.named_parameters()}
    loader = make_loader(reviews, tokenizer, batch_size=8, shuffle=False)
    before = evaluate(model, loader)["loss"]
    history = train_loop(model, loader, optimizer_for(model, lr=3e-3), num_epochs=4, warmup_ratio=0.0, progress=False)
    after = evaluate(model, loader)["loss"]
    assert len(history["loss"]) == 16 and after < before, (before, after)
    assert all(torch.equal(p, encoder_before[name]) for name, p in model.bert.named_parameters())
    unfreeze_last_layers(model, 1)  # progressive unfreezing: no pooler to unfreeze, the last block and the head
    trainable = {name.split(".")[2] for name, p in model.bert.named_parameters() if p.requires_grad}
    assert trainable == {str(last)} and model.classifier.weight.requires_grad


def test_save_and_reload_keeps_the_mean_head(mean_tiny, tmp_path):
    model, tokenizer = copy.deepcopy(mean_tiny[0]), mean_tiny[1]  # save_pretrained writes into its config
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, _ = load_classifier(str(tmp_path), num_labels=2, pooling="mean")
    assert isinstance(reloaded, BertMeanPoolingForSequenceClassification)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(**batch).logits, model(**batch).logits, atol=1e-6)
    with pytest.raises(ValueError, match="pooling='mean'"):
        load_classifier(str(tmp_path), num_labels=2)  # a [CLS] head would read the wrong vector


def test_a_saved_cls_classifier_refuses_the_mean_head(tiny_classifier, tmp_path):
    model, tokenizer = tiny_classifier  # a fresh model: save_pretrained writes into its config
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pooling='cls'"):
        load_classifier(str(tmp_path), num_labels=2, pooling="mean")
    reloaded, _ = load_classifier(str(tmp_path), num_labels=2)
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)
