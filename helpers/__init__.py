"""The course library: what the notebooks of ``course/`` import.

In layers, lowest first; a module imports only from its own layer and those below
(``tests/test_layers.py``). Every function's docstring names the notebook that teaches it.

- Foundation: :mod:`helpers.device` (device and precision, ``setup()`` of every notebook's first cell),
  :mod:`helpers.environment`, :mod:`helpers.assets` (embedded models and data), :mod:`helpers.cache_lock`,
  :mod:`helpers.hub`, :mod:`helpers.measure` (sizes, peak memory), :mod:`helpers.plots`,
  :mod:`helpers.recording` (what ``env.record`` keeps of each lesson's conclusions).
- :mod:`helpers.data`: data sets and splits, batching and padding, instruction data, causal-LM labels.
- :mod:`helpers.models`: loading by name or Hub id, the mean-pooling head, generation, inference.
- :mod:`helpers.training`: the explicit loop, ``Trainer`` recipes, freezing, schedules, LoRA, and more.
- :mod:`helpers.evaluation`: metrics and baselines, intervals and paired comparisons, perplexity,
  calibration, forgetting.
- :mod:`helpers.deployment`: int8 quantization, ONNX export, the FastAPI app, its server process and
  load-test client (the ``deploy`` extra).

Each layer's package names what the lessons use (``from helpers.training import train_loop``) and
imports it on first use. The instructor and CI tooling (the ``ftcourse`` command, notebook runner,
release and grading) is the separate package ``ftcourse``.

``import helpers`` stays light (no torch): ``setup`` is imported on first use.
"""

from __future__ import annotations

from typing import Any

from helpers.lazy import lazy_exports

# setup (and torch with it) is imported on first use, as the layers' packages import theirs
__all__, _exported, __dir__ = lazy_exports(__name__, {"device": ["setup"]})


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # pyproject.toml's version, from the installed metadata: read on first use (about 40 ms), not by every
        # `import helpers` (each ftcourse command, each grading kernel)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("llm-finetuning-course")
        except PackageNotFoundError:  # a copy of helpers/ that was not installed (a student's handout)
            return "unknown"
    return _exported(name)
