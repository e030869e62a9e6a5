"""Plots the lessons share.

``plot_lr_finder`` is used by ``course/12_exercise_lr_finder.ipynb`` once the
student's ``find_lr`` has returned (the exercise's function itself shows no plot);
``plot_training_curves`` by ``course/13_exercise_early_stopping.ipynb``;
``plot_loss_curves`` by ``course/01_strategies.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np


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

    ``histories`` maps a run's name to a :func:`helpers.training.train_loop` history.
    """
    if not histories:
        raise ValueError("no runs to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
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
