"""The table that compares full, partial and LoRA fine-tuning: costs, quality and retention with intervals.

:func:`adaptation_table` reads the runs of :mod:`helpers.training.adaptation`
and per-item scores, and compares each model with a reference
(:func:`helpers.evaluation.uncertainty.compare_to_reference`). Taught in
``course/11_peft.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from helpers.training.adaptation import AdaptationRun

__all__ = ["adaptation_table"]


def adaptation_table(
    runs: Mapping[str, AdaptationRun],
    quality: Mapping[str, np.ndarray],
    retention: Mapping[str, np.ndarray],
    quality_reference: str,
    retention_reference: str,
    retention_higher_is_better: bool,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per model: its costs (:meth:`AdaptationRun.costs`), quality and retention, each with its interval.

    ``quality`` and ``retention`` map each model's name to per-item scores
    (the same items for every model, e.g. 0/1 correctness, or a loss per
    paragraph). Quality is compared, pair by pair, with ``quality_reference``
    (e.g. full fine-tuning), retention with ``retention_reference`` (the model
    before fine-tuning): columns ``quality``, ``quality_low``/``_high``,
    ``quality_change`` (with its interval) and ``quality_verdict``, and the
    same for ``retention``
    (:func:`helpers.evaluation.uncertainty.compare_to_reference`). A model
    with scores but no run (the starting model) has no costs.
    """
    from helpers.evaluation.uncertainty import compare_to_reference

    for name, reference in (("quality", quality_reference), ("retention", retention_reference)):
        scores = quality if name == "quality" else retention
        if reference not in scores:
            raise KeyError(f"{name} reference {reference!r} is not one of {list(scores)}")
    rows = {}
    for name in dict.fromkeys([*quality, *runs]):
        row: dict = runs[name].costs() if name in runs else {"method": "—"}
        if name in quality:
            reference_values = quality[name] if name == quality_reference else quality[quality_reference]
            row |= compare_to_reference(quality[name], reference_values, True, seed, prefix="quality_")
        if name in retention:
            reference_values = retention[name] if name == retention_reference else retention[retention_reference]
            row |= compare_to_reference(
                retention[name], reference_values, retention_higher_is_better, seed, prefix="retention_"
            )
        rows[name] = row
    return pd.DataFrame(rows).T
