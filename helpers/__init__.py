"""The course library: what the notebooks of ``course/`` import.

Grouped by concern; every function's docstring names the notebook that teaches it.

- :mod:`helpers.device`: device and precision choice, ``setup()`` of every notebook's first cell.
- :mod:`helpers.assets` and :mod:`helpers.models`: embedded models and data, loading by name or Hub id;
  :mod:`helpers.heads`: the mean-pooling classification head beside the `[CLS]` one.
- :mod:`helpers.data`: data loaders and splits, batching and padding, instruction data and prompt formats.
- :mod:`helpers.training`: training loops, freezing and optimizers, causal-LM labels and perplexity.
- :mod:`helpers.evaluation`: metrics and baselines, uncertainty (bootstrap intervals, paired comparisons).
- :mod:`helpers.generation`, :mod:`helpers.inference`, :mod:`helpers.plots`.
- :mod:`helpers.deployment`: int8 quantization, ONNX export, the FastAPI service and its server process and
  load-test client (the ``deploy`` extra).

The instructor and CI tooling (the ``ftcourse`` command, notebook runner,
release and grading) is the separate package ``ftcourse``.

``import helpers`` stays light (no torch): ``setup`` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helpers.device import setup

__all__ = ["setup"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "setup":  # torch is imported here, not by ``import helpers``
        from helpers.device import setup

        return setup
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")
