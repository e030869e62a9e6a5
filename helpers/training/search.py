"""A real hyperparameter search: ``Trainer.hyperparameter_search`` with Optuna, and every trial kept.

``Trainer.hyperparameter_search(backend="optuna")`` builds a fresh model for
each trial (``model_init``), sets the trial's values on ``TrainingArguments``,
trains, evaluates and returns only the best run. :func:`search_hyperparameters`
gives Optuna a study of its own (a seeded TPE sampler, in-memory storage) so
that the whole trials table can be read afterwards, and records each trial's
per-item correctness on the validation set, so that the best trial can be
compared item by item with another model. Taught in
``course/05_hyperparameters.ipynb``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase, Trainer
from transformers.trainer_callback import PrinterCallback

from helpers.device import FP32, Precision
from helpers.training.trainers import course_training_arguments, trainer_accuracy

__all__ = ["DEFAULT_SPACE", "SearchResult", "search_hyperparameters"]

# What the search may set, with its range (log scale for the learning rate). The names are TrainingArguments'.
DEFAULT_SPACE = {
    "learning_rate": (1e-5, 1e-3, "log"),
    "warmup_steps": (0.0, 0.3, "linear"),  # below 1: a share of the updates
    "weight_decay": (0.0, 0.1, "linear"),
}


@dataclass
class SearchResult:
    """The trials (one row each: number, objective, values, seconds), the best one, and its per-item correctness."""

    trials: pd.DataFrame
    best_params: dict
    best_value: float
    best_number: int
    correct: dict[int, np.ndarray]  # trial number -> 1.0 where the trial's model was right on a validation item
    seconds: float


def _suggest(trial, space: dict) -> dict:
    values = {}
    for name, (low, high, scale) in space.items():
        if scale not in ("log", "linear"):
            raise ValueError(f"scale of {name!r} must be 'log' or 'linear', got {scale!r}")
        values[name] = trial.suggest_float(name, low, high, log=scale == "log")
    return values


def search_hyperparameters(
    model_init: Callable[[], PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    train_data: Dataset,
    validation_data: Dataset,
    output_dir: str | Path,
    n_trials: int,
    space: dict | None = None,
    num_epochs: float = 1,
    batch_size: int = 16,
    precision: Precision = FP32,
    seed: int = 42,
    progress: bool = False,
) -> SearchResult:
    """Search ``space`` (``{name: (low, high, "log" | "linear")}``, default :data:`DEFAULT_SPACE`) with Optuna.

    Each trial trains ``model_init()`` on tokenized ``train_data`` (batches
    grouped by length, linear schedule, gradient clipping at 1, no weight
    decay on biases and LayerNorm: ``Trainer``'s defaults) and is scored by
    its accuracy on ``validation_data``. The sampler is seeded: the same call
    proposes the same trials. No checkpoint is written.
    """
    import optuna

    space = DEFAULT_SPACE if space is None else space
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    correct: list[np.ndarray] = []

    def metrics(prediction) -> dict[str, float]:
        # called once per trial (evaluation only at the end): keep which items the trial got right
        correct.append((np.asarray(prediction.predictions).argmax(-1) == prediction.label_ids).astype(float))
        return trainer_accuracy(prediction)

    args = course_training_arguments(
        output_dir,
        precision,
        seed=seed,
        progress=progress,
        per_device_train_batch_size=batch_size,
        num_train_epochs=num_epochs,
        learning_rate=1e-4,
        warmup_steps=0.1,  # a float, so that the trials' shares are not cast to int
        weight_decay=0.01,
        train_sampling_strategy="group_by_length",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
    )
    trainer = Trainer(
        model_init=model_init,
        args=args,
        train_dataset=train_data,
        eval_dataset=validation_data,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics,
    )
    trainer.remove_callback(PrinterCallback)  # one printed dict per trial: the table below says it all
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    name = f"search-{seed}"
    start = time.perf_counter()
    best = trainer.hyperparameter_search(
        hp_space=lambda trial: _suggest(trial, space),
        backend="optuna",
        n_trials=n_trials,
        direction="maximize",
        compute_objective=lambda metrics: metrics["eval_accuracy"],
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=storage)
    if len(correct) != len(study.trials):
        raise RuntimeError(f"{len(correct)} evaluations for {len(study.trials)} trials: was something evaluated twice?")
    trials = pd.DataFrame(
        [
            {
                "essai": t.number,
                "accuracy": t.value,
                **t.params,
                "secondes": (t.datetime_complete - t.datetime_start).total_seconds(),
            }
            for t in study.trials
        ]
    ).set_index("essai")
    return SearchResult(
        trials,
        dict(best.hyperparameters),
        float(best.objective),
        int(best.run_id),
        {t.number: c for t, c in zip(study.trials, correct)},
        seconds,
    )
