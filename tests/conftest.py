"""Shared helpers and fixtures of the test suite.

The real embedded models are loaded once per test session and shared:

- ``minilm_shared`` / ``smollm``: the loaded ``(model, tokenizer)``, for tests
  that only read them (forward passes, generation, saving). Never change them.
- ``minilm`` / ``smollm_copy``: a private deep copy of the model for one test,
  for tests that train it or change its parameters (the tokenizer is the
  shared one). ``minilm`` is exactly what ``load_classifier("minilm",
  num_labels=2, seed=0)`` returns: the same weights, and torch's random
  generator left in the same state.

A tokenizer setting (``padding_side``) may be changed only if the test puts it back.

The deployment tests share a small *trained* sentiment classifier:
``sentiment_tiny`` (the reference recipe on 64 reviews, not cached) and
``sentiment_served``, the folder it is saved to for serving, with its ONNX
export and the int8 version of that file. Read them, never change them.

Tests needing another MiniLM head (other ``num_labels``, ``id2label`` or seed)
load their own.

Where the claim does not depend on the real weights (freezing, schedules,
``LossTrainer``, the LR finder's restore, accumulation, collators), tests use
tiny random models of the same architectures, saved to a folder and loaded
through the course's own loaders (a local folder loads like a Hub id):
``tiny_classifier`` (a 2-layer, 32-wide BERT with MiniLM's tokenizer, as
``load_classifier(folder, num_labels=2, seed=0)`` returns it) and
``tiny_lm`` (a 2-layer Llama with SmolLM2's tokenizer, as
``load_causal_lm(folder)`` returns it). They load in a fraction of a second;
the real MiniLM and SmolLM2 stay for behavioural claims (it learns, it beats
the majority, parity with a library).

The ``slow`` marker goes on every test that loads a full model, trains,
executes a notebook or runs nbgrader, so ``pytest -m "not slow"`` (``make
quick``) is a quick check: tests that request one of ``SLOW_FIXTURES`` are
marked here (``pytest_collection_modifyitems``), the others carry
``@pytest.mark.slow``. The marking is checked: ``make quick`` runs under
``pytest-timeout`` (``QUICK_TEST_TIMEOUT`` seconds a test), so an unmarked
heavy test fails it.
"""

import copy
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A test that requests one of these fixtures is slow: they hand out a full model, or (``graded``,
# tests/test_grading.py) run real nbgrader on a class of submissions.
SLOW_FIXTURES = {
    "_minilm_loaded",
    "minilm_shared",
    "minilm",
    "smollm",
    "smollm_copy",
    "graded",
    "sentiment_tiny",
    "sentiment_served",
}


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, python: list[str] | None = None):
    """Run ``ftcourse`` in a subprocess (the real console entry point's module)."""
    command = (python or [sys.executable]) + ["-m", "ftcourse.cli", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=600
    )


def cpu_training_args(tmp_path, **changes):
    """``TrainingArguments`` for a test: fp32 on CPU, batches of 4, lr 1e-4, 2 steps, seed 0, nothing saved or
    reported; ``changes`` on top."""
    from transformers import TrainingArguments

    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to="none",
        save_strategy="no",
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-4,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return TrainingArguments(**(settings | changes))


@pytest.fixture
def site_without(tmp_path):
    """Build a site-packages view in which one embedded asset is missing or damaged.

    Every entry of the real site-packages is linked in, except the asset's
    package (and, for ``mode="missing"``, its metadata); ``mode="corrupt"``
    puts a copy whose checked file has one byte changed. Returns the Python
    command to run in that view (``python -S`` with ``PYTHONPATH``).
    """
    from helpers.assets import get_asset, package_dir

    def build(asset_name: str, mode: str = "missing") -> tuple[list[str], dict]:
        asset = get_asset(asset_name)
        real_pkg = package_dir(asset)
        site = Path(sysconfig.get_paths()["purelib"])
        view = tmp_path / "site"
        view.mkdir()
        dist_prefix = asset.distribution.replace("-", "_").lower() + "-"
        for entry in site.iterdir():
            if entry.name == asset.module:
                continue
            if mode == "missing" and entry.name.lower().startswith(dist_prefix) and entry.name.endswith(".dist-info"):
                continue
            (view / entry.name).symlink_to(entry)
        if mode == "corrupt":
            copy = view / asset.module
            for file in real_pkg.rglob("*"):
                target = copy / file.relative_to(real_pkg)
                if file.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(file)
            checked = copy / next(iter(asset.checksums))
            if checked.is_dir():
                checked = sorted(p for p in checked.rglob("*") if p.is_file())[0]
            data = bytearray(checked.read_bytes())
            data[len(data) // 2] ^= 0xFF
            checked.unlink()
            checked.write_bytes(bytes(data))
        return [sys.executable, "-S"], {"PYTHONPATH": f"{ROOT}{os.pathsep}{view}"}

    return build


# A test that is not marked slow must finish (fixtures included) within this many seconds: pytest-timeout
# fails it otherwise, so that a heavy test left unmarked is caught by the quick run and by CI alike
# (FTCOURSE_QUICK_TEST_TIMEOUT overrides it; tests/test_layers.py checks the mechanism).
QUICK_TEST_TIMEOUT = 30


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        is_test = Path(str(item.path)).suffix == ".py"  # a notebook's cells have nbval's own limit
        if is_test and item.get_closest_marker("slow") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(
                pytest.mark.timeout(float(os.environ.get("FTCOURSE_QUICK_TEST_TIMEOUT", QUICK_TEST_TIMEOUT)))
            )


# A tiny BERT and a tiny Llama: the architectures of MiniLM and SmolLM2 at a few hundred thousand weights
# (most of them the embedding table of the real tokenizer's vocabulary).
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_LLAMA = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A folder holding a randomly initialised 2-layer BERT encoder (seed 0) and MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    from helpers.models.loading import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_BERT)
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_classifier(tiny_bert_dir):
    """``load_classifier(<tiny BERT folder>, num_labels=2, seed=0)``: a fresh tiny classifier for one test."""
    from helpers.models.loading import load_classifier

    return load_classifier(str(tiny_bert_dir), num_labels=2, seed=0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A folder holding a randomly initialised 2-layer Llama (seed 0) and SmolLM2's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers.models.loading import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_lm(tiny_llama_dir):
    """``load_causal_lm(<tiny Llama folder>)``: a fresh tiny causal LM and its tokenizer for one test."""
    from helpers.models.loading import load_causal_lm

    return load_causal_lm(str(tiny_llama_dir))


@pytest.fixture(scope="session")
def _minilm_loaded():
    """``load_classifier("minilm", num_labels=2, seed=0)`` once, and torch's RNG state right after it."""
    import torch

    from helpers.models.loading import load_classifier

    model, tokenizer = load_classifier("minilm", num_labels=2, seed=0)
    return model, tokenizer, torch.get_rng_state()


@pytest.fixture(scope="session")
def minilm_shared(_minilm_loaded):
    """MiniLM with a 2-label head seeded with 0, shared by the whole session: read it, never change it."""
    model, tokenizer, _ = _minilm_loaded
    return model, tokenizer


@pytest.fixture
def minilm(_minilm_loaded):
    """A fresh ``load_classifier("minilm", num_labels=2, seed=0)`` for one test, which may train it.

    A deep copy of the shared model (same weights, eval mode as loaded), and
    torch's global random generator put where that call leaves it, so dropout
    and shuffling draw what they would after a real load.
    """
    import torch

    model, tokenizer, rng_state = _minilm_loaded
    torch.set_rng_state(rng_state)
    return copy.deepcopy(model), tokenizer


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M and its tokenizer, shared by the whole session: read them, never change them."""
    from helpers.models.loading import load_causal_lm

    return load_causal_lm("smollm2-135m")


@pytest.fixture
def smollm_copy(smollm):
    """A private deep copy of SmolLM2 for one test, which may change it (the tokenizer is the shared one)."""
    model, tokenizer = smollm
    return copy.deepcopy(model), tokenizer


# The reference recipe on 64 reviews: ~3 s of training, confident enough (test accuracy ~0.8) that an int8
# variant's agreement with it measures quantization, not coin flips near the decision boundary.
SENTIMENT_TINY_TRAIN_SIZE = 64
SERVING_MAX_LENGTH = 64


@pytest.fixture(scope="session")
def sentiment_tiny():
    """A MiniLM sentiment classifier trained by ``sentiment_classifier(64)``, not cached: ``(model, tokenizer)``."""
    from helpers.training.reference import sentiment_classifier

    model, tokenizer, _ = sentiment_classifier(SENTIMENT_TINY_TRAIN_SIZE, batch_size=8, cache=False, progress=False)
    return model, tokenizer


@pytest.fixture(scope="session")
def sentiment_served(sentiment_tiny, tmp_path_factory):
    """The folder of ``sentiment_tiny`` saved for serving (``max_length`` 64), ``model.onnx``, ``model-int8.onnx``."""
    from helpers.deployment.onnx_export import export_classifier_onnx, quantize_onnx_int8
    from helpers.deployment.predictors import ONNX_FILE, ONNX_INT8_FILE, save_for_serving

    model, tokenizer = sentiment_tiny
    folder = save_for_serving(
        model,
        tokenizer,
        tmp_path_factory.mktemp("served"),
        {"model_name": "minilm-sentiment-tiny", "metrics": {"test_accuracy": 0.8}},
        max_length=SERVING_MAX_LENGTH,
    )
    export_classifier_onnx(model, tokenizer, folder / ONNX_FILE)
    quantize_onnx_int8(folder / ONNX_FILE, folder / ONNX_INT8_FILE)
    return folder


# A hostile answer used by the grading tests: an object that claims to equal anything.
ANYTHING = """class _Anything:
    \"\"\"Claims to equal anything.\"\"\"

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __hash__(self):
        return 0


"""
# An early stopper whose every state claims to equal the expected one.
ALWAYS_EQUAL_EARLY_STOPPING = (
    ANYTHING
    + """class EarlyStopping:
    def __init__(self, patience=3, min_delta=0.0, mode="min"):
        if mode not in ("min", "max") or patience < 0 or min_delta < 0:
            raise ValueError("bad arguments")
        self.best_score = self.counter = self.early_stop = _Anything()

    def __call__(self, score):
        return _Anything()
"""
)
