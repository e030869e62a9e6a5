import logging

import pytest
import torch

from helpers.models.inference import text_classification_pipeline
from helpers.models.loading import load_classifier


def test_the_pipeline_of_a_mean_pooling_model_gives_its_own_probabilities_quietly(tmp_path, capfd):
    from transformers.pipelines import base

    model, tokenizer = load_classifier(
        "minilm", num_labels=2, id2label={0: "negative", 1: "positive"}, seed=0, pooling="mean"
    )
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, reloaded_tokenizer = load_classifier(str(tmp_path), num_labels=2, pooling="mean")
    level = logging.getLogger(base.logger.name).level
    capfd.readouterr()
    classifier = text_classification_pipeline(reloaded, reloaded_tokenizer)
    assert "not supported" not in capfd.readouterr().err
    assert logging.getLogger(base.logger.name).level == level  # silenced for this one call only
    texts = ["A warm, funny and moving film.", "Tedious."]
    with torch.no_grad():
        probabilities = torch.softmax(model(**tokenizer(texts, padding=True, return_tensors="pt")).logits, -1).numpy()
    outputs = classifier(texts)
    assert [o["label"] for o in outputs] == [["negative", "positive"][i] for i in probabilities.argmax(-1)]
    assert [o["score"] for o in outputs] == pytest.approx(list(probabilities.max(-1)), abs=1e-5)
    assert type(classifier.model).__name__ == "BertMeanPoolingForSequenceClassification"
