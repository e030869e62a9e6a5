"""Shared library of the LLM fine-tuning course.

The notebooks in ``course/`` teach; this package holds the code they call, once:
embedded assets (:mod:`helpers.assets`), models (:mod:`helpers.models`), data
(:mod:`helpers.data`), device and precision (:mod:`helpers.device`), batching
(:mod:`helpers.batching`), freezing (:mod:`helpers.freezing`), training loops
(:mod:`helpers.training`), metrics and baselines (:mod:`helpers.metrics`),
inference (:mod:`helpers.inference`), instruction data and prompt formats
(:mod:`helpers.instructions`), causal-LM labels and perplexity
(:mod:`helpers.causal_lm`), generation (:mod:`helpers.generation`), plots
(:mod:`helpers.plots`), grading (:mod:`helpers.grading`) and the ``ftcourse``
command line (:mod:`helpers.cli`).
"""

from .device import setup

__all__ = ["setup"]
__version__ = "0.1.0"
