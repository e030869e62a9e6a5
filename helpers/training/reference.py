"""The course's reference models, trained once per recipe and cached: a MiniLM sentiment classifier, an SFT SmolLM2.

Several lessons need *a* trained classifier to study rather than to train:
how far to trust it (``course/09_evaluation.ipynb``), how to serve it (the
deployment lesson). :func:`sentiment_classifier` gives the lesson-03 recipe on
a small budget (mean-pooling MiniLM, a head fitted as a linear probe first,
then one epoch of :func:`helpers.training.loops.train_loop`) and keeps the
result in the course cache, keyed by the recipe: a second call with the same
recipe reloads the saved model in seconds instead of training again.
:func:`instruction_model` does the same for lesson 04's instruction-tuned
SmolLM2, the starting point of preference tuning (issue 34).
Both go through
:func:`cached_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.assets import cache_dir, get_asset
from helpers.device import FP32, Precision, library_versions

__all__ = [
    "MODEL_NAME",
    "POOLING",
    "ID2LABEL",
    "INFO_FILE",
    "RECIPE_VERSION",
    "INSTRUCTION_MODEL",
    "LESSON_04_TRAIN_SIZES",
    "cached_model",
    "classifier_cache_root",
    "instruction_cache_root",
    "instruction_model",
    "recipe_key",
    "sentiment_classifier",
]

MODEL_NAME = "minilm"
POOLING = "mean"
ID2LABEL = {0: "negative", 1: "positive"}
INFO_FILE = "info.json"
# Bump when the training code below changes what a recipe produces: older cached models are then not reused.
RECIPE_VERSION = 1
INSTRUCTION_MODEL = "smollm2-135m"
# Lesson 04's training examples per task in its default run (course/04_gpt_instruction_tuning.ipynb, section 1).
LESSON_04_TRAIN_SIZES = {"sentiment": 296, "topic": 88, "describe": 8, "qa": 8}


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
    return cached_model(
        classifier_cache_root(),
        recipe,
        train=lambda: _train(recipe, device, precision, progress),
        load=lambda folder: load_classifier(str(folder), num_labels=2, device=device, pooling=POOLING),
        cache=cache,
    )


def cached_model(
    root: Path,
    recipe: dict,
    train: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase, float]],
    load: Callable[[Path], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    cache: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """The model of ``recipe``: reloaded from ``root / recipe_key(recipe)`` if it was saved, else ``train()`` and saved.

    ``train()`` returns ``(model, tokenizer, seconds)``; ``load(folder)``
    returns ``(model, tokenizer)`` from a saved folder. The folder is written
    in a staging folder next to it and renamed into place, under a lock, so
    an interrupted run never leaves a half-written model (its staging folder
    is removed by the next run of that recipe); a folder whose ``info.json``
    is missing or holds another recipe is trained again. Returns ``(model,
    tokenizer, info)``, the model in eval mode; ``info``: the recipe, the
    training seconds, the library versions, ``trained`` (whether this call
    trained) and ``folder`` (``None`` with ``cache=False``, which trains and
    writes nothing).
    """
    from helpers.cache_lock import exclusive_lock, staging_dirs

    if not cache:
        model, tokenizer, seconds = train()
        info = {"recipe": recipe, "training_seconds": seconds, "versions": library_versions()}
        return model.eval(), tokenizer, {**info, "trained": True, "folder": None}

    target = root / recipe_key(recipe)

    def reload() -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict] | None:
        info = _read_info(target)
        if info is None or info.get("recipe") != recipe:
            return None
        model, tokenizer = load(target)
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
        model, tokenizer, seconds = train()
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
    return model.eval(), tokenizer, {**info, "trained": True, "folder": str(target)}


def instruction_cache_root() -> Path:
    """Where the cached instruction-tuned models live: ``cache_dir() / "instruction-model"``, one folder per recipe."""
    return cache_dir() / "instruction-model"


def _train_instruction_model(
    recipe: dict, device: str, precision: Precision, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, float]:
    """Lesson 04's recipe: the last layers of SmolLM2-Instruct trained on its instruction data, prompt masked."""
    from helpers.data.causal_lm import tokenize_instructions
    from helpers.data.instructions import instruction_dataset
    from helpers.models.loading import load_causal_lm
    from helpers.training.causal_lm import train_causal_lm
    from helpers.training.freezing import freeze_embeddings, unfreeze_last_layers

    seed = recipe["seed"]
    data = instruction_dataset(
        {"train": recipe["train_sizes"], "validation": 0, "test": 0}, seed=seed, max_words=recipe["max_words"]
    )
    model, tokenizer = load_causal_lm(INSTRUCTION_MODEL, device=device)
    torch.manual_seed(seed)
    unfreeze_last_layers(model, recipe["trainable_last_layers"])
    freeze_embeddings(model)  # tied with the output layer: both stay fixed, as in lesson 04
    train = tokenize_instructions(data["train"], tokenizer, recipe["style"], mask_prompt=True)
    with tempfile.TemporaryDirectory() as scratch:
        _, seconds = train_causal_lm(
            model,
            tokenizer,
            train,
            precision,
            output_dir=scratch,
            learning_rate=recipe["lr"],
            epochs=recipe["epochs"],
            batch_size=recipe["batch_size"],
            lr_scheduler_type="linear",
            warmup=recipe["warmup_ratio"],
            group_by_length=True,
            seed=seed,
            progress=progress,
        )
    return model, tokenizer, seconds


def instruction_model(
    train_sizes: Mapping[str, int] = LESSON_04_TRAIN_SIZES,
    seed: int = 42,
    lr: float = 1.6e-3,
    trainable_last_layers: int = 10,
    epochs: int = 1,
    batch_size: int = 8,
    max_words: int = 30,
    style: str = "chat",
    device: str = "cpu",
    precision: Precision = FP32,
    cache: bool = True,
    progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """SmolLM2-135M-Instruct fine-tuned on instructions with lesson 04's recipe, trained once or reloaded.

    The recipe of ``course/04_gpt_instruction_tuning.ipynb``: the training
    split of ``instruction_dataset({"train": train_sizes, ...}, seed,
    max_words)`` (the same items as the lesson's, split by film, article and
    question; a task left out of ``train_sizes`` gets no example), prompt and padding labels at -100, in the ``style`` template;
    the last ``trainable_last_layers`` blocks trained, the (tied) embeddings
    frozen; ``Trainer`` through :func:`helpers.training.causal_lm.train_causal_lm`
    at ``lr`` with 10% warmup then a linear decay, length-grouped batches of
    ``batch_size``, ``epochs`` epochs. Defaults: the lesson's default run.

    Cached as :func:`cached_model` does, under
    ``instruction_cache_root() / recipe_key(recipe)`` (the recipe: every
    argument but ``device``, ``progress`` and ``cache``, with the precision's
    name and the base model's version). Returns ``(model, tokenizer, info)``,
    the model in eval mode on ``device``. The starting model (SFT) of the
    preference-tuning lesson (issue 34).
    """
    from helpers.data.instructions import TASKS
    from helpers.models.loading import load_causal_lm

    unknown = set(train_sizes) - set(TASKS)
    if unknown or not any(train_sizes.values()):
        raise ValueError(f"train_sizes must give examples for some of the tasks {list(TASKS)}, got {dict(train_sizes)}")
    recipe = {
        "model": INSTRUCTION_MODEL,
        "model_version": get_asset(INSTRUCTION_MODEL).version,
        "data": "instruction_dataset (split by film, article and question), train",
        "recipe_version": RECIPE_VERSION,
        "train_sizes": {task: int(train_sizes.get(task, 0)) for task in TASKS},  # a task left out: none
        "seed": int(seed),
        "lr": float(lr),
        "trainable_last_layers": int(trainable_last_layers),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "max_words": int(max_words),
        "style": style,
        "precision": precision.name,
        "warmup_ratio": 0.1,
    }
    return cached_model(
        instruction_cache_root(),
        recipe,
        train=lambda: _train_instruction_model(recipe, device, precision, progress),
        load=lambda folder: load_causal_lm(str(folder), device=device),
        cache=cache,
    )
