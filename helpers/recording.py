"""What a lesson concludes from, written to one results file per notebook: the same mechanism for every lesson.

A lesson's summary calls ``env.record(name, value)`` for each number it
concludes from: an :class:`~helpers.evaluation.uncertainty.Interval`, a paired
or independent comparison, a McNemar test, a plain number or a short text.
The record keeps the value, its interval and verdict (and, where the summary
applies Holm's correction, the adjusted verdict), the number of test items
and of seeds, and where and in which precision it was measured.

Nothing is written unless ``FTCOURSE_RESULTS`` names a file:
``benchmarks/course_times.py`` sets it for each notebook it runs, then
gathers the files into ``benchmarks/results/lessons.json``, from which
``benchmarks/readme_tables.py`` generates the per-lesson tables of
``RESULTS.md``. Each record is written at once (the whole file, atomically),
so a notebook that fails later keeps what it had measured. In a student's
JupyterLab the records stay in ``env.results``.

Torch-free, like :mod:`helpers.environment`. Taught in every lesson's summary, first in
``course/00_introduction.ipynb``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from numbers import Real
from pathlib import Path
from typing import Any

from helpers.environment import RESULTS_ENV

__all__ = ["VERDICTS", "judged", "result_entry", "write_results", "results_path"]

VERDICTS = ("better", "worse", "indistinguishable")


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number  # JSON has no NaN: "not computed" is null


def _python_scalar(value: Any) -> Any:
    """A NumPy scalar (np.float64, np.bool_) as its Python value; anything else unchanged."""
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


def _plain(value: Any) -> Any:
    """``value`` with every NaN (at any depth) as None and NumPy scalars as Python's."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    value = _python_scalar(value)
    if isinstance(value, float):
        return _number(value)
    return value


def judged(verdict: str, higher_is_better: bool = True) -> str:
    """A sign verdict read as a judgement: for a measure where lower is better, "better" and "worse" swap.

    The one place this swap is written (records, :func:`helpers.evaluation.reporting.verdict_for`,
    :func:`helpers.evaluation.uncertainty.compare_to_reference`); other words pass unchanged.
    """
    if higher_is_better:
        return verdict
    return {"better": "worse", "worse": "better"}.get(verdict, verdict)


def result_entry(
    value: Any,
    *,
    n: int | None = None,
    seeds: int | None = None,
    holm_verdict: str | None = None,
    unit: str | None = None,
    higher_is_better: bool = True,
) -> dict:
    """One record: ``value`` made plain JSON, with what it needs to be read.

    ``value`` is anything with an ``as_dict()`` (an interval or a comparison of
    :mod:`helpers.evaluation.uncertainty`), a real number or a string. ``n``
    (test items) defaults to the comparison's own; ``seeds`` is the number of
    training runs behind it; ``holm_verdict`` the verdict after Holm's
    correction when the summary applies it; ``unit`` what the number counts.

    A comparison's verdict is a sign (``"better"``: A - B above 0). For a measure
    where lower is better (a loss, a perplexity, a calibration error),
    ``higher_is_better=False`` turns it, and ``holm_verdict`` given on the same
    scale, into a judgement (``"better"``: A improves on B), and the unit says
    "lower is better", so that every record's verdict reads the same way.
    """
    value = _python_scalar(value)
    if hasattr(value, "as_dict"):
        entry = {"kind": type(value).__name__, **value.as_dict()}
    elif isinstance(value, bool):
        entry = {"kind": "flag", "value": value}
    elif isinstance(value, Real):
        entry = {"kind": "number", "value": _number(value)}
    elif isinstance(value, str):
        entry = {"kind": "text", "value": value}
    else:
        raise TypeError(
            f"cannot record a {type(value).__name__}: give an interval or comparison (with as_dict), a number or a text"
        )
    entry = _plain(entry)
    if not higher_is_better:
        if entry.get("verdict") not in VERDICTS:
            raise ValueError(
                "higher_is_better=False judges a comparison's verdict, and this value has none: "
                "record the comparison itself, or say which side is better in the unit"
            )
        entry["verdict"] = judged(entry["verdict"], higher_is_better=False)
        entry["higher_is_better"] = False
        unit = "lower is better" if unit is None else unit
        if "lower is better" not in unit:
            unit = f"{unit} (lower is better)"
    for name, given in [("n", n), ("seeds", seeds)]:
        if given is not None:
            if int(given) < 1:
                raise ValueError(f"{name} must be at least 1, got {given}")
            entry[name] = int(given)
    if holm_verdict is not None:
        if holm_verdict not in VERDICTS:
            raise ValueError(f"holm_verdict must be one of {VERDICTS}, got {holm_verdict!r}")
        entry["holm_verdict"] = judged(holm_verdict, higher_is_better)
    if unit is not None:
        entry["unit"] = unit
    return entry


def results_path() -> Path | None:
    """The file ``FTCOURSE_RESULTS`` names, or None: then records are kept in memory only."""
    named = os.environ.get(RESULTS_ENV, "").strip()
    return Path(named) if named else None


def write_results(path: Path, header: dict, records: dict[str, dict]) -> None:
    """Write ``header`` and ``records`` to ``path`` as one JSON document, atomically (a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**header, "records": records}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(document, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")
    os.replace(handle.name, path)
