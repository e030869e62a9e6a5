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
    history = train_loop(wrapped, loader, torch.optim.AdamW(wrapped.parameters(), lr=1e-3), warmup_ratio=0.2,
                         progress=False)
    assert len(history["lr"]) == 10 and max(history["lr"]) == pytest.approx(1e-3)
    ax = plot_lr_schedules({"run": history, "half": {"lr": [r / 2 for r in history["lr"]]}})
    assert ax.get_yscale() == "log" and [line.get_label() for line in ax.get_lines()] == ["run", "half"]
    x, y = ax.get_lines()[0].get_data()
    assert list(x) == list(range(1, 11))
    assert np.allclose(np.nan_to_num(y), history["lr"])  # a rate of 0 (end of the decay) is not drawn on a log axis
    with pytest.raises(ValueError, match="no recorded learning rates"):
        plot_lr_schedules({"empty": {"lr": []}})
