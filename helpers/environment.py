"""The environment variables the course reads, and nothing heavier (no torch): the ``ftcourse``
tooling imports this module too.

- ``FTCOURSE_FAST=1``: fast mode, the same code on small data (CI).
- ``FTCOURSE_PRECISION=auto|fp32|bf16|fp16``: overrides the precision choice of :mod:`helpers.device`.
- ``HF_HUB_OFFLINE=1``: never contact the Hugging Face Hub.
- ``NBGRADER_EXECUTION``: set by nbgrader while it grades.
- ``FTCOURSE_QUIET``: set by ``setup()`` so that later imports of transformers and datasets stay quiet.
- ``FTCOURSE_RESULTS``: a JSON file where ``env.record`` writes what a lesson concludes from (set per notebook
  by ``benchmarks/course_times.py``; :mod:`helpers.recording`).
"""

from __future__ import annotations

import os

__all__ = ["FAST_ENV", "PRECISION_ENV", "QUIET_ENV", "RESULTS_ENV", "is_fast_mode", "is_offline", "is_grading"]

FAST_ENV = "FTCOURSE_FAST"
PRECISION_ENV = "FTCOURSE_PRECISION"
QUIET_ENV = "FTCOURSE_QUIET"
RESULTS_ENV = "FTCOURSE_RESULTS"
_TRUE = {"1", "true", "yes", "on"}


def is_fast_mode() -> bool:
    """True when ``FTCOURSE_FAST`` asks for the small, quick version of every notebook (CI)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in _TRUE


def is_offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def is_grading() -> bool:
    """True while nbgrader autogrades or validates the notebook (it sets ``NBGRADER_EXECUTION``).

    Demonstration cells that earn no points skip themselves then, so grading a
    class stays fast.
    """
    return bool(os.environ.get("NBGRADER_EXECUTION"))
