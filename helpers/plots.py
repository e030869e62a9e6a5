"""Plots the lessons share.

``plot_lr_finder`` is used by ``course/15_exercise_lr_finder.ipynb`` once the
student's ``find_lr`` has returned (the exercise's function itself shows no plot);
``plot_training_curves`` by ``course/16_exercise_early_stopping.ipynb``;
``plot_loss_curves`` and ``plot_lr_schedules`` by ``course/01_strategies.ipynb``; ``plot_trainer_log`` by
``course/03_bert_classification.ipynb``; ``plot_train_validation`` and
``plot_intervals`` by ``course/07_overfitting_imbalance.ipynb``; ``plot_forgetting_tradeoff`` by
``course/06_catastrophic_forgetting.ipynb``; ``plot_lr_sweep`` and ``plot_epoch_curves`` by
``course/05_hyperparameters.ipynb``; ``plot_reliability`` and ``plot_score_distributions`` by
``course/09_evaluation.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "plot_lr_finder",
    "plot_training_curves",
    "plot_loss_curves",
    "plot_lr_schedules",
    "plot_trainer_log",
    "plot_train_validation",
    "plot_intervals",
    "plot_forgetting_tradeoff",
    "plot_adaptation_tradeoff",
    "plot_lr_sweep",
    "plot_epoch_curves",
    "plot_reliability",
    "plot_score_distributions",
]

if TYPE_CHECKING:
    import pandas as pd


def _axes_for_runs(runs: dict, ax: plt.Axes | None, figsize: tuple[float, float] = (7, 3.5)) -> plt.Axes:
    """``ax``, or a new one, for a plot of several named runs; refuses an empty ``runs``."""
    if not runs:
        raise ValueError("no runs to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_lr_finder(
    lrs: Sequence[float], losses: Sequence[float], suggested_lr: float | None = None, ax: plt.Axes | None = None
) -> plt.Axes:
    """Loss against learning rate on a log axis, with the suggested rate marked.

    Raises ``ValueError`` on empty or mismatched inputs, so that a broken
    ``find_lr`` is reported clearly rather than as an empty plot.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if lrs.size == 0 or lrs.shape != losses.shape:
        raise ValueError(f"need as many learning rates as losses, at least one: got {lrs.size} and {losses.size}")
    if np.any(lrs <= 0):
        raise ValueError("learning rates must be positive for a log-scale plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(lrs, losses, marker=".", label="perte du batch")
    ax.set_xscale("log")
    ax.set_xlabel("taux d'apprentissage (échelle log)")
    ax.set_ylabel("perte")
    ax.set_title("LR range test")
    if suggested_lr is not None:
        ax.axvline(suggested_lr, color="tab:red", linestyle="--", label=f"suggéré : {suggested_lr:.1e}")
    ax.legend()
    return ax


def plot_training_curves(history: dict, title: str = "", ax: plt.Axes | None = None) -> plt.Axes:
    """Training and validation loss per epoch, with the best validation epoch marked.

    ``history`` holds ``train_loss`` and ``val_loss`` lists (one value per epoch).
    """
    train, val = history.get("train_loss", []), history.get("val_loss", [])
    if not val:
        raise ValueError("history has no 'val_loss' values to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, len(val) + 1)
    if train:
        ax.plot(epochs[: len(train)], train, label="entraînement")
    ax.plot(epochs, val, label="validation")
    best = int(np.argmin(val)) + 1
    ax.axvline(best, color="tab:green", linestyle="--", label=f"meilleure époque : {best}")
    ax.set_xlabel("époque")
    ax.set_ylabel("perte")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_loss_curves(histories: dict[str, dict], window: int = 5, ax: plt.Axes | None = None) -> plt.Axes:
    """Training loss per update of several runs on one plot (moving average over ``window`` updates).

    ``histories`` maps a run's name to a :func:`helpers.training.loops.train_loop` history.
    """
    ax = _axes_for_runs(histories, ax)
    for name, history in histories.items():
        losses = np.asarray(history["loss"], dtype=float)
        if losses.size == 0:
            raise ValueError(f"run {name!r} has no recorded loss")
        width = max(1, min(window, losses.size))
        smoothed = np.convolve(losses, np.ones(width) / width, mode="valid")
        ax.plot(np.arange(width, losses.size + 1), smoothed, label=name)
    ax.set_xlabel("mise à jour")
    ax.set_ylabel(f"perte d'entraînement (moyenne sur {window})")
    ax.legend()
    return ax


def plot_lr_schedules(histories: dict[str, dict], ax: plt.Axes | None = None) -> plt.Axes:
    """Learning rate of each update of several runs (``history["lr"]``), on a log axis.

    ``histories`` maps a run's name to a :func:`helpers.training.loops.train_loop`
    history (or several phases' histories concatenated): warmup, decay and the
    restart of each phase show as they happened. Taught in
    ``course/01_strategies.ipynb``.
    """
    ax = _axes_for_runs(histories, ax)
    for name, history in histories.items():
        rates = np.asarray(history.get("lr", []), dtype=float)
        if rates.size == 0 or np.any(rates < 0):
            raise ValueError(f"run {name!r} has no recorded learning rates, or a negative one")
        ax.plot(np.arange(1, rates.size + 1), np.where(rates > 0, rates, np.nan), label=name)  # 0 has no log
    ax.set_yscale("log")
    ax.set_xlabel("mise à jour")
    ax.set_ylabel("taux d'apprentissage (échelle log)")
    ax.legend()
    return ax


def plot_trainer_log(log_history: Sequence[dict], metric: str | None = "eval_accuracy", axes=None) -> np.ndarray:
    """Learning curves from ``Trainer.state.log_history``: losses, and ``metric`` on a second plot, against steps.

    Training loss is logged every ``logging_steps``; evaluation loss and
    ``metric`` at every evaluation. ``metric=None`` draws the losses only.
    Raises ``ValueError`` when the log holds no evaluation (``eval_strategy="no"``).
    """
    train = [(row["step"], row["loss"]) for row in log_history if "loss" in row]
    evals = [row for row in log_history if "eval_loss" in row]
    if not evals:
        raise ValueError("the log has no evaluation: train with eval_strategy='epoch' or 'steps'")
    if metric is not None and not all(metric in row for row in evals):
        raise ValueError(f"the evaluations have no {metric!r}; they have {sorted(evals[0])}")
    if axes is None:
        _, axes = plt.subplots(1, 1 if metric is None else 2, figsize=(5 if metric is None else 10, 3.5), squeeze=False)
        axes = axes[0]
    if train:
        axes[0].plot(*zip(*train), label="entraînement", alpha=0.8)
    axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="o", label="validation")
    axes[0].set_xlabel("pas d'optimisation")
    axes[0].set_ylabel("perte")
    axes[0].legend()
    if metric is not None:
        steps, values = [r["step"] for r in evals], [r[metric] for r in evals]
        axes[1].plot(steps, values, marker="o", color="tab:green")
        axes[1].set_xlabel("pas d'optimisation")
        axes[1].set_ylabel(metric)
        for step, value, row in zip(steps, values, evals):  # epoch numbers above the evaluation points
            axes[1].annotate(
                f"ép. {row.get('epoch', 0):.1f}",
                (step, value),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
    return np.asarray(axes)


def plot_train_validation(
    log_history: Sequence[dict], sets: Sequence[str] = ("train", "validation"), axes=None
) -> np.ndarray:
    """Loss and accuracy per epoch on several evaluated sets (``Trainer`` with ``eval_dataset={name: ...}``).

    Reads ``eval_<set>_loss`` and ``eval_<set>_accuracy`` from
    ``Trainer.state.log_history``; the gap between the training and validation
    curves is over-fitting made visible. Taught in
    ``course/07_overfitting_imbalance.ipynb``.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name in sets:
        rows = [row for row in log_history if f"eval_{name}_loss" in row]
        if not rows:
            raise ValueError(f"the log has no evaluation on {name!r}: pass eval_dataset={{{name!r}: ...}}")
        epochs = [row["epoch"] for row in rows]
        axes[0].plot(epochs, [row[f"eval_{name}_loss"] for row in rows], marker="o", label=name)
        axes[1].plot(epochs, [row[f"eval_{name}_accuracy"] for row in rows], marker="o", label=name)
    for ax, label in zip(axes, ("perte", "accuracy")):
        ax.set_xlabel("époque")
        ax.set_ylabel(label)
        ax.legend()
    return np.asarray(axes)


def plot_intervals(table, metrics: Sequence[str], ax: plt.Axes | None = None) -> plt.Axes:
    """Grouped bars of ``metrics`` for each row of ``table``, with their intervals as error bars.

    ``table`` has, for each metric ``m``, the columns ``m``, ``m low`` and
    ``m high`` (as :func:`helpers.evaluation.imbalance.imbalance_table`
    builds it). One group of bars per row (model), one bar per metric.
    Taught in ``course/07_overfitting_imbalance.ipynb``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 1.4 * len(table)), 3.5))
    width = 0.8 / len(metrics)
    x = np.arange(len(table))
    for i, metric in enumerate(metrics):
        values = table[metric].to_numpy(dtype=float)
        errors = np.vstack(
            [
                values - table[f"{metric} low"].to_numpy(dtype=float),
                table[f"{metric} high"].to_numpy(dtype=float) - values,
            ]
        )
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, values, width, yerr=errors, capsize=3, label=metric)
    ax.set_xticks(x, list(table.index), rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend()
    return ax


def plot_forgetting_tradeoff(
    table,
    ax: plt.Axes | None = None,
    labels: Mapping[str, str] | None = None,
    sweeps: Mapping[str, Sequence[str]] | None = None,
) -> plt.Axes:
    """Target-task gain against general-text loss increase, one point per run, with both intervals.

    ``table`` is :func:`helpers.evaluation.forgetting.forgetting_table` with the
    model before fine-tuning as reference: x is the change in target exact
    match (points), y the change in loss per token of the general paragraphs
    (above 0: forgetting). The best place is bottom right. ``labels``: a
    shorter label per run (by default its name). ``sweeps``: named lists of
    runs (e.g. one strength swept over several values) joined by a line, in
    the order given, and named in the legend. Taught in
    ``course/06_catastrophic_forgetting.ipynb``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    labels = dict(labels or {})
    for names in (sweeps or {}).values():
        missing = [run for run in names if run not in table.index]
        if missing:
            raise KeyError(f"sweep runs {missing} are not rows of the table")

    def point(name):
        row = table.loc[name]
        return 100 * float(row["target_change"]), float(row["general_text_change"])

    for sweep, names in (sweeps or {}).items():
        xs, ys = zip(*(point(name) for name in names))
        ax.plot(xs, ys, linestyle="--", linewidth=1, label=sweep)
    for name, row in table.iterrows():
        x, y = point(name)
        xerr = [[x - 100 * float(row["target_change_low"])], [100 * float(row["target_change_high"]) - x]]
        yerr = [[y - float(row["general_text_change_low"])], [float(row["general_text_change_high"]) - y]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3)
        ax.annotate(labels.get(name, str(name)), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if sweeps:
        ax.legend(fontsize=8)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("gain sur la tâche cible (points d'exact match)")
    ax.set_ylabel("hausse de la perte sur le texte général (nats/token)")
    return ax


def plot_adaptation_tradeoff(table, title: str = "", ax: plt.Axes | None = None) -> plt.Axes:
    """Quality against training-state memory (log axis), one point per trained model, with the quality interval.

    ``table`` is :func:`helpers.evaluation.adaptation.adaptation_table`; rows
    without costs (the starting model) are drawn as a horizontal line. Up and
    to the left is better: more quality for less memory. Taught in
    ``course/11_peft.ipynb``.
    """
    import pandas as pd

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in table.iterrows():
        if pd.isna(row.get("training_state_MB", np.nan)):
            ax.axhline(float(row["quality"]), color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(
                str(name),
                (0.01, float(row["quality"])),
                xycoords=("axes fraction", "data"),
                textcoords="offset points",
                xytext=(0, 3),
                fontsize=8,
                color="grey",
            )
            continue
        x, y = float(row["training_state_MB"]), float(row["quality"])
        yerr = [[y - float(row["quality_low"])], [float(row["quality_high"]) - y]]
        marker = {"full": "s", "partial": "D"}.get(row["method"], "o")
        ax.errorbar(x, y, yerr=yerr, fmt=marker, capsize=3)
        ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("état d'entraînement : poids + gradients + moments d'AdamW (Mo, échelle log)")
    ax.set_ylabel("qualité (intervalle à 95 %)")
    ax.set_title(title)
    return ax


def plot_lr_sweep(
    lrs: Sequence[float],
    values: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    suggested_lr: float | None = None,
    reference: float | None = None,
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Validation accuracy against the learning rate (log axis), with intervals, the range test's rate and a reference.

    ``values``, ``lows`` and ``highs`` are each rate's accuracy and interval
    bounds; ``suggested_lr`` draws the LR range test's suggestion, and
    ``reference`` a horizontal line (the majority class share). Taught in
    ``course/05_hyperparameters.ipynb``.
    """
    lrs, values = np.asarray(lrs, dtype=float), np.asarray(values, dtype=float)
    lows, highs = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)
    if lrs.size == 0 or not lrs.shape == values.shape == lows.shape == highs.shape:
        raise ValueError("need one value, low and high per learning rate, and at least one rate")
    if np.any(lrs <= 0):
        raise ValueError("learning rates must be positive for a log-scale plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.errorbar(
        lrs,
        values,
        yerr=np.vstack([values - lows, highs - values]),
        fmt="o-",
        capsize=3,
        label="accuracy de validation (IC 95 %)",
    )
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle=":", label=f"classe majoritaire : {reference:.3f}")
    if suggested_lr is not None:
        ax.axvline(suggested_lr, color="tab:red", linestyle="--", label=f"LR range test : {suggested_lr:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("taux d'apprentissage (échelle log)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return ax


def plot_epoch_curves(curves: dict[str, dict], ax: plt.Axes | None = None) -> plt.Axes:
    """Validation accuracy after each epoch for several runs, with intervals and each run's best epoch marked.

    ``curves`` maps a run's name to ``{"value": [...], "low": [...], "high": [...]}``
    (one entry per epoch). Taught in ``course/05_hyperparameters.ipynb``
    (one run per training-set size).
    """
    ax = _axes_for_runs(curves, ax)
    for name, curve in curves.items():
        values = np.asarray(curve["value"], dtype=float)
        if values.size == 0:
            raise ValueError(f"run {name!r} has no epoch")
        epochs = np.arange(1, values.size + 1)
        (line,) = ax.plot(epochs, values, marker="o", label=name)
        ax.fill_between(epochs, curve["low"], curve["high"], color=line.get_color(), alpha=0.15)
        best = int(np.argmax(values))
        ax.plot(epochs[best], values[best], marker="*", markersize=14, color=line.get_color())
    ax.set_xlabel("époque")
    ax.set_ylabel("accuracy de validation")
    ax.legend(fontsize=8)
    return ax


def plot_reliability(tables: dict[str, pd.DataFrame], ax: plt.Axes | None = None) -> plt.Axes:
    """Reliability diagram: accuracy against mean confidence of each non-empty bin, one line per named table.

    ``tables`` maps a name (a model, before or after temperature scaling) to
    a :func:`helpers.evaluation.calibration.reliability_table`. The dashed
    diagonal is perfect calibration; points below it are overconfident.
    Taught in ``course/09_evaluation.ipynb``.
    """
    ax = _axes_for_runs(tables, ax, figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="calibration parfaite")
    for name, table in tables.items():
        filled = table[table["count"] > 0]
        if filled.empty:
            raise ValueError(f"table {name!r} has no item in any bin")
        ax.plot(filled["mean_confidence"], filled["accuracy"], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confiance moyenne du bin")
    ax.set_ylabel("accuracy du bin")
    ax.legend(fontsize=8)
    return ax


def plot_score_distributions(
    scores: dict[str, np.ndarray], xlabel: str, ax: plt.Axes | None = None, bins: int = 30
) -> plt.Axes:
    """Overlaid histograms (densities, the same ``bins`` for all) of several named groups of scores.

    ``scores`` maps a group's name (in-distribution, out-of-distribution) to
    its scores, e.g. :func:`helpers.evaluation.ood.max_softmax_probability`;
    the less the histograms overlap, the better the score separates the
    groups. Taught in ``course/09_evaluation.ipynb``.
    """
    ax = _axes_for_runs(scores, ax)
    arrays = {name: np.asarray(values, dtype=float).ravel() for name, values in scores.items()}
    for name, values in arrays.items():
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"group {name!r} has no scores, or a score that is not finite")
    edges = np.histogram_bin_edges(np.concatenate(list(arrays.values())), bins=bins)
    for name, values in arrays.items():
        ax.hist(values, bins=edges, density=True, alpha=0.5, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("densité")
    ax.legend()
    return ax
