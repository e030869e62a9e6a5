"""Deployment without the server: int8 quantization, ONNX export and parity, predictors, measurements."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers.deployment.benchmark import generation_call, interleaved_timings, label_agreement, speedup
from helpers.deployment.quantization import quantize_dynamic_int8, quantized_linear_count
from helpers.measure import model_size_bytes
from tests.conftest import SERVING_MAX_LENGTH

pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
pytest.importorskip("fastapi", reason="the deploy extra is not installed")

from helpers.deployment.onnx_export import (  # noqa: E402 - after the skip
    OnnxClassifier,
    export_classifier_onnx,
    onnx_parity,
    quantize_onnx_int8,
)
from helpers.deployment.predictors import (  # noqa: E402
    ONNX_FILE,
    ONNX_INT8_FILE,
    ClassifierPredictor,
    OnnxPredictor,
    load_predictor,
    read_serving_metadata,
)

# The int8 variants must give the fp32 model's label to at least this share of real reviews. Measured on
# these 48 reviews with the 64-review classifier: 1.0 for both (0.94-0.95 on 512 reviews with a weaker,
# less confident classifier): 0.9 leaves room for other CPUs' int8 kernels, and still fails a broken quantization.
INT8_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def reviews():
    """48 real test reviews (never trained on) and a few made-up texts of very different lengths."""
    from helpers.data.loaders import rotten_tomatoes

    texts = list(rotten_tomatoes(seed=42)["test"]["text"][:48])
    return texts + ["Bad.", "A triumph!", "I expected more from this director, " * 12 + "but it was fine."]


def test_onnx_export_has_dynamic_axes_and_matches_pytorch(sentiment_tiny, sentiment_served, reviews):
    import onnx

    model, tokenizer = sentiment_tiny
    graph = onnx.load(str(sentiment_served / ONNX_FILE)).graph
    shapes = {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in [*graph.input, *graph.output]
    }
    assert shapes == {
        "input_ids": ["batch", "sequence"],
        "token_type_ids": ["batch", "sequence"],
        "attention_mask": ["batch", "sequence"],
        "logits": ["batch", 2],
    }
    classifier = OnnxClassifier(sentiment_served / ONNX_FILE, tokenizer, max_length=SERVING_MAX_LENGTH)
    texts = reviews[:29] + reviews[-3:]  # 32 texts, 1 to ~100 tokens (truncated to 64)
    for batch_size in (1, 5, 32):  # batch and sequence lengths the export never saw
        parity = onnx_parity(model, classifier, tokenizer, texts, batch_size=batch_size, max_length=SERVING_MAX_LENGTH)
        assert parity["n"] == 32
        assert parity["max_abs_diff"] < 1e-4, parity
        assert parity["label_agreement"] == 1.0
    # a tokenized torch batch runs as it is, and gives what the texts give
    batch = tokenizer(texts[:4], padding=True, return_tensors="pt")
    np.testing.assert_allclose(classifier.logits(batch), classifier.logits(texts[:4]), atol=1e-5)
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_onnx_int8_is_smaller_and_agrees(sentiment_tiny, sentiment_served, reviews):
    tokenizer = sentiment_tiny[1]
    fp32 = OnnxClassifier(sentiment_served / ONNX_FILE, tokenizer, max_length=SERVING_MAX_LENGTH)
    int8 = OnnxClassifier(sentiment_served / ONNX_INT8_FILE, tokenizer, max_length=SERVING_MAX_LENGTH)
    ratio = model_size_bytes(sentiment_served / ONNX_INT8_FILE) / model_size_bytes(sentiment_served / ONNX_FILE)
    assert ratio < 0.3  # weights and embedding table in int8: ~0.25
    reference, quantized = fp32.logits(reviews[:48]), int8.logits(reviews[:48])
    assert label_agreement(reference, quantized) >= INT8_AGREEMENT
    assert np.abs(reference - quantized).max() > 1e-4  # it did change the weights


def test_torch_int8_quantizes_the_linear_layers_and_agrees(sentiment_tiny, reviews):
    from helpers.models.inference import predict_logits

    model, tokenizer = sentiment_tiny
    quantized = quantize_dynamic_int8(model)
    assert quantized_linear_count(quantized) == (37, 0)  # 6 layers x 6 + the head
    assert quantized_linear_count(model) == (0, 37)  # the original is untouched
    assert model_size_bytes(quantized) / model_size_bytes(model) < 0.75  # embeddings stay fp32: ~0.65
    reference = predict_logits(model, tokenizer, reviews[:48], max_length=SERVING_MAX_LENGTH, progress=False)
    int8 = predict_logits(quantized, tokenizer, reviews[:48], max_length=SERVING_MAX_LENGTH, progress=False)
    assert label_agreement(reference, int8) >= INT8_AGREEMENT
    assert np.abs(reference - int8).max() > 1e-4
    assert ClassifierPredictor(quantized, tokenizer).backend == "torch-int8"


def test_quantize_dynamic_int8_silences_only_its_own_deprecation_warnings(recwarn):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    quantized = quantize_dynamic_int8(model)
    assert not [w for w in recwarn if "deprecated" in str(w.message)]
    assert quantized_linear_count(quantized) == (2, 0)
    x = torch.randn(4, 8)
    assert torch.allclose(quantized(x), model(x), atol=0.05)


def test_quantized_causal_lm_still_generates(smollm):
    from helpers.models.generation import generate

    model, tokenizer = smollm
    quantized = quantize_dynamic_int8(model)
    assert quantized_linear_count(quantized)[1] == 0
    assert model_size_bytes(quantized) < 0.6 * model_size_bytes(model)  # 538 MB -> 252 MB
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    reply = generate(quantized, tokenizer, [prompt], max_new_tokens=5)[0]
    assert reply.strip()
    generate_tokens = generation_call(quantized, tokenizer, prompt, max_new_tokens=5)
    new_tokens = generate_tokens()
    assert len(new_tokens) == 5  # exactly, even past an end-of-sequence token
    with pytest.raises(ValueError, match="at least 1"):
        generation_call(quantized, tokenizer, prompt, max_new_tokens=0)


def test_model_size_bytes_of_module_file_and_folder(tmp_path):
    layer = nn.Linear(100, 10)
    assert 4 * 1010 < model_size_bytes(layer) < 4 * 1010 + 2000  # the floats and a little pickle overhead
    torch.save(layer.state_dict(), tmp_path / "w.pt")
    (tmp_path / "notes.txt").write_text("hello")
    assert model_size_bytes(tmp_path / "w.pt") == (tmp_path / "w.pt").stat().st_size
    assert model_size_bytes(tmp_path) == (tmp_path / "w.pt").stat().st_size + 5
    with pytest.raises(FileNotFoundError):
        model_size_bytes(tmp_path / "missing")


def test_interleaved_timings_rotate_the_order_and_warm_up_each_call():
    calls = []
    times = interleaved_timings({name: (lambda name=name: calls.append(name)) for name in "abc"}, rounds=4)
    assert calls[:3] == ["a", "b", "c"]  # the warm-up round
    assert calls[3:] == list("abcbcacababc")  # each round starts one further
    assert {name: len(seconds) for name, seconds in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for seconds in times.values() for t in seconds)
    with pytest.raises(ValueError, match="at least one call"):
        interleaved_timings({}, rounds=2)
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        interleaved_timings({"a": lambda: None}, rounds=0)


def test_speedup_is_the_geometric_mean_ratio_with_an_interval_over_rounds():
    rng = np.random.default_rng(0)
    load = rng.uniform(1.0, 1.5, size=20)  # the machine's load, shared by both variants in a round
    reference = 0.2 * load * rng.uniform(0.97, 1.03, size=20)
    faster = speedup(reference, 0.1 * load * rng.uniform(0.97, 1.03, size=20))
    assert faster.verdict == "better" and faster.n == 20
    assert faster.ratio.low < 2.0 < faster.ratio.high and faster.ratio.low > 1.8
    assert faster.ratio.value == pytest.approx(np.exp(np.mean(np.log(reference / (0.1 * load)))), rel=0.05)
    assert faster.p_value < 0.01
    slower = speedup(reference, 0.3 * load)
    assert slower.verdict == "worse" and slower.ratio.high < 1
    same = speedup(reference, reference * rng.uniform(0.9, 1.1, size=20))
    assert same.verdict == "indistinguishable" and same.ratio.low < 1 < same.ratio.high
    assert set(faster.as_dict()) == {"ratio", "verdict", "n", "p_value"}
    with pytest.raises(ValueError, match="same rounds"):
        speedup([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        speedup([1.0, 0.0], [1.0, 1.0])


def test_label_agreement():
    agreement = label_agreement(np.array([[0, 1], [1, 0], [2, 3]]), np.array([[0, 2], [0, 1], [5, 1]]))
    assert agreement == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same shape"):
        label_agreement(np.zeros((2, 2)), np.zeros((3, 2)))


def test_predictors_and_saved_folder(sentiment_tiny, sentiment_served, reviews):
    model, tokenizer = sentiment_tiny
    texts = reviews[:12]
    reference = ClassifierPredictor(model, tokenizer, max_length=SERVING_MAX_LENGTH).predict(texts)
    assert [p["label"] for p in reference] == [
        ["negative", "positive"][int(p["probabilities"]["positive"] > 0.5)] for p in reference
    ]
    for p in reference:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["score"] == max(p["probabilities"].values())
    metadata = read_serving_metadata(sentiment_served)
    assert metadata["labels"] == ["negative", "positive"] and metadata["max_length"] == SERVING_MAX_LENGTH
    assert "minilm-sentiment-tiny" in (sentiment_served / "README.md").read_text()
    for backend in ("torch", "onnx", "torch-int8", "onnx-int8"):
        predictor, info = load_predictor(sentiment_served, backend)
        assert info["backend"] == predictor.backend == backend
        predictions = predictor.predict(texts)
        agreement = np.mean([a["label"] == b["label"] for a, b in zip(predictions, reference)])
        if backend in ("torch", "onnx"):
            assert agreement == 1.0
            np.testing.assert_allclose([p["score"] for p in predictions], [p["score"] for p in reference], atol=1e-4)
        else:
            assert agreement >= INT8_AGREEMENT
    assert isinstance(load_predictor(sentiment_served, "onnx")[0], OnnxPredictor)
    with pytest.raises(ValueError, match="backend must be one of"):
        load_predictor(sentiment_served, "tensorrt")


def test_load_errors_are_readable(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_predictor(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="neither serving.json nor config.json"):
        load_predictor(tmp_path)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        quantize_onnx_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        OnnxClassifier(tmp_path / "missing.onnx")


def test_export_of_a_model_without_token_type_ids(minilm_shared, tmp_path):
    """A tokenizer that gives no ``token_type_ids``: the file takes only the two inputs it gives."""
    model, tokenizer = minilm_shared

    class NoTokenTypes:
        """The real tokenizer, with its ``token_type_ids`` output left out."""

        def __call__(self, *args, **kwargs):
            batch = tokenizer(*args, **kwargs)
            del batch["token_type_ids"]
            return batch

    path = export_classifier_onnx(model, NoTokenTypes(), tmp_path / "m.onnx")
    classifier = OnnxClassifier(path, NoTokenTypes(), max_length=32)
    assert classifier.input_names == ["input_ids", "attention_mask"]
    texts = ["Short.", "A rather longer sentence than the first one."]
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
    np.testing.assert_allclose(classifier.logits(texts), expected, atol=1e-4)
