"""Classification metrics and the baselines every fine-tuning result is compared with.

Classification metrics come from scikit-learn (one implementation, well
tested); the baselines are scikit-learn pipelines. Taught in
``course/00_introduction.ipynb`` and ``course/03_bert_classification.ipynb``.
Exact match and token F1 of generated text are short and written here (the
SQuAD definitions); ROUGE-L comes from ``rouge-score``, Google's reference
implementation, which runs offline (the ``evaluate`` library downloads its
metric scripts from the Hub at run time, which fails offline).
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.pipeline import Pipeline, make_pipeline

__all__ = [
    "classification_metrics",
    "fit_majority_baseline",
    "fit_tfidf_logreg",
    "normalize_answer",
    "exact_match",
    "token_f1",
    "rouge_l",
    "label_in_answer",
    "named_label",
    "instruction_scores",
    "text_metrics",
    "trainer_classification_metrics",
    "highest_loss_examples",
]


def classification_metrics(
    labels: Sequence[int], predictions: Sequence[int], average: str | None = None
) -> dict[str, float]:
    """Accuracy, precision, recall and F1, then macro-F1 and balanced accuracy.

    ``average`` (for precision, recall and F1) defaults to ``"binary"`` for
    two classes, the scores of class 1, and ``"macro"`` otherwise (every
    class counts the same, whatever its size). The scores of class 1 flatter
    a model that always answers 1 when 1 is the majority: ``macro_f1`` and
    ``balanced_accuracy`` (the mean recall over the classes) weigh every class
    the same, whatever it is and however many items it has, so that the
    majority baseline gets a macro-F1 below its accuracy and a balanced
    accuracy of exactly 1 / number of classes. Taught in
    ``course/00_introduction.ipynb`` and ``course/03_bert_classification.ipynb``.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in shape: {labels.shape} vs {predictions.shape}")
    if average is None:
        average = "binary" if set(np.union1d(labels, predictions).tolist()) <= {0, 1} else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average=average, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        # the mean recall over the classes present (sklearn's balanced_accuracy_score, without its warning when a
        # prediction names a class absent from the labels)
        "balanced_accuracy": float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)])),
    }


def fit_majority_baseline(texts: Sequence[str], labels: Sequence[int]) -> DummyClassifier:
    """Always predicts the most frequent training label: the score to beat at the very least.

    Same interface as :func:`fit_tfidf_logreg`: ``.predict(texts)``.
    """
    return DummyClassifier(strategy="most_frequent").fit(list(texts), list(labels))


def fit_tfidf_logreg(texts: Sequence[str], labels: Sequence[int], seed: int = 42) -> Pipeline:
    """TF-IDF on word 1-2 grams + logistic regression: the classic strong, cheap baseline."""
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0, random_state=seed),
    )
    return pipeline.fit(list(texts), list(labels))


# --- Generated text (taught in course/04_gpt_instruction_tuning.ipynb) ------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, spaces collapsed (the SQuAD normalisation)."""
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text.lower())
    return " ".join(word for word in text.split() if word not in {"a", "an", "the"})


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the normalised words the two texts share (a word counts as often as it appears in both)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


# ROUGE-L as rouge-score computes it by default, stemming off: lower case, every run of
# characters other than [a-z0-9] is a word boundary (no article removal, unlike
# normalize_answer). Without a stemmer, "killed" and "kill" are different words, as in the worked
# example of the ROUGE paper (Lin, 2004) and in the defaults of RougeScorer and of Hugging Face's
# `evaluate` "rouge"; with use_stemmer=True (Porter, English only) ROUGE-L would credit a
# generated answer for the right word stem in the wrong form.
@functools.cache
def _rouge_l_scorer():
    from rouge_score.rouge_scorer import RougeScorer  # here: nltk's import is slow, and few callers need it

    return RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of ``rouge-score`` (no stemming): the longest common subsequence of words, as an F1.

    Order matters and gaps are allowed: "police kill the gunman" against the
    reference "police killed the gunman" shares "police the gunman", 3 words
    of 4, so precision = recall = F = 0.75. Empty texts score 0.
    """
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def label_in_answer(prediction: str, reference: str, labels: Sequence[str]) -> float:
    """1.0 if the reference is the only one of ``labels`` that the answer mentions (a lenient accuracy).

    "The review is positive." counts as ``positive``; an answer that names two
    labels, or none, does not.
    """
    answer = f" {normalize_answer(prediction)} "
    mentioned = [label for label in labels if f" {normalize_answer(label)} " in answer]
    return float(mentioned == [reference])


def named_label(answer: str, labels: Sequence[str]) -> str:
    """The one label of ``labels`` that ``answer`` names, ``""`` when it names none or several.

    The reading of :func:`label_in_answer`, as a value: two answers "name the
    same label" when this gives the same string. Used by
    ``course/09_evaluation.ipynb`` (does a reworded instruction change the
    model's mind?) and ``course/10_deployment.ipynb`` (does a smaller variant
    of the model answer like the original?).
    """
    named = [label for label in labels if label_in_answer(answer, label, labels)]
    return named[0] if named else ""


def instruction_scores(
    tasks: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str],
    closed_labels: dict[str, Sequence[str]],
) -> pd.DataFrame:
    """Scores of generated answers per task (one row each, plus ``all``).

    Columns: ``n``, ``exact_match``, ``token_f1``, ``rouge_l`` for every task, and
    ``label_in_answer`` (see :func:`label_in_answer`) for the tasks of
    ``closed_labels`` (e.g. ``{"sentiment": ["negative", "positive"]}``).
    """
    if not len(tasks) == len(predictions) == len(references):
        raise ValueError(f"got {len(tasks)} tasks, {len(predictions)} predictions, {len(references)} references")
    rows = {}
    for task in dict.fromkeys(tasks):
        pairs = [(p, r) for t, p, r in zip(tasks, predictions, references) if t == task]
        row = {"n": len(pairs), **text_metrics(*zip(*pairs))}
        if task in closed_labels:
            row["label_in_answer"] = float(np.mean([label_in_answer(p, r, closed_labels[task]) for p, r in pairs]))
        rows[task] = row
    rows["all"] = {"n": len(tasks), **text_metrics(predictions, references)}
    return pd.DataFrame(rows).T


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match, token F1 and ROUGE-L of generated answers against references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no answers to score")
    pairs = list(zip(predictions, references))
    return {
        "exact_match": float(np.mean([exact_match(p, r) for p, r in pairs])),
        "token_f1": float(np.mean([token_f1(p, r) for p, r in pairs])),
        "rouge_l": float(np.mean([rouge_l(p, r) for p, r in pairs])),
    }


# --- Reading a classifier's results (taught in course/03_bert_classification.ipynb) --------------------------


def trainer_classification_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for ``transformers.Trainer``: (logits, labels) -> :func:`classification_metrics`."""
    logits, labels = eval_prediction
    return classification_metrics(labels, np.asarray(logits).argmax(-1))


def highest_loss_examples(
    texts: Sequence[str], labels: Sequence[int], logits: np.ndarray, label_names: Sequence[str], k: int = 10
) -> pd.DataFrame:
    """The ``k`` examples the model gets most confidently wrong (highest cross-entropy), worst first.

    Columns: ``text``, ``label``, ``predicted``, ``p(label)`` (the probability the
    model gave to the true label) and ``loss``. Mislabelled data and real
    ambiguities tend to show up here.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.shape != (len(texts), len(label_names)) or labels.shape != (len(texts),):
        raise ValueError(
            f"expected logits of shape ({len(texts)}, {len(label_names)}) and {len(texts)} labels, "
            f"got {logits.shape} and {labels.shape}"
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses = -log_probs[np.arange(len(labels)), labels]
    worst = np.argsort(-losses, kind="stable")[:k]
    return pd.DataFrame(
        {
            "text": [texts[i] for i in worst],
            "label": [label_names[labels[i]] for i in worst],
            "predicted": [label_names[logits[i].argmax()] for i in worst],
            "p(label)": np.exp(-losses[worst]),
            "loss": losses[worst],
        }
    )
