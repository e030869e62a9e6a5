"""The course's reference sentiment classifier, trained once and cached: MiniLM on Rotten Tomatoes.

Several lessons need *a* trained classifier to study rather than to train:
how far to trust it (``course/09_evaluation.ipynb``), how to serve it (the
deployment lesson). :func:`sentiment_classifier` gives the lesson-03 recipe on
a small budget (mean-pooling MiniLM, a head fitted as a linear probe first,
then one epoch of :func:`helpers.training.loops.train_loop`) and keeps the
result in the course cache, keyed by the recipe: a second call with the same
recipe reloads the saved model in seconds instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.assets import cache_dir, get_asset
from helpers.device import FP32, Precision, library_versions

__all__ = [
    "MODEL_NAME",
    "POOLING",
    "ID2LABEL",
    "INFO_FILE",
    "RECIPE_VERSION",
    "classifier_cache_root",
    "recipe_key",
    "sentiment_classifier",
]

MODEL_NAME = "minilm"
POOLING = "mean"
ID2LABEL = {0: "negative", 1: "positive"}
INFO_FILE = "info.json"
# Bump when the training code below changes what a recipe produces: older cached models are then not reused.
RECIPE_VERSION = 1


def classifier_cache_root() -> Path:
    """Where the cached classifiers live: ``cache_dir() / "sentiment-classifier"``, one folder per recipe."""
    return cache_dir() / "sentiment-classifier"


def recipe_key(recipe: dict) -> str:
    """A short, stable hash of a recipe (its JSON with sorted keys): the name of its cache folder."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _read_info(folder: Path) -> dict | None:
    """The ``info.json`` of a finished cache folder, ``None`` if there is none or it is unreadable."""
    try:
        return json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def _train(
    recipe: dict, device: str, precision: Precision, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, float]:
    """The recipe itself: a new classifier, its head fitted as a linear probe, then ``train_loop``."""
    from helpers.data.batching import tokenize_for_classification
    from helpers.data.loaders import rotten_tomatoes, subsample
    from helpers.models.loading import load_classifier
    from helpers.training.probing import fit_head_by_linear_probe
    from helpers.training.sweeps import fit_with_loop

    seed, max_length = recipe["seed"], recipe["max_length"]
    texts = subsample(rotten_tomatoes(seed=seed)["train"], recipe["train_size"], seed=seed)
    start = time.perf_counter()
    model, tokenizer = load_classifier(
        MODEL_NAME, num_labels=2, id2label=ID2LABEL, device=device, seed=seed, pooling=POOLING
    )
    fit_head_by_linear_probe(
        model,
        tokenizer,
        list(texts["text"]),
        list(texts["label"]),
        device=device,
        precision=precision,
        max_length=max_length,
        seed=seed,
    )
    fit_with_loop(
        model,
        tokenize_for_classification(texts, tokenizer, max_length=max_length),
        tokenizer,
        lr=recipe["lr"],
        seed=seed,
        num_epochs=recipe["num_epochs"],
        batch_size=recipe["batch_size"],
        weight_decay=recipe["weight_decay"],
        warmup_ratio=recipe["warmup_ratio"],
        device=device,
        precision=precision,
        progress=progress,
    )
    model.eval()
    return model, tokenizer, time.perf_counter() - start


def sentiment_classifier(
    train_size: int,
    seed: int = 42,
    lr: float = 1e-4,
    num_epochs: int = 1,
    batch_size: int = 16,
    max_length: int = 64,
    device: str = "cpu",
    precision: Precision = FP32,
    cache: bool = True,
    progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """A MiniLM sentiment classifier (0 = negative, 1 = positive), trained with the lesson-03 recipe or reloaded.

    The recipe: ``load_classifier("minilm", 2, pooling="mean")`` with a head
    seeded by ``seed``; that head fitted as a linear probe on the frozen
    encoder (:func:`helpers.training.probing.fit_head_by_linear_probe`, the
    LP-FT start); then ``num_epochs`` of
    :func:`helpers.training.loops.train_loop` (AdamW of
    :func:`helpers.training.freezing.optimizer_for`, weight decay 0.01 off the
    biases and LayerNorms, 10% warmup then a linear decay, length-grouped
    batches), on ``subsample(rotten_tomatoes(seed)["train"], train_size,
    seed)`` (films of the validation and test splits are never seen).

    With ``cache=True`` the trained model, its tokenizer and an ``info.json``
    (the recipe: every argument but ``device``, ``progress`` and ``cache``,
    with the precision's name; the training seconds; the library versions)
    are saved under ``classifier_cache_root() / recipe_key(recipe)``, and a
    later call with the same recipe reloads them
    (``load_classifier(folder, 2, pooling="mean")``) instead of training. The
    folder is written in a staging folder next to it and renamed into place,
    under a lock, so an interrupted run never leaves a half-written model
    (its staging folder is removed by the next run of that recipe).

    Returns ``(model, tokenizer, info)``, the model in eval mode on
    ``device``; ``info`` is the saved ``info.json`` plus ``trained`` (whether
    this call trained the model) and ``folder`` (``None`` without cache).
    Trained and cached by ``course/09_evaluation.ipynb``; reused by the
    deployment lesson.
    """
    from helpers.cache_lock import exclusive_lock, staging_dirs
    from helpers.models.loading import load_classifier

    if train_size < 2:
        raise ValueError(f"train_size must be at least 2, got {train_size}")
    recipe = {
        "model": MODEL_NAME,
        "model_version": get_asset(MODEL_NAME).version,
        "pooling": POOLING,
        "data": "rotten_tomatoes (split by film), train",
        "recipe_version": RECIPE_VERSION,
        "train_size": int(train_size),
        "seed": int(seed),
        "lr": float(lr),
        "num_epochs": int(num_epochs),
        "batch_size": int(batch_size),
        "max_length": int(max_length),
        "precision": precision.name,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
    }
    if not cache:
        model, tokenizer, seconds = _train(recipe, device, precision, progress)
        info = {"recipe": recipe, "training_seconds": seconds, "versions": library_versions()}
        return model, tokenizer, {**info, "trained": True, "folder": None}

    root = classifier_cache_root()
    target = root / recipe_key(recipe)

    def reload() -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict] | None:
        info = _read_info(target)
        if info is None or info.get("recipe") != recipe:
            return None
        model, tokenizer = load_classifier(str(target), num_labels=2, device=device, pooling=POOLING)
        return model.eval(), tokenizer, {**info, "trained": False, "folder": str(target)}

    found = reload()
    if found is not None:
        return found
    with ExitStack() as stack:
        root.mkdir(parents=True, exist_ok=True)
        stack.enter_context(exclusive_lock(root / f".{target.name}.lock"))
        for leftover in staging_dirs(target):  # we hold the lock: these were left by interrupted runs
            shutil.rmtree(leftover, ignore_errors=True)
        found = reload()  # another process may have trained it while we waited
        if found is not None:
            return found
        model, tokenizer, seconds = _train(recipe, device, precision, progress)
        info = {"recipe": recipe, "training_seconds": seconds, "versions": library_versions()}
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / INFO_FILE).write_text(json.dumps(info, indent=2))
            if target.exists():  # a folder without a valid info.json: replace it
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
                os.replace(target, old / "old")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return model, tokenizer, {**info, "trained": True, "folder": str(target)}
