"""The cached reference classifier: trained once per recipe, reloaded identically, never left half-written."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.models.inference import predict_logits

pytestmark = pytest.mark.slow  # loads and trains MiniLM

TEXTS = ["A warm, funny and moving film.", "Tedious and far too long.", "It was fine, I guess."]


def test_a_recipe_is_trained_once_then_reloaded(tmp_path, monkeypatch):
    from helpers.training.reference import INFO_FILE, classifier_cache_root, recipe_key, sentiment_classifier

    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path))
    model, tokenizer, info = sentiment_classifier(16, seed=0, batch_size=8, progress=False)
    assert info["trained"] is True and info["training_seconds"] > 0
    folder = classifier_cache_root() / recipe_key(info["recipe"])
    assert info["folder"] == str(folder) and folder.parent == tmp_path / "sentiment-classifier"
    saved = json.loads((folder / INFO_FILE).read_text())
    assert saved["recipe"] == info["recipe"] and "torch" in saved["versions"]
    assert saved["recipe"]["train_size"] == 16 and saved["recipe"]["precision"] == "fp32"
    assert not model.training and model.config.id2label == {0: "negative", 1: "positive"}

    again, again_tokenizer, again_info = sentiment_classifier(16, seed=0, batch_size=8, progress=False)
    assert again_info["trained"] is False and again_info["folder"] == str(folder)
    assert again_info["training_seconds"] == info["training_seconds"]  # read back, not measured again
    assert type(again).__name__ == "BertMeanPoolingForSequenceClassification"
    np.testing.assert_array_equal(
        predict_logits(model, tokenizer, TEXTS, progress=False),
        predict_logits(again, again_tokenizer, TEXTS, progress=False),
    )

    _, _, other = sentiment_classifier(16, seed=1, batch_size=8, progress=False)  # another recipe
    assert other["trained"] is True and other["folder"] != info["folder"]
    # Only the two finished folders (and their lock files): no staging folder left behind.
    assert sorted(
        p.name for p in tmp_path.joinpath("sentiment-classifier").iterdir() if not p.name.endswith(".lock")
    ) == sorted([folder.name, recipe_key(other["recipe"])])
    assert {p.name for p in folder.iterdir()} >= {INFO_FILE, "config.json", "model.safetensors", "tokenizer.json"}


def test_an_interrupted_run_is_cleaned_up_and_a_broken_folder_retrained(tmp_path, monkeypatch):
    from helpers.training.reference import INFO_FILE, classifier_cache_root, sentiment_classifier

    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path))
    _, _, info = sentiment_classifier(8, seed=0, batch_size=8, progress=False)
    folder = Path(info["folder"])
    (folder / INFO_FILE).unlink()  # as if damaged: it must not be trusted
    staging = classifier_cache_root() / f".{folder.name}-killed"  # as left by a killed run
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half")
    _, _, retrained = sentiment_classifier(8, seed=0, batch_size=8, progress=False)
    assert retrained["trained"] is True and (folder / INFO_FILE).is_file() and not staging.exists()


def test_without_cache_nothing_is_written(tmp_path, monkeypatch):
    from helpers.training.reference import sentiment_classifier

    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path))
    _, _, info = sentiment_classifier(8, seed=0, batch_size=8, cache=False, progress=False)
    assert info["trained"] is True and info["folder"] is None
    assert not (tmp_path / "sentiment-classifier").exists()
    with pytest.raises(ValueError, match="train_size"):
        sentiment_classifier(1, cache=False)


def test_the_instruction_model_is_lesson_04s_recipe_trained_once_then_reloaded(tmp_path, monkeypatch):
    """SmolLM2 tuned with lesson 04's recipe on a few items: the same training items as the lesson's split,
    cached by recipe and reloaded with the same weights; a bad recipe is refused before anything trains."""
    from helpers.data.instructions import instruction_dataset
    from helpers.training.reference import instruction_cache_root, instruction_model, recipe_key

    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path))
    sizes = {"sentiment": 4, "topic": 4}
    model, tokenizer, info = instruction_model(sizes, trainable_last_layers=1, batch_size=4, progress=False)
    assert info["trained"] is True and info["recipe"]["train_sizes"] == {**sizes, "describe": 0, "qa": 0}
    assert Path(info["folder"]) == instruction_cache_root() / recipe_key(info["recipe"])
    again, _, again_info = instruction_model(sizes, trainable_last_layers=1, batch_size=4, progress=False)
    assert again_info["trained"] is False and again_info["training_seconds"] == info["training_seconds"]
    import torch

    items = instruction_dataset({"train": info["recipe"]["train_sizes"], "validation": 0, "test": 0}, max_words=30)
    items = items["train"]
    assert sorted(items["task"]) == ["sentiment"] * 4 + ["topic"] * 4
    ids = tokenizer(items[0]["instruction"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        np.testing.assert_array_equal(model(input_ids=ids).logits.numpy(), again(input_ids=ids).logits.numpy())
    base_layer = model.model.layers[0].mlp.down_proj.weight  # layer 0 was frozen, the last one trained
    from helpers.models.loading import load_causal_lm

    untouched, _ = load_causal_lm("smollm2-135m")
    assert torch.equal(base_layer, untouched.model.layers[0].mlp.down_proj.weight)
    assert not torch.equal(model.model.layers[-1].mlp.down_proj.weight, untouched.model.layers[-1].mlp.down_proj.weight)
    with pytest.raises(ValueError, match="train_sizes"):
        instruction_model({"poetry": 3}, cache=False)
