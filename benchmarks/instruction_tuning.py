"""Benchmark of lesson 04: training tokens/s of SmolLM2, the learning rate, the budget, and the notebook in default mode.

Parts (``--parts``, all by default; the results file keeps the parts not re-run):

1. ``speed``: training tokens/s on identical batches of instruction examples
   (batch 4): full fine-tuning, and the notebook's CPU choice (its last
   ``NOTEBOOK_TRAINABLE_LAST_LAYERS`` of 30 blocks, embeddings frozen), with
   logits everywhere and only where a label is learned.
2. ``lr``: the notebook's training (same data, same recipe) at several
   learning rates (a grid that brackets the best one): closed-task accuracy
   with 95% intervals on **validation** items, against the majority answer.
   The rate with the best mean accuracy over the closed tasks is recorded as
   ``chosen_rate``: it is the notebook's ``LEARNING_RATE`` (a test checks).
3. ``budget``: the notebook's training budget against the one it had before
   (600 examples, which took the lesson over its 10-minute fp32 budget) and a
   smaller one, on the same validation items: what the budget the time allows
   costs in accuracy.

The test items the notebook reports decide nothing here: every run is scored
on closed-task items of the validation split (``selection_items``), from
films and articles that neither the training set nor the test set shows.
4. ``notebook``: ``course/04_gpt_instruction_tuning.ipynb`` executed in
   default mode in a fresh kernel: its wall time and the results it saves
   (``course/outputs/04_instruction_tuning/results.json``).

Run from the repository root:

    python benchmarks/instruction_tuning.py --out benchmarks/results/instruction_tuning.json
"""

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.course_times import machine_record, recorded_notebook_run, run_notebook_default  # noqa: E402
from helpers import setup  # noqa: E402
from helpers.data.causal_lm import ScoredLogitsCollator, instruction_collator, tokenize_instructions  # noqa: E402
from helpers.data.instructions import CLOSED_TASKS, closed_labels, instruction_dataset  # noqa: E402
from helpers.evaluation.closed_tasks import closed_task_table, item_scores, majority_answers  # noqa: E402
from helpers.models.generation import answer_instructions  # noqa: E402
from helpers.models.loading import load_causal_lm  # noqa: E402
from helpers.training.causal_lm import train_causal_lm  # noqa: E402
from helpers.training.freezing import freeze_embeddings, optimizer_for, unfreeze_all, unfreeze_last_layers  # noqa: E402
from helpers.training.loops import time_training_steps  # noqa: E402

NOTEBOOK = ROOT / "course" / "04_gpt_instruction_tuning.ipynb"
RESULTS = ROOT / "course" / "outputs" / "04_instruction_tuning" / "results.json"


def tokens_per_second(env, steps: int) -> dict:
    """Training tokens/s of full fine-tuning and of the notebook's CPU choice, with logits everywhere and with
    logits only where a label is learned (``ScoredLogitsCollator``, what ``train_causal_lm`` uses)."""
    base, tokenizer = load_causal_lm("smollm2-135m", device=env.device)
    data = tokenize_instructions(instruction_dataset({"train": steps + 1}, seed=env.seed)["train"], tokenizer)
    collators = {"all logits": instruction_collator(tokenizer), "scored logits": ScoredLogitsCollator(tokenizer)}
    last = lambda m: (unfreeze_last_layers(m, NOTEBOOK_TRAINABLE_LAST_LAYERS), freeze_embeddings(m))  # noqa: E731
    partial = f"last {NOTEBOOK_TRAINABLE_LAST_LAYERS} blocks, embeddings frozen"
    result = {}
    for name, freeze, logits in [
        ("full fine-tuning", unfreeze_all, "all logits"),
        (partial, last, "all logits"),
        (f"{partial}, logits only where learned", last, "scored logits"),
    ]:
        batches = list(DataLoader(data, batch_size=4, collate_fn=collators[logits]))[: steps + 1]
        torch.manual_seed(env.seed)
        model = copy.deepcopy(base)
        freeze(model)
        seconds_per_step = time_training_steps(
            model, batches, optimizer_for(model, lr=1e-5), steps, env.device, env.precision
        )
        tokens = sum(int(batch["attention_mask"].sum()) for batch in batches[1:])  # the first step is not timed
        seconds = seconds_per_step * steps
        result[name] = tokens / seconds
    return result


# The notebook's default-mode sizes (cell ebff004d of course/04) and its CPU choice of trainable blocks (cell
# ec4a90da): change both together (tests/test_benchmarks.py checks they agree).
NOTEBOOK_TRAINABLE_LAST_LAYERS = 10
NOTEBOOK_SIZES = {
    "train": {"sentiment": 296, "topic": 88, "describe": 8, "qa": 8},
    "validation": 8,
    "test": {"sentiment": 150, "topic": 100, "describe": 16, "qa": 16},
}
# The closed-task validation items every run is scored on: as many as the notebook's test items.
SELECTION_SIZES = {"sentiment": 150, "topic": 100, "describe": 0, "qa": 0}


def selection_items(seed: int):
    """The closed-task items of the validation split that the ``lr`` and ``budget`` parts score: never test items."""
    data = instruction_dataset({"train": 0, "validation": SELECTION_SIZES, "test": 0}, seed=seed, max_words=30)
    return data["validation"].filter(lambda row: row["task"] in CLOSED_TASKS)


def chosen_rate(closed: dict, rates: list[float]) -> float:
    """The rate whose runs have the highest mean accuracy over the closed tasks (``closed``: the ``lr`` table)."""
    mean = {rate: sum(closed[f"{task} | lr {rate:g}"]["accuracy"] for task in CLOSED_TASKS) for rate in rates}
    return max(rates, key=lambda rate: mean[rate])


def closed_task_runs(env, runs: dict[str, dict]) -> tuple[dict, dict, dict]:
    """Lesson 04's training once per run, each scored on the same closed-task validation items.

    ``runs`` maps a label to ``{"train": sizes per task, "rate": learning rate, "blocks": trainable last blocks}``;
    the recipe is the notebook's otherwise (batches of 8, one epoch, linear schedule after 10% warmup, length
    grouping, embeddings frozen). Returns the closed-task table (accuracy with 95% intervals, paired against the
    most frequent answer of each task in the whole training pool), the training seconds and the training-set size of each run.
    """
    base, tokenizer = load_causal_lm("smollm2-135m", device=env.device)
    items = selection_items(env.seed)
    labels = closed_labels()
    # The majority baseline, one for every run: the most frequent answer of each task in the whole training pool
    # (a smaller training mix can have another most frequent topic).
    pool = instruction_dataset({"validation": 0, "test": 0}, seed=env.seed, max_words=30)["train"]
    majority = majority_answers(pool["task"], pool["output"], items["task"])
    scores = {"majority": item_scores(items["task"], majority, items["output"], labels)}
    seconds, sizes = {}, {}
    for name, run in runs.items():
        data = instruction_dataset({"train": run["train"], "validation": 0, "test": 0}, seed=env.seed, max_words=30)
        if set(data["train"]["input"]) & set(items["input"]):
            raise RuntimeError(f"{name}: training inputs overlap the validation items")
        train = tokenize_instructions(data["train"], tokenizer)
        torch.manual_seed(env.seed)
        model = copy.deepcopy(base)
        unfreeze_last_layers(model, run["blocks"])
        freeze_embeddings(model)
        with tempfile.TemporaryDirectory() as folder:
            _, seconds[name] = train_causal_lm(
                model,
                tokenizer,
                train,
                env.precision,
                folder,
                learning_rate=run["rate"],
                epochs=1,
                batch_size=8,
                accumulation=1,
                lr_scheduler_type="linear",
                warmup=0.1,
                group_by_length=True,
                seed=env.seed,
                progress=False,
            )
        answers = answer_instructions(model, tokenizer, items, "chat", env.device)
        scores[name] = item_scores(items["task"], answers, items["output"], labels)
        sizes[name] = len(train)
        print(f"{name}: {len(train)} examples trained in {seconds[name]:.0f} s", flush=True)
    table = closed_task_table(scores, reference="majority", tasks=CLOSED_TASKS, seed=env.seed)
    print(table.round(3).to_string())
    closed = {f"{task} | {model}": row.dropna().to_dict() for (task, model), row in table.iterrows()}
    return closed, seconds, sizes


def learning_rates(env, rates: list[float], earlier: dict | None = None) -> dict:
    """The notebook's training at each rate; closed-task validation accuracy with intervals, against the majority
    answer; the chosen rate and whether the grid brackets it (not its smallest or largest rate).

    ``earlier``: a previous ``lr`` result for the same training set and items (``--extend``): its rates are kept,
    only the new ones are trained (each run's interval and paired difference depend on that run alone)."""
    same_setting = (
        earlier is not None
        and earlier.get("scored_on") == "validation"
        and earlier.get("train_examples") == sum(NOTEBOOK_SIZES["train"].values())
        and earlier.get("trainable_last_layers") == NOTEBOOK_TRAINABLE_LAST_LAYERS
    )
    kept = {float(rate): seconds for rate, seconds in earlier["train_seconds"].items()} if same_setting else {}
    new_rates = sorted(set(rates) - set(kept))
    runs = {
        f"lr {rate:g}": {"train": NOTEBOOK_SIZES["train"], "rate": rate, "blocks": NOTEBOOK_TRAINABLE_LAST_LAYERS}
        for rate in new_rates
    }
    closed, seconds, _ = closed_task_runs(env, runs) if runs else ({}, {}, {})
    if kept:
        closed = earlier["closed_tasks"] | closed
    rates = sorted(set(kept) | set(new_rates))
    seconds = {f"{rate:g}": kept[rate] if rate in kept else seconds[f"lr {rate:g}"] for rate in rates}
    chosen = chosen_rate(closed, rates)
    bracketed = rates[0] < chosen < rates[-1]
    print(f"chosen rate {chosen:g} (best mean validation accuracy over the closed tasks)")
    if not bracketed:
        print(f"the best rate is at the edge of the grid {rates}: extend the grid and measure again")
    return {
        "train_examples": sum(NOTEBOOK_SIZES["train"].values()),
        "trainable_last_layers": NOTEBOOK_TRAINABLE_LAST_LAYERS,
        "scored_on": "validation",
        "test_per_task": {t: SELECTION_SIZES[t] for t in CLOSED_TASKS},
        "train_seconds": seconds,
        "closed_tasks": closed,
        "chosen_rate": chosen,
        "bracketed": bracketed,
    }


# The training budgets compared by the ``budget`` part, each at the rate the ``lr`` part chose for the notebook's
# budget, except the notebook's former budget at the rate it had: label -> examples per task, rate, blocks.
FORMER_BUDGET = {"sentiment": 448, "topic": 128, "describe": 12, "qa": 12}
SMALLER_BUDGET = {"sentiment": 160, "topic": 64, "describe": 8, "qa": 8}


def budget_runs(rate: float) -> dict[str, dict]:
    """The ``budget`` part's runs: the former 600-example budget (rate 2e-4), the notebook's, a smaller one."""
    blocks = NOTEBOOK_TRAINABLE_LAST_LAYERS
    size = lambda sizes: sum(sizes.values())  # noqa: E731
    return {
        f"{size(FORMER_BUDGET)} ex, lr 2e-4 (former)": {"train": FORMER_BUDGET, "rate": 2e-4, "blocks": blocks},
        f"{size(NOTEBOOK_SIZES['train'])} ex, lr {rate:g} (notebook)": {
            "train": NOTEBOOK_SIZES["train"],
            "rate": rate,
            "blocks": blocks,
        },
        f"{size(SMALLER_BUDGET)} ex, lr {rate:g}": {"train": SMALLER_BUDGET, "rate": rate, "blocks": blocks},
    }


def budgets(env, rate: float) -> dict:
    """The notebook's training budget against its former one and a smaller one, on the same validation items."""
    runs = budget_runs(rate)
    closed, seconds, sizes = closed_task_runs(env, runs)
    return {
        "runs": runs,
        "scored_on": "validation",
        "train_examples": sizes,
        "train_seconds": seconds,
        "test_per_task": {t: SELECTION_SIZES[t] for t in CLOSED_TASKS},
        "closed_tasks": closed,
    }


PARTS = ("speed", "lr", "budget", "notebook")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per configuration (speed)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-4, 2e-4, 4e-4, 8e-4], help="learning rates (lr)")
    parser.add_argument(
        "--extend",
        action="store_true",
        help="lr part: keep the rates already in --out (same training set and items), train only the new ones",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="measure only these; with --out, the other parts are kept from the existing file",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--reuse-course-times-run",
        action="store_true",
        help="notebook part: take the wall time and results of the last `course_times.py --mode full` "
        "run of the notebook instead of running it again",
    )
    args = parser.parse_args()
    env = setup(seed=42, fast=False)
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    if "notebook" in results and "results" not in results["notebook"]:  # the earlier single-part layout
        results = {}
    # Parts can be re-measured one at a time, on different machines: each records where it ran.
    measured_on = machine_record(env)
    for part in args.parts:
        if part == "speed":
            results[part] = {"tokens_per_second": tokens_per_second(env, args.steps)}
        elif part == "lr":
            results[part] = learning_rates(env, args.rates, results.get("lr") if args.extend else None)
        elif part == "budget":
            if "lr" not in results:
                raise SystemExit("the budget part uses the rate the lr part chose: measure --parts lr first")
            results[part] = budgets(env, results["lr"]["chosen_rate"])
        else:
            results[part] = (
                recorded_notebook_run(env, NOTEBOOK, RESULTS)
                if args.reuse_course_times_run
                else run_notebook_default(NOTEBOOK, RESULTS)
            )
        results[part]["measured_on"] = measured_on
        if args.out:  # after every part, so that a later failure loses nothing
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
    if "notebook" in results:
        notebook = results["notebook"]["results"]
        print(f"notebook 04, default mode, wall time {results['notebook']['seconds'] / 60:.1f} min")
        for key, row in notebook["closed_tasks"].items():
            print(f"{key:<40} accuracy {row['accuracy']:.3f} [{row['low']:.3f}, {row['high']:.3f}]")
        print(f"clear gain (>= 15 points, disjoint intervals): {notebook['closed_tasks_clear_gain']}")


if __name__ == "__main__":
    main()
