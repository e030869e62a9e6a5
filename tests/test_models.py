import os
import shutil

import pytest
import torch

from helpers.models import (
    ModelNotAvailableError,
    check_converted_model,
    convert_gguf_model,
    converted_model_dir,
    count_parameters,
    hub_reachable,
    load_causal_lm,
    load_classifier,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def smollm():
    return load_causal_lm("smollm2-135m")


def test_minilm_classifier_shapes_and_finite_logits():
    model, tokenizer = load_classifier("minilm", num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, seed=0)
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    batch = tokenizer(["A wonderful film.", "Dull and far too long, I left early."], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert 22_000_000 < count_parameters(model) < 23_500_000


def test_classifier_head_is_reproducible_with_a_seed():
    first, _ = load_classifier("minilm", num_labels=2, seed=3)
    second, _ = load_classifier("minilm", num_labels=2, seed=3)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    with pytest.raises(ValueError, match="id2label has 1 entries"):
        load_classifier("minilm", num_labels=2, id2label={0: "x"})


def test_minilm_tokenizer_round_trip():
    tokenizer = load_tokenizer("minilm")
    text = "Fine tuning a pretrained encoder works well"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    # An uncased WordPiece model: the round trip gives the lower-cased text.
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()


def test_smollm_shapes_template_and_answer(smollm):
    model, tokenizer = smollm
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert tokenizer.pad_token is not None
    batch = tokenizer(["Hello there"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], 49152) and torch.isfinite(logits).all()
    text = "Instruction tuning teaches a format."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi<|im_end|>" in prompt


def test_smollm_knows_a_general_fact(smollm):
    from helpers.inference import chat_reply

    model, tokenizer = smollm
    assert "Paris" in chat_reply(model, tokenizer, "What is the capital of France?", max_new_tokens=12)


def test_offline_hub_id_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_classifier("bert-base-uncased", num_labels=2)
    message = str(info.value)
    assert "'bert-base-uncased' is not an embedded model" in message and "HF_HUB_OFFLINE=1" in message
    assert "minilm" in message and "smollm2-135m" in message
    assert info.value.__suppress_context__ and info.value.__cause__ is None
    with pytest.raises(ModelNotAvailableError, match="minilm"):
        load_causal_lm("not-a-model-name")


def test_unreachable_hub_fails_fast_with_the_same_message(monkeypatch):
    if hub_reachable():
        pytest.skip("the Hub is reachable from this machine")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelNotAvailableError, match="cannot be reached.*minilm"):
        load_tokenizer("bert-base-uncased")


def test_local_folder_loads_like_a_hub_id(tmp_path):
    model, tokenizer = load_classifier("minilm", num_labels=2, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, _ = load_classifier(str(tmp_path), num_labels=2)
    assert torch.equal(again.classifier.weight, model.classifier.weight)


@pytest.mark.slow
def test_corrupt_or_partial_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, capsys):
    source = convert_gguf_model("smollm2-135m", verbose=False)
    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path))
    target = converted_model_dir("smollm2-135m")
    assert target.parent.parent == tmp_path
    shutil.copytree(source, target)
    assert check_converted_model(target) is None

    weights = target / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(os.path.getsize(weights) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert "does not match its checksum" in check_converted_model(target)

    (target / "tokenizer.json").unlink()
    assert "tokenizer.json is missing" in check_converted_model(target)
    (target / "ftcourse-manifest.json").unlink()
    assert "no ftcourse-manifest.json" in check_converted_model(target)

    rebuilt = convert_gguf_model("smollm2-135m")
    assert "not usable" in capsys.readouterr().out
    assert rebuilt == target and check_converted_model(target) is None
    assert not [p for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")]
