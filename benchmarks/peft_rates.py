"""Benchmark: lesson 11's learning rates, chosen for each method on validation items, never on the lesson's test items.

Lesson 11 (``course/11_peft.ipynb``) compares full fine-tuning and LoRA at the
same budget, each method at its own learning rate: LoRA trains few weights that
start from zero and takes a larger rate. Those rates are chosen here, with the
lesson's recipe and training items, on **validation** items the lesson never
reports:

- **MiniLM** (Rotten Tomatoes, from the lesson's linear-probe head, one pass on
  ``MINILM["train_size"]`` reviews): for each method of the lesson, the rate
  with the best mean validation accuracy over ``--seeds``, on
  ``MINILM["validation_size"]`` validation reviews;
- **SmolLM2** (lesson 04's closed instructions, a few updates): the rate
  of full, partial (last 10 blocks) and LoRA (rank 8, attention)
  fine-tuning, by the mean exact match of greedy answers to validation
  instructions. Lesson 04 chose its rate for a longer training: at this
  budget each method gets its own grid, so that no method is compared at a
  rate tuned for another budget.

Each grid must bracket its choice (the best rate is not at an edge); the
record says whether it does, and a test checks that the lesson uses the
chosen rates. Every candidate's validation score over seeds and items is kept
with its interval (:func:`helpers.evaluation.uncertainty.seeds_interval`), and
its paired difference with the chosen rate.

Run from the repository root (about 20 minutes on 2 cores in bf16):

    python benchmarks/peft_rates.py --out benchmarks/results/peft_rates.json
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.course_times import machine_record  # noqa: E402
from helpers import setup  # noqa: E402
from helpers.data import (  # noqa: E402
    closed_labels,
    instruction_dataset,
    rotten_tomatoes,
    stratified_subsample,
    tokenize_for_classification,
    tokenize_instructions,
)
from helpers.evaluation import item_scores, paired_seeds, seeds_interval  # noqa: E402
from helpers.models import answer_instructions, load_causal_lm, load_classifier, predict_logits  # noqa: E402
from helpers.training import (  # noqa: E402
    AdaptationMethod,
    adapt_causal_lm,
    adapt_classifier,
    fit_head_by_linear_probe,
    merge_lora,
    unwrap_peft,
)

LORA_ALPHA = 16  # the lesson's: the same for every rank
# The lesson's MiniLM recipe (section 3): the training reviews, one pass, batches of 16.
MINILM = {"train_size": 1024, "epochs": 1, "batch_size": 16, "validation_size": 600}
MINILM_GRIDS = {
    "complet": (dict(kind="full"), (5e-5, 1e-4, 3e-4)),
    "LoRA r=8 attention": (dict(kind="lora", r=8, alpha=LORA_ALPHA), (1e-3, 3e-3, 1e-2)),
    "LoRA r=8 attention+MLP": (dict(kind="lora", r=8, alpha=LORA_ALPHA, target="attention+mlp"), (1e-3, 3e-3, 1e-2)),
}
# The lesson's SmolLM2 recipe (section 4): lesson 04's closed tasks, chat style, one pass, batches of 8.
SMOLLM = {
    "train": {"sentiment": 40, "topic": 24, "describe": 0, "qa": 0},
    "validation": {"sentiment": 40, "topic": 40, "describe": 0, "qa": 0},
    "batch_size": 8,
    "epochs": 1,
    "style": "chat",
    "max_words": 30,
}
SMOLLM_GRIDS = {
    "complet": (dict(kind="full"), (3e-5, 1e-4, 3e-4, 1e-3)),
    "partiel (10 derniers blocs)": (dict(kind="partial", last_layers=10), (6e-5, 2e-4, 6e-4, 2e-3)),
    "LoRA r=8 attention": (dict(kind="lora", r=8, alpha=LORA_ALPHA), (3e-4, 1e-3, 3e-3, 1e-2)),
}
PARTS = ("minilm", "smollm")


def chosen_rate(candidates: dict) -> str:
    """The candidate rate (its name) with the best mean validation score over seeds (never a test figure)."""
    return max(candidates, key=lambda name: float(np.mean(candidates[name]["validation_score_per_seed"])))


def brackets(rates: list[float], chosen: float) -> bool:
    """Whether the grid has a rate on each side of the chosen one (the optimum is not at an edge)."""
    return min(rates) < chosen < max(rates)


def grid_record(scores: dict[float, list[np.ndarray]], seconds: dict[float, list[float]], seed: int) -> dict:
    """The candidates of one method, each with its validation score over seeds and items, and the choice."""
    candidates = {
        f"{rate:g}": {
            "learning_rate": rate,
            "validation_score_per_seed": [float(s.mean()) for s in runs],
            "validation_score": seeds_interval(runs, seed=seed).as_dict(),
            "seconds": seconds[rate],
        }
        for rate, runs in scores.items()
    }
    chosen = candidates[chosen_rate(candidates)]["learning_rate"]
    for candidate in candidates.values():
        rate = candidate["learning_rate"]
        candidate["minus_chosen"] = (
            None if rate == chosen else paired_seeds(scores[rate], scores[chosen], seed=seed).as_dict()
        )
    return {"candidates": candidates, "chosen": chosen, "bracketed": brackets(list(scores), chosen)}


def grid_runs(label: str, settings: dict, rates, seeds, train_and_score) -> tuple[dict, dict]:
    """Each rate of a grid trained with each seed: per-item validation scores and training seconds, by rate."""
    scores, seconds = {}, {}
    for rate in rates:
        method = AdaptationMethod(label, learning_rate=rate, **settings)
        for seed in seeds:
            correct, run_seconds = train_and_score(method, seed)
            scores.setdefault(rate, []).append(correct)
            seconds.setdefault(rate, []).append(run_seconds)
            print(f"{label}, lr {rate:g}, seed {seed}: validation {correct.mean():.3f}", flush=True)
    return scores, seconds


def minilm_rates(env, seeds) -> dict:
    """Every MiniLM candidate of ``MINILM_GRIDS``, trained from the lesson's start and scored on validation reviews."""
    reviews = rotten_tomatoes(seed=env.seed)
    train = stratified_subsample(reviews["train"], MINILM["train_size"], seed=env.seed)
    validation = stratified_subsample(reviews["validation"], MINILM["validation_size"], seed=env.seed)
    start, tokenizer = load_classifier("minilm", num_labels=2, device=env.device, seed=env.seed, pooling="mean")
    fit_head_by_linear_probe(start, tokenizer, train["text"], train["label"], env.device, env.precision, seed=env.seed)
    train_tokens = tokenize_for_classification(train, tokenizer)
    labels = np.asarray(validation["label"])

    def correct(model) -> np.ndarray:
        logits = predict_logits(unwrap_peft(model), tokenizer, validation["text"], env.device, progress=False)
        return (logits.argmax(axis=1) == labels).astype(float)

    def train_and_score(method: AdaptationMethod, seed: int) -> tuple[np.ndarray, float]:
        run = adapt_classifier(
            start,
            tokenizer,
            method,
            train_tokens,
            env.precision,
            ROOT / "outputs" / "peft_rates",
            epochs=MINILM["epochs"],
            batch_size=MINILM["batch_size"],
            seed=seed,
            progress=False,
        )
        return correct(run.model), run.seconds

    methods = {
        name: grid_record(*grid_runs(f"MiniLM {name}", settings, rates, seeds, train_and_score), env.seed)
        for name, (settings, rates) in MINILM_GRIDS.items()
    }
    return {
        **MINILM,
        "seeds": list(seeds),
        "start_validation_accuracy": float(correct(start).mean()),
        "methods": methods,
    }


def smollm_rates(env, seeds) -> dict:
    """Every SmolLM2 candidate of ``SMOLLM_GRIDS``, trained on the lesson's instructions, scored on validation ones."""
    instructions = instruction_dataset(
        {"train": SMOLLM["train"], "validation": SMOLLM["validation"], "test": 0},
        seed=env.seed,
        max_words=SMOLLM["max_words"],
    )
    model, tokenizer = load_causal_lm("smollm2-135m", device=env.device)
    train = tokenize_instructions(instructions["train"], tokenizer, SMOLLM["style"])
    validation = instructions["validation"]

    def correct(adapted) -> np.ndarray:
        answers = answer_instructions(
            adapted, tokenizer, validation, SMOLLM["style"], env.device, batch_size=32, progress=False
        )
        return item_scores(validation["task"], answers, validation["output"], closed_labels())["exact_match"].to_numpy()

    def train_and_score(method: AdaptationMethod, seed: int) -> tuple[np.ndarray, float]:
        run = adapt_causal_lm(
            model,
            tokenizer,
            method,
            train,
            env.precision,
            ROOT / "outputs" / "peft_rates",
            epochs=SMOLLM["epochs"],
            batch_size=SMOLLM["batch_size"],
            seed=seed,
            progress=False,
        )
        return correct(merge_lora(run.model) if method.kind == "lora" else run.model), run.seconds

    methods = {
        name: grid_record(*grid_runs(f"SmolLM2 {name}", settings, rates, seeds, train_and_score), env.seed)
        for name, (settings, rates) in SMOLLM_GRIDS.items()
    }
    return {
        **SMOLLM,
        "seeds": list(seeds),
        "start_validation_exact_match": float(correct(model).mean()),
        "methods": methods,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="training seeds of every candidate")
    parser.add_argument("--out", type=Path, required=True, help="write the results as JSON here")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="measure only these; the other parts are kept from the existing file",
    )
    args = parser.parse_args()
    env = setup(seed=42, fast=False)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["chosen_on"] = "validation"
    seconds = results.get("part_seconds", {})
    for part, measure in (("minilm", minilm_rates), ("smollm", smollm_rates)):
        if part in args.parts:
            start = time.perf_counter()
            results[part] = measure(env, args.seeds)
            seconds[part] = time.perf_counter() - start
    missing = [part for part in PARTS if part not in results]
    if missing:
        sys.exit(f"no {', '.join(missing)} part in {args.out}: measure it with --parts {' '.join(missing)}")
    results["part_seconds"] = seconds  # each part's own time: parts may be measured in different runs
    results.pop("seconds", None)
    results["measured_on"] = {"date": datetime.date.today().isoformat(), **machine_record(env)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    for model in ("minilm", "smollm"):
        for name, method in results[model]["methods"].items():
            print(f"{model} {name}: lr {method['chosen']:g} (bracketed: {method['bracketed']})")
    print(f"{sum(seconds[part] for part in args.parts) / 60:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()
