"""Benchmark of lesson 05's warmup: where, in reach of the lesson, does a warmup change a short fine-tuning?

Lesson 05 fine-tunes MiniLM for one epoch on its training reviews, from a head
fitted as a linear probe, and its warmup comparison does not separate from
no warmup. This grid asks whether any nearby regime makes warmup matter: peak
rates from the lesson's useful zone to the one where training collapses, the
linear-probe head and a random head, warmup shares of 0, 0.1 and 0.3 of the
updates, several seeds each, on lesson 05's data and recipe
(:func:`helpers.training.sweeps.train_and_evaluate`, the lesson's ``run``).

Every run is scored on lesson 05's **validation** reviews, the items on which
that lesson makes its choices (it reports no test items). Each warmup share is
compared with no warmup at the same rate and start, seed by seed and review by
review (:func:`helpers.evaluation.uncertainty.paired_seeds`), and all the
comparisons are read together with Holm's correction. ``RESULTS.md`` shows the
table (``benchmarks/readme_tables.py``).

Run from the repository root (about 10 minutes on 2 cores in fp32):

    python benchmarks/warmup.py --out benchmarks/results/warmup.json
"""

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from helpers import setup  # noqa: E402
from helpers.data import rotten_tomatoes, subsample, tokenize_for_classification  # noqa: E402
from helpers.evaluation import holm_verdicts, paired_seeds, seeds_interval  # noqa: E402
from helpers.models import load_classifier, load_tokenizer  # noqa: E402
from helpers.training import fit_head_by_linear_probe, train_and_evaluate, warmup_steps_for  # noqa: E402

# Lesson 05's sizes and recipe (course/05_hyperparameters.ipynb, section 1).
TRAIN_SIZE, VALIDATION_SIZE, MAX_LENGTH, BATCH_SIZE = 256, 200, 64, 16
RATES = (3e-5, 1e-4, 3e-4, 1e-3)  # from the lesson's best rate (recorded: 3e-5) to where it collapses
STARTS = ("linear probe", "random head")
WARMUPS = (0.0, 0.1, 0.3)


def lesson_data(seed: int):
    """Lesson 05's training and validation reviews (tokenized), and its training reviews as text."""
    splits = rotten_tomatoes(seed=seed)
    tokenizer = load_tokenizer("minilm")
    texts = subsample(splits["train"], TRAIN_SIZE, seed=seed)
    train = tokenize_for_classification(texts, tokenizer, max_length=MAX_LENGTH)
    validation = tokenize_for_classification(
        subsample(splits["validation"], VALIDATION_SIZE, seed=seed), tokenizer, max_length=MAX_LENGTH
    )
    return tokenizer, texts, train, validation


def grid(env, seeds: list[int], epochs: int) -> dict:
    tokenizer, texts, train, validation = lesson_data(env.seed)
    start_model, _ = load_classifier("minilm", num_labels=2, device=env.device, seed=env.seed, pooling="mean")
    fit_head_by_linear_probe(
        start_model,
        tokenizer,
        list(texts["text"]),
        list(texts["label"]),
        device=env.device,
        precision=env.precision,
        max_length=MAX_LENGTH,
        seed=env.seed,
    )
    heads = {"linear probe": copy.deepcopy(start_model.classifier.state_dict()), "random head": None}
    updates = epochs * -(-len(train) // BATCH_SIZE)
    runs, scores = [], {}
    for rate in RATES:
        for start in STARTS:
            for warmup in WARMUPS:
                began = time.perf_counter()
                results = [
                    train_and_evaluate(
                        train,
                        validation,
                        tokenizer,
                        lr=rate,
                        seed=seed,
                        num_epochs=epochs,
                        batch_size=BATCH_SIZE,
                        warmup_ratio=warmup,
                        head_state=heads[start],
                        device=env.device,
                        precision=env.precision,
                    )
                    for seed in seeds
                ]
                scores[rate, start, warmup] = np.array([r.final for r in results])
                accuracy = seeds_interval(scores[rate, start, warmup])
                runs.append(
                    {
                        "rate": rate,
                        "start": start,
                        "warmup": warmup,
                        "warmup_updates": warmup_steps_for(warmup, updates),
                        "accuracy": accuracy.as_dict(),
                        "one_class_seeds": sum(r.majority_prediction_share() > 0.95 for r in results),
                        "seconds": round(time.perf_counter() - began, 1),
                    }
                )
                print(f"lr {rate:.0e}, {start}, warmup {warmup}: {accuracy}", flush=True)
    comparisons = []
    for (rate, start, warmup), correct in scores.items():
        if warmup:
            versus = paired_seeds(correct, scores[rate, start, 0.0])
            comparisons.append({"rate": rate, "start": start, "warmup": warmup, **versus.as_dict()})
    adjusted = holm_verdicts([c["verdict"] for c in comparisons], [c["p_value"] for c in comparisons])
    for comparison, verdict in zip(comparisons, adjusted):
        comparison["holm_verdict"] = verdict
    return {
        "setup": {
            "train_reviews": len(train),
            "validation_reviews": len(validation),
            "batch_size": BATCH_SIZE,
            "epochs": epochs,
            "updates": updates,
            "seeds": seeds,
        },
        "runs": runs,
        "comparisons": comparisons,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "warmup.json")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    env = setup()
    if env.fast:
        raise SystemExit("this benchmark records default-mode sizes: unset FTCOURSE_FAST")
    began = time.perf_counter()
    result = grid(env, [env.seed + i for i in range(args.seeds)], args.epochs)
    result |= {
        "measured_on": env.measured_on(),
        "precision": env.precision.name,
        "date": datetime.date.today().isoformat(),
        "seconds": round(time.perf_counter() - began, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"written to {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
