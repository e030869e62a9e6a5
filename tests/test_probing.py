import numpy as np
import pytest
import torch

from helpers.data.loaders import rotten_tomatoes
from helpers.models.loading import load_classifier
from helpers.training.probing import fit_head_by_linear_probe, head_inputs


@pytest.fixture(scope="module")
def mean_head():
    return load_classifier("minilm", num_labels=2, seed=0, pooling="mean")


def test_head_inputs_are_what_the_head_reads(mean_head):
    from helpers.models.heads import mean_pool

    model, tokenizer = mean_head
    texts = ["A fine film.", "Dull, long and loud, with nothing to say about anything at all."]
    features = head_inputs(model, tokenizer, texts)
    for text, row in zip(texts, features):  # one text at a time: no padding, no reordering
        batch = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            expected = mean_pool(model.bert(**batch).last_hidden_state, batch["attention_mask"])[0]
        assert row == pytest.approx(expected.numpy(), abs=1e-5)
    assert model.training is False  # as loaded: eval mode is kept


@pytest.mark.slow  # 700 reviews through MiniLM: ~7 s
def test_the_probe_classifies_held_out_reviews_before_any_fine_tuning(mean_head):
    model, tokenizer = mean_head
    splits = rotten_tomatoes(seed=0)
    train, held_out = splits["train"].select(range(400)), splits["validation"].select(range(300))
    model.train()
    probe = fit_head_by_linear_probe(model, tokenizer, list(train["text"]), list(train["label"]))
    assert model.training  # the mode is restored
    features = head_inputs(model, tokenizer, list(held_out["text"]))
    model.eval()
    batch = tokenizer(list(held_out["text"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    # The model now predicts what the regression predicts, with the same probabilities.
    assert (logits.argmax(-1) == probe.predict(features)).all()
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert softmax == pytest.approx(probe.predict_proba(features), abs=1e-4)
    majority = max(np.mean(held_out["label"]), 1 - np.mean(held_out["label"]))
    # Before any fine-tuning, the model already beats the majority class on reviews it has not seen.
    assert np.mean(logits.argmax(-1) == np.asarray(held_out["label"])) > majority + 0.05


def test_the_cls_head_reads_the_pooler_output_and_other_heads_are_refused():
    model, tokenizer = load_classifier("minilm", num_labels=3, seed=0)
    features = head_inputs(model, tokenizer, ["one text", "another, longer text"])
    batch = tokenizer(["one text"], return_tensors="pt")
    with torch.no_grad():
        expected = model.bert(**batch).pooler_output[0]
    assert features.shape == (2, 384) and features[0] == pytest.approx(expected.numpy(), abs=1e-5)
    with pytest.raises(ValueError, match="outputs but the labels"):
        fit_head_by_linear_probe(model, tokenizer, ["a", "b", "c", "d"], [0, 1, 0, 1])
    model.classifier = torch.nn.Sequential(torch.nn.Linear(384, 3))
    with pytest.raises(ValueError, match="expected a linear classification head"):
        head_inputs(model, tokenizer, ["a"])
