"""Comparisons said in French, with one vocabulary: the sentence a lesson prints is chosen by the numbers.

Every comparison of :mod:`helpers.evaluation.uncertainty` ends in one of three
verdicts, and the lessons print them with the same words:

- ``"better"``: *mieux* — the whole interval of the difference lies on the good side of 0;
- ``"worse"``: *moins bien* — the whole interval lies on the bad side;
- ``"indistinguishable"``: *indiscernable* — the interval contains 0. Neither a
  difference nor an equality is shown: the data do not refute "no
  difference", and they do not confirm it either (a wider test might
  separate them). :func:`describe` says so in full.

A notebook cell then reads ``print(describe(comparison, "LoRA", "le fine-tuning
complet", measure="l'accuracy"))`` instead of a sentence typed in advance.
Taught from ``course/01_strategies.ipynb`` on; used by every lesson that
compares models.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from helpers.evaluation.uncertainty import VERDICTS, Interval
from helpers.recording import judged

__all__ = ["VERDICT_WORDS", "TABLE_COLUMNS", "in_french", "versus", "difference_text", "describe", "verdict_for"]

VERDICT_WORDS = {"better": "mieux", "worse": "moins bien", "indistinguishable": "indiscernable"}
# The English column names of the library's tables, as a lesson shows them (the README's glossary).
TABLE_COLUMNS = {
    "low": "bas",
    "high": "haut",
    "vs reference": "écart à la référence",
    "diff low": "écart bas",
    "diff high": "écart haut",
    "ok": "réponses",
    "errors": "erreurs",
    "p50_ms": "p50 (ms)",
    "p95_ms": "p95 (ms)",
    "requests_per_s": "requêtes/s",
}


class _Compared(Protocol):
    difference: Interval
    verdict: str


def _check(verdict: str) -> None:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")


def in_french(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its known English column names (:data:`TABLE_COLUMNS`) and verdicts (:data:`VERDICT_WORDS`) in French.

    For display only: the library's tables keep their English names, which
    the code reads.
    """
    shown = table.rename(columns=TABLE_COLUMNS)
    if "verdict" in shown.columns:
        shown["verdict"] = shown["verdict"].map(lambda v: VERDICT_WORDS.get(v, v) if isinstance(v, str) else v)
    return shown


def verdict_for(verdict: str, higher_is_better: bool = True) -> str:
    """The verdict of A against B for a measure where lower is better (a loss, an error rate): "better" and "worse" swap."""
    _check(verdict)
    return judged(verdict, higher_is_better)


def versus(verdict: str, other: str) -> str:
    """A verdict as a phrase about ``other``: "mieux que X", "moins bien que X", "indiscernable de X" ("du", "des")."""
    _check(verdict)
    phrase = f"{VERDICT_WORDS[verdict]} {'de' if verdict == 'indistinguishable' else 'que'} {other}"
    return phrase.replace(" de le ", " du ").replace(" de les ", " des ")


def difference_text(difference: Interval, scale: float = 1.0, unit: str = "", digits: int = 3) -> str:
    """``+0.037 [+0.003, +0.073]`` (``scale=100, unit="points", digits=1``: ``+3.7 [+0.3, +7.3] points``)."""
    text = (
        f"{scale * difference.value:+.{digits}f} "
        f"[{scale * difference.low:+.{digits}f}, {scale * difference.high:+.{digits}f}]"
    )
    return f"{text} {unit}" if unit else text


def describe(
    comparison: _Compared,
    a: str,
    b: str,
    measure: str = "l'accuracy",
    higher_is_better: bool = True,
    scale: float = 1.0,
    unit: str = "",
    digits: int = 3,
) -> str:
    """One French sentence for "A compared with B": the difference, its 95 % interval, and what they allow one to say.

    ``comparison`` is any result with ``difference`` (an :class:`Interval` of
    A − B) and ``verdict`` (``paired_bootstrap``, ``paired_seeds``,
    ``paired_bootstrap_metric``, ``independent_difference``). With
    ``higher_is_better=False`` (a loss) a difference below 0 is the better
    one. The sentence for an interval that contains 0 says that nothing is
    established either way, never that A and B are equivalent.
    """
    verdict = verdict_for(comparison.verdict, higher_is_better)
    confidence = round(100 * comparison.difference.confidence)
    numbers = f"{a} − {b} = {difference_text(comparison.difference, scale, unit, digits)} ({confidence} %)"
    numbers = numbers[0].upper() + numbers[1:]  # a sentence starts with a capital, wherever A's name does not
    if comparison.difference.low == comparison.difference.high == 0:  # every paired difference is zero
        return f"{numbers} : l'écart est nul sur chaque item, {a} et {b} font exactement pareil sur {measure}."
    if verdict == "indistinguishable":
        return (
            f"{numbers} : l'intervalle contient 0, {a} est {versus(verdict, b)} sur {measure}. "
            "Aucune différence n'est établie, et aucune égalité non plus : ni confirmé, ni réfuté."
        )
    side = "au-dessus" if comparison.difference.low > 0 else "au-dessous"
    return f"{numbers} : l'intervalle est entièrement {side} de 0, {a} fait {versus(verdict, b)} sur {measure}."
