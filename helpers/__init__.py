"""Shared library of the LLM fine-tuning course.

The notebooks in ``course/`` teach; this package holds the code they call, once:
embedded assets (:mod:`helpers.assets`), models (:mod:`helpers.models`), data
(:mod:`helpers.data`), device and precision (:mod:`helpers.device`), metrics and
baselines (:mod:`helpers.metrics`), inference (:mod:`helpers.inference`) and the
``ftcourse`` command line (:mod:`helpers.cli`).
"""

from .device import setup

__all__ = ["setup"]
__version__ = "0.1.0"
