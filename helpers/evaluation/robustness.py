"""Behavioural tests of a sentiment classifier, CheckList style: what does it get wrong, and how?

Ribeiro et al. 2020 ("Beyond Accuracy: Behavioral Testing of NLP Models with
CheckList") test a model like software, with three kinds of tests:

- **MFT** (minimum functionality test): simple sentences built from templates,
  whose label is obvious (``"The film was terrible."`` is negative), made by
  :func:`mft_examples`. Failure: the prediction is not the expected label.
- **INV** (invariance): a perturbation that must not change the label (a
  typo, another first name, another number, other punctuation).
  Failure: the predicted label changes.
- **DIR** (directional expectation): a perturbation that must move the
  prediction one way, or not the other (appending ``"I hated it."`` must not
  make the text more positive). Failure: P(positive) moves the wrong way by
  more than a tolerance.

Labels are 0 (negative) and 1 (positive). Each perturbation is a function
``f(text, rng) -> str`` that draws from the ``random.Random`` it is given (the
same seed gives the same perturbed texts) and returns the text unchanged when
nothing in it applies (no name to change, no number, no sentiment
adjective): such texts are left out of that test. Words are runs of letters
(``"it's"`` holds ``"it"`` and ``"s"``); everything else is kept as it is.

:func:`run_checklist` runs every test against any ``predict_proba`` (a list of
texts in, probabilities of shape ``(n, 2)`` out) and returns a
:class:`ChecklistResult`: a table of failure rates with bootstrap intervals,
and every case, from which :func:`worst_failures` picks the worst.

The perturbations are written here by hand: ``nlpaug``'s synonym augmenter
and ``textattack``'s CheckList recipe need resources downloaded at run time
(NLTK's WordNet and tagger, flair's named-entity model), and the course runs
offline. Taught in ``course/09_evaluation.ipynb``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.evaluation.uncertainty import Interval, bootstrap_interval

__all__ = [
    "Perturbation",
    "PredictProba",
    "FIRST_NAMES",
    "NOUNS",
    "POSITIVE_ADJECTIVES",
    "NEGATIVE_ADJECTIVES",
    "POSITIVE_VERBS",
    "NEGATIVE_VERBS",
    "SENTIMENT_ADJECTIVES",
    "INTENSIFIERS",
    "NEGATIVE_PHRASES",
    "POSITIVE_PHRASES",
    "QWERTY_NEIGHBOURS",
    "add_typo",
    "keyboard_typo",
    "change_punctuation",
    "has_name",
    "change_names",
    "has_number",
    "change_numbers",
    "add_negative_phrase",
    "add_positive_phrase",
    "add_intensifier",
    "PERTURBATIONS",
    "MFT_TEMPLATES",
    "mft_examples",
    "ChecklistResult",
    "run_checklist",
    "worst_failures",
]

Perturbation = Callable[[str, random.Random], str]
PredictProba = Callable[[list[str]], np.ndarray]

# --- word lists --------------------------------------------------------------------

# Common English first names that are not also common words ("Will", "Mark", "Grace" are not here).
FIRST_NAMES = (
    "James",
    "John",
    "Robert",
    "Michael",
    "William",
    "David",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Daniel",
    "Matthew",
    "Steven",
    "Paul",
    "Peter",
    "George",
    "Kevin",
    "Brian",
    "Edward",
    "Jason",
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Nancy",
    "Lisa",
    "Emily",
    "Emma",
    "Anna",
    "Julia",
    "Laura",
    "Kate",
    "Helen",
    "Sandra",
)
NOUNS = ("film", "movie", "acting", "plot", "script", "story")
POSITIVE_ADJECTIVES = ("good", "great", "excellent", "wonderful", "brilliant", "enjoyable", "delightful", "superb")
NEGATIVE_ADJECTIVES = ("bad", "terrible", "awful", "boring", "dull", "horrible", "dreadful", "tedious")
POSITIVE_VERBS = ("loved", "enjoyed", "liked", "admired", "adored")
NEGATIVE_VERBS = ("hated", "disliked", "despised", "loathed", "detested")
# Adjectives that add_intensifier may strengthen: the template ones and others frequent in reviews.
SENTIMENT_ADJECTIVES = (
    POSITIVE_ADJECTIVES
    + NEGATIVE_ADJECTIVES
    + (
        "funny",
        "smart",
        "beautiful",
        "entertaining",
        "clever",
        "charming",
        "fascinating",
        "stupid",
        "silly",
        "predictable",
        "lame",
        "pointless",
        "bland",
        "clumsy",
        "mediocre",
    )
)
INTENSIFIERS = ("really", "very")
NEGATIVE_PHRASES = ("I hated it.", "It was a waste of time.", "It was terrible.", "Avoid it.", "I regret watching it.")
POSITIVE_PHRASES = (
    "I loved it.",
    "It was wonderful.",
    "Highly recommended.",
    "I enjoyed every minute.",
    "It was a delight.",
)
# A word after one of these is not intensified: "not good" -> "not very good" is less negative, not more.
_NO_INTENSIFIER_AFTER = frozenset(INTENSIFIERS) | {
    "not",
    "never",
    "no",
    "hardly",
    "t",
    "so",
    "too",
    "quite",
    "pretty",
    "rather",
    "fairly",
    "somewhat",
    "extremely",
    "truly",
    "most",
    "more",
    "less",
    "least",
}

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSETS = (0.0, 0.25, 0.75)  # how far each row is shifted to the right, in keys


def _qwerty_neighbours() -> dict[str, str]:
    """Each lowercase letter and the letters around it on a QWERTY keyboard (same row, or the rows above and below)."""
    position = {
        letter: (row, column + _ROW_OFFSETS[row])
        for row, letters in enumerate(_KEYBOARD_ROWS)
        for column, letter in enumerate(letters)
    }
    return {
        letter: "".join(
            other
            for other, (r, x) in position.items()
            if other != letter and ((r == row and abs(x - column) == 1) or (abs(r - row) == 1 and abs(x - column) < 1))
        )
        for letter, (row, column) in position.items()
    }


QWERTY_NEIGHBOURS = _qwerty_neighbours()

_WORD = re.compile(r"[A-Za-z]+")
_NAME = re.compile(r"\b(" + "|".join(FIRST_NAMES) + r")\b")
# A whole integer: not part of a decimal number ("3.5"), of a thousands group ("1,000") or of a word ("2nd", "mp3").
_NUMBER = re.compile(r"(?<![\w.,])\d+(?![.,]?\d)(?!\w)")
_FINAL_PUNCTUATION = ".!?"


# --- invariance perturbations (the label must not change) --------------------------


def _long_words(text: str, min_letters: int = 4) -> list[re.Match]:
    return [match for match in _WORD.finditer(text) if len(match.group()) >= min_letters]


def _replace_span(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def add_typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent, different letters inside one word of at least 4 letters.

    The word and the place in it are drawn with ``rng``; any word may be
    hit, sentiment words included (a reader still understands "terirble").
    A text without such a word is returned unchanged.
    Taught in ``course/09_evaluation.ipynb``.
    """
    places = [
        (match.start() + i)
        for match in _long_words(text)
        for i in range(len(match.group()) - 1)
        if match.group()[i] != match.group()[i + 1]
    ]
    if not places:
        return text
    i = rng.choice(places)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def keyboard_typo(text: str, rng: random.Random) -> str:
    """Replace one letter of a word of at least 4 letters by a neighbouring key on a QWERTY keyboard.

    The letter and its replacement (from :data:`QWERTY_NEIGHBOURS`) are drawn
    with ``rng``; an uppercase letter stays uppercase. A text without such a
    word is returned unchanged. Taught in ``course/09_evaluation.ipynb``.
    """
    places = [match.start() + i for match in _long_words(text) for i in range(len(match.group()))]
    if not places:
        return text
    i = rng.choice(places)
    new = rng.choice(QWERTY_NEIGHBOURS[text[i].lower()])
    return _replace_span(text, i, i + 1, new.upper() if text[i].isupper() else new)


def change_punctuation(text: str, rng: random.Random) -> str:
    """Remove the final ``.``, ``!`` or ``?`` (all of them: ``"Wow!!"`` -> ``"Wow"``), or add a ``.`` if there is none.

    Deterministic: ``rng`` is taken only so that every perturbation has the
    same signature. A text of punctuation or spaces only is returned unchanged.
    Taught in ``course/09_evaluation.ipynb``.
    """
    stripped = text.rstrip()
    if not stripped.strip(_FINAL_PUNCTUATION):
        return text
    if stripped[-1] in _FINAL_PUNCTUATION:
        return stripped.rstrip(_FINAL_PUNCTUATION)
    return stripped + "."


def has_name(text: str) -> bool:
    """Whether ``text`` contains one of :data:`FIRST_NAMES` as a whole, capitalized word.

    Only such texts are perturbed by :func:`change_names`.
    Taught in ``course/09_evaluation.ipynb``.
    """
    return _NAME.search(text) is not None


def change_names(text: str, rng: random.Random) -> str:
    """Replace one first name of :data:`FIRST_NAMES` found in ``text`` (every occurrence of it) by another one.

    The name to replace is drawn among those in the text, the new one among
    the names the text does not contain ("John's" becomes "Emma's"). A text
    without any such name (see :func:`has_name`) is returned unchanged.
    Taught in ``course/09_evaluation.ipynb``.
    """
    found = sorted(set(_NAME.findall(text)))
    if not found:
        return text
    old = rng.choice(found)
    new = rng.choice([name for name in FIRST_NAMES if name not in found])
    return re.sub(rf"\b{old}\b", new, text)


def has_number(text: str) -> bool:
    """Whether ``text`` contains a whole integer that :func:`change_numbers` can change.

    Taught in ``course/09_evaluation.ipynb``.
    """
    return _NUMBER.search(text) is not None


def change_numbers(text: str, rng: random.Random) -> str:
    """Change one whole integer of ``text`` by up to 10% of its value (at least by 1), never below 0.

    ``"90 minutes"`` may become ``"97 minutes"``; decimals (``"3.5"``) and
    numbers inside words (``"2nd"``) are left alone. A text without such a
    number (see :func:`has_number`) is returned unchanged.
    Taught in ``course/09_evaluation.ipynb``.
    """
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return text
    match = rng.choice(matches)
    value = int(match.group())
    change = rng.randint(1, max(1, value // 10)) * rng.choice((-1, 1))
    if value + change < 0:
        change = -change
    return _replace_span(text, match.start(), match.end(), str(value + change))


# --- directional perturbations (the prediction must not move the wrong way) ---------


def _append(text: str, sentence: str) -> str:
    stripped = text.rstrip()
    if not stripped:
        return sentence
    return f"{stripped} {sentence}" if stripped[-1] in _FINAL_PUNCTUATION + "\"'" else f"{stripped}. {sentence}"


def add_negative_phrase(text: str, rng: random.Random) -> str:
    """Append a clearly negative sentence drawn from :data:`NEGATIVE_PHRASES` (a ``.`` first if the text lacks one).

    Expectation: P(positive) must not increase. Taught in ``course/09_evaluation.ipynb``.
    """
    return _append(text, rng.choice(NEGATIVE_PHRASES))


def add_positive_phrase(text: str, rng: random.Random) -> str:
    """Append a clearly positive sentence drawn from :data:`POSITIVE_PHRASES` (a ``.`` first if the text lacks one).

    Expectation: P(positive) must not decrease. Taught in ``course/09_evaluation.ipynb``.
    """
    return _append(text, rng.choice(POSITIVE_PHRASES))


def add_intensifier(text: str, rng: random.Random) -> str:
    """Put ``"really"`` or ``"very"`` before one lowercase adjective of :data:`SENTIMENT_ADJECTIVES` in ``text``.

    ``"a good film"`` becomes ``"a really good film"``. An adjective right
    after a negation or a degree word (``"not good"``, ``"too dull"``,
    ``"very funny"``) is skipped: intensifying it could weaken the sentiment;
    so is one inside a hyphenated word (``"feel-good"``).
    A text without a usable adjective is returned unchanged. Expectation:
    the confidence in the predicted class must not decrease.
    Taught in ``course/09_evaluation.ipynb``.
    """
    words = list(_WORD.finditer(text))
    places = [
        match.start()
        for k, match in enumerate(words)
        if match.group() in SENTIMENT_ADJECTIVES
        and (k == 0 or words[k - 1].group().lower() not in _NO_INTENSIFIER_AFTER)
        and "-" not in text[max(match.start() - 1, 0) : match.start()] + text[match.end() : match.end() + 1]
    ]
    if not places:
        return text
    i = rng.choice(places)
    return text[:i] + rng.choice(INTENSIFIERS) + " " + text[i:]


# name -> (type, perturbation, what the prediction must do)
PERTURBATIONS: dict[str, tuple[str, Perturbation, str]] = {
    "typo": ("INV", add_typo, "same label"),
    "keyboard typo": ("INV", keyboard_typo, "same label"),
    "punctuation": ("INV", change_punctuation, "same label"),
    "change names": ("INV", change_names, "same label"),
    "change numbers": ("INV", change_numbers, "same label"),
    "add negative phrase": ("DIR", add_negative_phrase, "P(positive) not up"),
    "add positive phrase": ("DIR", add_positive_phrase, "P(positive) not down"),
    "add intensifier": ("DIR", add_intensifier, "confidence not down"),
}


# --- minimum-functionality tests --------------------------------------------------------

# test -> (templates, words for {word}, expected label)
MFT_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]] = {
    "positive adjective": (("The {noun} was {word}.", "I thought the {noun} was {word}."), POSITIVE_ADJECTIVES, 1),
    "negative adjective": (("The {noun} was {word}.", "I thought the {noun} was {word}."), NEGATIVE_ADJECTIVES, 0),
    "negated positive": (("The {noun} was not {word}.", "The {noun} wasn't {word} at all."), POSITIVE_ADJECTIVES, 0),
    "negated negative": (("The {noun} was not {word}.", "The {noun} wasn't {word} at all."), NEGATIVE_ADJECTIVES, 1),
    "positive verb": (("I {word} this {noun}.", "We {word} the {noun}."), POSITIVE_VERBS, 1),
    "negative verb": (("I {word} this {noun}.", "We {word} the {noun}."), NEGATIVE_VERBS, 0),
}


def mft_examples(seed: int = 0, n_per_test: int | None = None) -> list[dict]:
    """Template sentences with an obvious label: dicts with ``text``, ``label`` and ``test``.

    Every template of :data:`MFT_TEMPLATES` is filled with every noun of
    :data:`NOUNS` and every word of its list (96 sentences per adjective
    test, 60 per verb test). With
    ``n_per_test``, that many are drawn per test with ``random.Random(seed)``
    (without ``n_per_test`` the seed plays no part). The "negated negative"
    sentences ("The film was not bad.") are labelled positive; CheckList only
    expects them not to be negative (positive or neutral), and a binary model
    has no neutral: a failure there weighs less than one on the other tests.
    Taught in ``course/09_evaluation.ipynb``.
    """
    if n_per_test is not None and n_per_test < 1:
        raise ValueError(f"n_per_test must be at least 1 (or None for all), got {n_per_test}")
    rng = random.Random(seed)
    examples = []
    for test, (templates, words, label) in MFT_TEMPLATES.items():
        texts = [template.format(noun=noun, word=word) for template in templates for noun in NOUNS for word in words]
        if n_per_test is not None:
            if n_per_test > len(texts):
                raise ValueError(f"test {test!r} has {len(texts)} sentences, fewer than n_per_test={n_per_test}")
            texts = rng.sample(texts, n_per_test)
        examples += [{"text": text, "label": label, "test": test} for text in texts]
    return examples


# --- running the tests ------------------------------------------------------------


@dataclass(frozen=True)
class ChecklistResult:
    """The outcome of :func:`run_checklist`.

    ``table``: one row per test (``test``, ``type``, ``expectation``, ``n``,
    ``failures``, ``failure_rate``, ``interval``). ``cases``: one row per
    tested text (``test``, ``type``, ``original``, ``perturbed``, ``label``,
    ``p_original``, ``p_perturbed``, ``failed``, ``severity``), where ``p_*``
    are P(positive) and ``severity`` is how far the prediction went the wrong
    way (0 when it did not). An MFT case has no perturbation: its text is in
    ``original``, its P(positive) in ``p_original``, ``perturbed`` is empty
    and ``p_perturbed`` is ``nan``. Taught in ``course/09_evaluation.ipynb``.
    """

    table: pd.DataFrame
    cases: pd.DataFrame


def _positive_proba(predict_proba: PredictProba, texts: list[str]) -> np.ndarray:
    """P(positive) of each text, from one call of ``predict_proba``, after checking what it returned."""
    if not texts:
        return np.zeros(0)
    proba = np.asarray(predict_proba(list(texts)), dtype=float)
    if proba.shape != (len(texts), 2):
        raise ValueError(
            f"predict_proba must return probabilities of shape (number of texts, 2) = ({len(texts)}, 2), "
            f"got shape {proba.shape}"
        )
    if not np.all(np.isfinite(proba)) or np.any(proba < 0) or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(
            "predict_proba must return probabilities (each row in [0, 1], summing to 1); logits need a softmax first"
        )
    return proba[:, 1]


def _predicted(p_positive: np.ndarray) -> np.ndarray:
    return (p_positive > 0.5).astype(int)


def _severity(expectation: str, p_old: np.ndarray, p_new: np.ndarray) -> np.ndarray:
    """How far P(positive) went from ``p_old`` to ``p_new`` in the direction the expectation forbids (>= 0)."""
    if expectation == "same label":
        return np.abs(p_new - p_old)
    if expectation == "P(positive) not up":
        return np.maximum(p_new - p_old, 0.0)
    if expectation == "P(positive) not down":
        return np.maximum(p_old - p_new, 0.0)
    if expectation == "confidence not down":
        positive = _predicted(p_old) == 1
        return np.maximum(np.where(positive, p_old - p_new, p_new - p_old), 0.0)
    raise ValueError(f"unknown expectation {expectation!r}")


def _mft_cases(predict_proba: PredictProba, examples: list[dict]) -> pd.DataFrame:
    texts = [example["text"] for example in examples]
    labels = np.array([example["label"] for example in examples], dtype=int)
    p = _positive_proba(predict_proba, texts)
    return pd.DataFrame(
        {
            "test": [example["test"] for example in examples],
            "type": "MFT",
            "original": texts,
            "perturbed": "",
            "label": labels,
            "p_original": p,
            "p_perturbed": np.nan,
            "failed": _predicted(p) != labels,
            "severity": np.where(labels == 1, 1.0 - p, p),
        }
    )


def _perturbation_cases(
    name: str,
    predict_proba: PredictProba,
    texts: list[str],
    labels: np.ndarray,
    p_original: np.ndarray,
    seed: int,
    tolerance: float,
) -> pd.DataFrame:
    test_type, perturb, expectation = PERTURBATIONS[name]
    rng = random.Random(f"{seed}:{name}")  # one generator per test: adding a test changes no other
    perturbed = [perturb(text, rng) for text in texts]
    kept = [i for i, (old, new) in enumerate(zip(texts, perturbed)) if new != old]
    p_old = p_original[kept]
    p_new = _positive_proba(predict_proba, [perturbed[i] for i in kept])
    severity = _severity(expectation, p_old, p_new)
    failed = _predicted(p_new) != _predicted(p_old) if test_type == "INV" else severity > tolerance
    return pd.DataFrame(
        {
            "test": name,
            "type": test_type,
            "original": [texts[i] for i in kept],
            "perturbed": [perturbed[i] for i in kept],
            "label": labels[kept],
            "p_original": p_old,
            "p_perturbed": p_new,
            "failed": np.asarray(failed, dtype=bool),
            "severity": severity,
        }
    )


def _failure_interval(failed: np.ndarray, seed: int) -> Interval:
    if len(failed) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    if len(failed) < 2:
        return Interval(float(failed.mean()), float("nan"), float("nan"))
    return bootstrap_interval(failed.astype(float), seed=seed)


def _summary(cases: pd.DataFrame, names: list[tuple[str, str, str]], seed: int) -> pd.DataFrame:
    rows = []
    for name, test_type, expectation in names:
        failed = cases.loc[cases["test"] == name, "failed"].to_numpy(dtype=bool)
        interval = _failure_interval(failed, seed)
        rows.append(
            {
                "test": name,
                "type": test_type,
                "expectation": expectation,
                "n": len(failed),
                "failures": int(failed.sum()),
                "failure_rate": interval.value,
                "interval": interval,
            }
        )
    return pd.DataFrame(rows)


def _check_inputs(texts: Sequence[str], labels: Sequence[int], tolerance: float, n_mft: int | None) -> np.ndarray:
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels must have the same length, got {len(texts)} and {len(labels)}")
    if len(texts) == 0:
        raise ValueError("run_checklist needs at least one text to perturb")
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("texts must be strings")
    labels = np.asarray(list(labels))
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (negative) or 1 (positive), got {sorted(set(labels.tolist()))}")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must lie in [0, 1), got {tolerance}")
    if n_mft is not None and n_mft < 1:
        raise ValueError(f"n_mft must be at least 1 (or None for all), got {n_mft}")
    return labels.astype(int)


def run_checklist(
    predict_proba: PredictProba,
    texts: Sequence[str],
    labels: Sequence[int],
    seed: int = 0,
    tolerance: float = 0.1,
    n_mft: int | None = None,
) -> ChecklistResult:
    """Run the MFT, INV and DIR tests of this module against a binary sentiment classifier.

    ``predict_proba`` takes a list of texts and returns their probabilities,
    shape ``(n, 2)``, column 1 being P(positive); it is called once for all
    of ``texts``, once for all the MFT sentences, and once per perturbation
    for the texts it changed (not at all if none). The MFT sentences are :func:`mft_examples`
    (``n_mft`` per test, drawn with ``seed``; all without it); each
    perturbation of :data:`PERTURBATIONS` is applied to ``texts`` with its own
    ``random.Random`` seeded by ``seed`` and the test's name, and a text it
    leaves unchanged is not counted (``n`` is the number of texts tested).
    A failure: the predicted label is not the expected one (MFT); it changes
    (INV); P(positive), or the confidence in the predicted class, moves the
    wrong way by more than ``tolerance`` (DIR). ``labels`` are not needed to
    judge the INV and DIR tests; they are kept in the cases, to see whether
    failures pile up on one class. The interval of each failure rate is a
    bootstrap over the cases (``nan`` with fewer than 2 cases).
    Taught in ``course/09_evaluation.ipynb``.
    """
    texts = list(texts)
    labels = _check_inputs(texts, labels, tolerance, n_mft)
    p_original = _positive_proba(predict_proba, texts)
    frames = [_mft_cases(predict_proba, mft_examples(seed, n_mft))]
    frames += [
        _perturbation_cases(name, predict_proba, texts, labels, p_original, seed, tolerance) for name in PERTURBATIONS
    ]
    cases = pd.concat(frames, ignore_index=True)
    names = [
        (name, "MFT", f"label {label} ({'positive' if label else 'negative'})")
        for name, (_, _, label) in MFT_TEMPLATES.items()
    ]
    names += [(name, test_type, expectation) for name, (test_type, _, expectation) in PERTURBATIONS.items()]
    return ChecklistResult(_summary(cases, names, seed), cases)


def worst_failures(result: ChecklistResult, test: str, k: int = 3) -> pd.DataFrame:
    """The ``k`` failed cases of ``test`` whose prediction went furthest the wrong way (highest ``severity`` first).

    Fewer rows when the test failed fewer than ``k`` times.
    Taught in ``course/09_evaluation.ipynb``.
    """
    if test not in set(result.table["test"]):
        raise ValueError(f"no test {test!r}; the tests are {list(result.table['test'])}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    cases = result.cases[(result.cases["test"] == test) & result.cases["failed"]]
    return cases.sort_values("severity", ascending=False, kind="stable").head(k)
