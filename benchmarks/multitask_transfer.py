"""Benchmark of lesson 08 at larger sizes: a data-poor task trained next to a data-rich one, alone or together.

Lesson 08 trains its three tasks (sentiment, topic, subjectivity) alone and
together at the same budget, over seeds, and at its CPU sizes no joint-vs-alone
difference separates from the noise. This benchmark runs the same experiment
(:func:`helpers.training.multitask.alone_and_together`, the lesson's recipe: the
same linear-probe heads, learning rate, batches, warmup and decay, one pass at
the proportional rule) with the sizes changed so that one task is **poor in
data** next to a **data-rich** one (``SIZES``: a few topic paragraphs beside
many sentiment reviews), about three times the lesson's training time:

- **alone**: each task on exactly the updates of its own that the joint model
  gives it under the proportional rule (``T = 1``), as in the lesson;
- **together, T = 1** and **together, T = inf** (uniform), same total updates.

Every model is scored on the same test items of each task (``--test-size``
per task); each comparison (alone minus start, together minus alone, uniform
minus proportional) is paired over seeds and items
(:func:`helpers.evaluation.uncertainty.paired_seeds`), and all of them are
read together with Holm's correction. ``RESULTS.md`` shows the table
(``benchmarks/readme_tables.py``). Nothing is chosen here: it measures an
effect, as the lesson does.

Run from the repository root (about 7 minutes on 2 cores in bf16):

    python benchmarks/multitask_transfer.py --out benchmarks/results/multitask_transfer.json
"""

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from helpers import setup  # noqa: E402
from helpers.data import review_tasks, stratified_subsample, tokenize_for_classification, wiki_topics  # noqa: E402
from helpers.evaluation import holm_verdicts, paired_seeds, seeds_interval  # noqa: E402
from helpers.models import load_tokenizer  # noqa: E402
from helpers.training import (  # noqa: E402
    alone_and_together,
    build_multitask_model,
    fit_heads_by_linear_probe,
    predict_task,
    task_counts,
)

# Lesson 08's recipe (course/08_multitask.ipynb, sections 1, 3 and 5).
MAX_LENGTH, BATCH_SIZE, LEARNING_RATE = 64, 16, 1e-4
# The lesson's sizes are sentiment 384, topic 192, subjectivity 96: here the topic is the data-poor task.
SIZES = {"sentiment": 1536, "topic": 96, "subjectivity": 384}
CONFIGS = {"alone": None, "together, T = 1": 1.0, "together, T = inf": math.inf}
COMPARISONS = (
    ("alone minus start", "alone", "start"),
    ("together (T = 1) minus alone", "together, T = 1", "alone"),
    ("uniform (T = inf) minus proportional (T = 1)", "together, T = inf", "together, T = 1"),
)


def lesson_tasks(seed: int, sizes: dict[str, int], test_size: int):
    """Lesson 08's three tasks: class names, tokenized training and test sets, and the raw training texts."""
    reviews = review_tasks(seed=seed)
    data = {"sentiment": reviews["sentiment"], "topic": wiki_topics(seed=seed), "subjectivity": reviews["subjectivity"]}
    tasks = {task: data[task]["train"].features["label"].names for task in sizes}
    tokenizer = load_tokenizer("minilm")
    train_raw = {task: stratified_subsample(data[task]["train"], n, seed=seed) for task, n in sizes.items()}
    test_raw = {task: stratified_subsample(data[task]["test"], test_size, seed=seed) for task in sizes}
    train = {task: tokenize_for_classification(d, tokenizer, MAX_LENGTH) for task, d in train_raw.items()}
    test = {task: tokenize_for_classification(d, tokenizer, MAX_LENGTH) for task, d in test_raw.items()}
    return tasks, tokenizer, train_raw, train, test


def transfer_runs(env, sizes: dict[str, int], test_size: int, seeds: list[int]) -> dict:
    """Each task alone and the three together (T = 1 and uniform), per seed: 0/1 correctness on each test item."""
    tasks, tokenizer, train_raw, train_sets, test = lesson_tasks(env.seed, sizes, test_size)
    start_model, _ = build_multitask_model(tasks, seed=env.seed, device=env.device)
    heads = fit_heads_by_linear_probe(
        start_model,
        tokenizer,
        train_raw,
        device=env.device,
        precision=env.precision,
        max_length=MAX_LENGTH,
        seed=env.seed,
    )
    correct = {"start": {}}
    for task in tasks:
        logits = predict_task(start_model, test[task], tokenizer, task, env.device, env.precision)
        correct["start"][task] = (logits.argmax(-1) == np.asarray(test[task]["labels"])).astype(float)
    num_steps = -(-sum(sizes.values()) // BATCH_SIZE)  # one pass over all the training examples at T = 1
    counts = task_counts(sizes, num_steps, 1.0)
    correct.update({config: {task: [] for task in tasks} for config in CONFIGS})
    for seed in seeds:
        by_config, _, _ = alone_and_together(
            tasks,
            train_sets,
            test,
            tokenizer,
            sizes,
            num_steps,
            CONFIGS,
            seed,
            lr=LEARNING_RATE,
            batch_size=BATCH_SIZE,
            head_states=heads,
            device=env.device,
            precision=env.precision,
        )
        for config in CONFIGS:
            for task in tasks:
                correct[config][task].append(by_config[config][task])
        print(f"seed {seed} done", flush=True)
    return {"tasks": tasks, "counts": counts, "num_steps": num_steps, "correct": correct}


def summarize(runs: dict, seeds: list[int]) -> dict:
    """Accuracy of each configuration per task, and the paired comparisons, read together with Holm."""
    correct = runs["correct"]
    accuracy = {
        task: {
            "start": float(correct["start"][task].mean()),
            **{config: seeds_interval(np.array(correct[config][task])).as_dict() for config in CONFIGS},
        }
        for task in runs["tasks"]
    }
    comparisons = []
    for name, first, second in COMPARISONS:
        for task in runs["tasks"]:
            other = correct[second][task]
            other = np.tile(other, (len(seeds), 1)) if second == "start" else np.array(other)
            comparison = paired_seeds(np.array(correct[first][task]), other)
            comparisons.append({"comparison": name, "task": task, **comparison.as_dict()})
    adjusted = holm_verdicts([c["verdict"] for c in comparisons], [c["p_value"] for c in comparisons])
    for comparison, verdict in zip(comparisons, adjusted):
        comparison["holm_verdict"] = verdict
    return {"accuracy": accuracy, "comparisons": comparisons}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-size", type=int, default=400, help="test items per task (the lesson scores 200)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    env = setup(seed=42, fast=False)
    seeds = [env.seed, env.seed + 1, env.seed + 2]  # the lesson's seeds
    start = time.perf_counter()
    runs = transfer_runs(env, SIZES, args.test_size, seeds)
    results = {
        "setup": {
            "sizes": SIZES,
            "updates": runs["num_steps"],
            "updates_per_task_at_t1": runs["counts"],
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "max_length": MAX_LENGTH,
            "test_items_per_task": {task: len(c) for task, c in runs["correct"]["start"].items()},
            "seeds": seeds,
        },
        **summarize(runs, seeds),
        "seconds": time.perf_counter() - start,
        "date": datetime.date.today().isoformat(),
        "measured_on": env.measured_on(),
        "versions": env.versions,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    for comparison in results["comparisons"]:
        d = comparison["difference"]
        print(
            f"{comparison['comparison']}, {comparison['task']}: {100 * d['value']:+.1f} points "
            f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] {comparison['verdict']} (Holm: "
            f"{comparison['holm_verdict']})"
        )
    print(f"{results['seconds']:.0f} s on {results['measured_on']}")


if __name__ == "__main__":
    main()
