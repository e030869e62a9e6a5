"""Test-session defaults and which notebooks nbval runs.

nbval runs the lesson notebooks of ``course/`` and the instructor sources of
``solutions/``; released nbgrader assignments in ``course/`` are skipped (their
stubs raise by design; the grading round trip tests them).
"""

import os
from pathlib import Path

# Tests and notebooks run offline and in fast mode unless the caller says otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FTCOURSE_FAST", "1")

ROOT = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path)
    if path.suffix != ".ipynb":
        return None
    if ".ipynb_checkpoints" in path.parts or ROOT / "executed" in path.parents:
        return True
    if ROOT / "course" in path.parents:
        import nbformat

        from ftcourse.runner import is_nbgrader_assignment

        return is_nbgrader_assignment(nbformat.read(path, as_version=4)) or None
    return None
