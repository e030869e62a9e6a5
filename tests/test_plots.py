"""Plots of helpers.plots that no other test file covers, on real training histories."""

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers.plots import plot_lr_schedules
from helpers.training.loops import train_loop


def test_lr_schedule_plot_draws_each_runs_recorded_rates():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)

    class WithLoss(torch.nn.Module):  # train_loop wants an output with .loss
        def __init__(self):
            super().__init__()
            self.linear = model

        def forward(self, x, labels):
            return SimpleNamespace(loss=torch.nn.functional.cross_entropy(self.linear(x), labels))

    wrapped = WithLoss()
    loader = [{"x": torch.randn(8, 4), "labels": torch.randint(0, 2, (8,))} for _ in range(10)]
    history = train_loop(
        wrapped, loader, torch.optim.AdamW(wrapped.parameters(), lr=1e-3), warmup_ratio=0.2, progress=False
    )
    assert len(history["lr"]) == 10 and max(history["lr"]) == pytest.approx(1e-3)
    ax = plot_lr_schedules({"run": history, "half": {"lr": [r / 2 for r in history["lr"]]}})
    assert ax.get_yscale() == "log" and [line.get_label() for line in ax.get_lines()] == ["run", "half"]
    x, y = ax.get_lines()[0].get_data()
    assert list(x) == list(range(1, 11))
    assert np.allclose(np.nan_to_num(y), history["lr"])  # a rate of 0 (end of the decay) is not drawn on a log axis
    with pytest.raises(ValueError, match="no recorded learning rates"):
        plot_lr_schedules({"empty": {"lr": []}})


def test_lr_sweep_plot_draws_points_intervals_suggestion_and_reference():
    from helpers.plots import plot_lr_sweep

    ax = plot_lr_sweep(
        [1e-5, 1e-4, 1e-3], [0.55, 0.7, 0.6], [0.5, 0.65, 0.5], [0.6, 0.75, 0.7], suggested_lr=3e-4, reference=0.55
    )
    assert ax.get_xscale() == "log"
    line = ax.lines[0]
    assert list(line.get_ydata()) == [0.55, 0.7, 0.6]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any("3.0e-04" in label for label in labels) and any("0.550" in label for label in labels)
    with pytest.raises(ValueError, match="one value, low and high"):
        plot_lr_sweep([1e-5, 1e-4], [0.5], [0.4], [0.6])
    with pytest.raises(ValueError, match="positive"):
        plot_lr_sweep([0.0], [0.5], [0.4], [0.6])


def test_epoch_curves_plot_marks_each_runs_best_epoch():
    from helpers.plots import plot_epoch_curves

    curves = {
        "100": {"value": [0.6, 0.7, 0.65], "low": [0.5, 0.6, 0.55], "high": [0.7, 0.8, 0.75]},
        "1000": {"value": [0.7, 0.75], "low": [0.65, 0.7], "high": [0.75, 0.8]},
    }
    ax = plot_epoch_curves(curves)
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [(float(s.get_xdata()[0]), float(s.get_ydata()[0])) for s in stars] == [(2.0, 0.7), (2.0, 0.75)]
    with pytest.raises(ValueError, match="no runs"):
        plot_epoch_curves({})
    with pytest.raises(ValueError, match="no epoch"):
        plot_epoch_curves({"x": {"value": [], "low": [], "high": []}})
