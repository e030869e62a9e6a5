"""Benchmark of lesson 03: MiniLM vs TF-IDF, the explicit loop vs Trainer, padding strategies.

Prints one table (and writes it as JSON with --out). Seven measurements:

1. Test accuracy on the film-split Rotten Tomatoes test set of TF-IDF + logistic
   regression and of MiniLM fine-tuned (helpers' loop, length-grouped batches,
   lr 1e-4, batch 32), after each epoch, on ``--train-size`` examples.
2. Training examples/s of ``helpers.training.loops.train_loop`` and of ``Trainer`` on
   identical batches (same examples, same order, same collator, no evaluation).
3. Seconds per training step with ``padding="max_length", max_length=512`` (the
   source chapter), dynamic padding and length-grouped batches, with the padding
   share of each over the snippets timed; and the padding share of length-grouped
   batches over the whole training split, as lesson 02 measures it (grouping
   sorts mega-batches of up to 50 batches, so a small pool leaves more padding).
4. fp32 against bf16, where this machine trains in bf16 natively (a CPU with
   AVX512-BF16/AMX, or a GPU with bf16): the notebook's ``Trainer`` recipe on its
   default budget, same seed and data, trained once in each precision; test
   accuracy with 95% bootstrap intervals, a paired bootstrap of the difference,
   and examples/s. On a machine without native bf16 this part records why it
   was skipped (emulated bf16 would take hours).
5. ``head_start``: the notebook's default recipe (``RECIPE``: the whole
   training split, mean-pooling head, ``Trainer``, length-grouped batches)
   started from a random head and from a head fitted first as a linear probe
   on the frozen encoder (LP-FT), with the same ``--seeds``: validation
   accuracy after each epoch, test accuracy of the final model per seed, an
   interval over seeds and test items together and the paired difference
   (``helpers.evaluation.uncertainty.seeds_interval`` / ``paired_seeds``).
   The notebook's head start is the one with the better mean validation
   accuracy (``chosen_head_start``); the test figures are reported, never used.
6. ``recipe``: the notebook's recipe (linear-probe head) at the budgets of
   ``CANDIDATE_RECIPES`` (one epoch at lr 5e-5, 1e-4, 2e-4 and 4e-4, so that
   the rate grid brackets its best value; two epochs at 1e-4, as the notebook did
   before), with ``--recipe-seeds``: accuracy of the final model on the whole
   validation split (per item, per seed), on which the notebook's recipe is
   chosen (``chosen_recipe``: best mean validation accuracy), then test
   accuracy over seeds and items, training time, and the paired differences
   against TF-IDF and against the chosen recipe, reported only.
7. ``notebook``: ``course/03_bert_classification.ipynb`` executed in default
   mode in a fresh kernel: its wall time and the figures it saves
   (``course/outputs/03_minilm/results.json``): the accuracy the notebook
   reaches inside its time budget, against TF-IDF with a paired interval.

Run from the repository root (parts 1-4: about 25 minutes on 2 CPU cores; ``head_start``: two trainings of the
notebook's recipe per seed; ``notebook``: the notebook's time):

    python benchmarks/bert_classification.py --out benchmarks/results/bert_classification.json
"""

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.course_times import machine_record, recorded_notebook_run, run_notebook_default  # noqa: E402
from helpers import setup  # noqa: E402
from helpers.data.batching import make_loader, padding_share, tokenize_for_classification  # noqa: E402
from helpers.data.loaders import rotten_tomatoes, subsample  # noqa: E402
from helpers.device import resolve_precision, supported_precisions  # noqa: E402
from helpers.evaluation.metrics import classification_metrics, fit_tfidf_logreg  # noqa: E402
from helpers.evaluation.uncertainty import (  # noqa: E402
    bootstrap_interval,
    paired_bootstrap,
    paired_seeds,
    seeds_interval,
)
from helpers.models.loading import load_classifier  # noqa: E402
from helpers.training.freezing import optimizer_for  # noqa: E402
from helpers.training.loops import evaluate, time_training_steps, train_loop  # noqa: E402
from helpers.training.probing import fit_head_by_linear_probe  # noqa: E402

PARTS = ("accuracy", "loop_vs_trainer", "padding", "precision", "head_start", "recipe", "notebook")
REQUIRED_PARTS = PARTS[:4]  # what the README table and the summary below always read
NOTEBOOK = ROOT / "course" / "03_bert_classification.ipynb"
NOTEBOOK_RESULTS = ROOT / "course" / "outputs" / "03_minilm" / "results.json"
# The notebook's default recipe (course/03, cells 18a15d9d, 9e0b6c41 and 8a13ddb2): change both together.
RECIPE = {
    "train_size": None,
    "pooling": "mean",
    "learning_rate": 1e-4,
    "batch_size": 32,
    "epochs": 1,
    "max_length": 128,
    "probe_size": 2000,
}
# The budgets the notebook's recipe is chosen among, on validation items (``recipe`` part): one epoch at four rates
# (the grid brackets the best one) and the two epochs the notebook used before. All from the linear-probe head.
CANDIDATE_RECIPES = {
    "1 epoch, lr 5e-5": {"epochs": 1, "learning_rate": 5e-5},
    "1 epoch, lr 1e-4": {"epochs": 1, "learning_rate": 1e-4},
    "1 epoch, lr 2e-4": {"epochs": 1, "learning_rate": 2e-4},
    "1 epoch, lr 4e-4": {"epochs": 1, "learning_rate": 4e-4},
    "2 epochs, lr 1e-4": {"epochs": 2, "learning_rate": 1e-4},
}
HEAD_STARTS = ("random", "linear probe")
PADDINGS = ("max_length", "dynamic", "length_grouped")


def tfidf_test_correct(env, splits) -> np.ndarray:
    """1.0 where TF-IDF + logistic regression, fitted on the whole training split, gets a test item right."""
    tfidf = fit_tfidf_logreg(list(splits["train"]["text"]), list(splits["train"]["label"]), seed=env.seed)
    return (tfidf.predict(list(splits["test"]["text"])) == np.asarray(splits["test"]["label"])).astype(float)


def accuracy_run(env, splits, train_size, epochs) -> dict:
    tfidf_correct = tfidf_test_correct(env, splits)
    model, tokenizer = load_classifier("minilm", num_labels=2, device=env.device, seed=env.seed)
    train = tokenize_for_classification(subsample(splits["train"], train_size, seed=env.seed), tokenizer)
    test = tokenize_for_classification(splits["test"], tokenizer)
    start = time.perf_counter()
    history = train_loop(
        model,
        make_loader(train, tokenizer, 32, padding="length_grouped", seed=env.seed),
        optimizer_for(model, lr=1e-4, weight_decay=0.01),
        num_epochs=epochs,
        device=env.device,
        precision=env.precision,
        eval_loader=make_loader(test, tokenizer, 64, shuffle=False),
        compute_metrics=classification_metrics,
    )
    seconds = time.perf_counter() - start
    return {
        "train_examples": len(train),
        "tfidf_test_accuracy": float(tfidf_correct.mean()),
        "minilm_test_accuracy_per_epoch": [m["accuracy"] for m in history["eval_metrics"]],
        "minilm_train_seconds_with_test_evals": seconds,
    }


def loop_vs_trainer(env, splits, size, batch_size=32) -> dict:
    """Examples/s of the explicit loop and of Trainer on the same batches (sequential order, dynamic padding)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    base, tokenizer = load_classifier("minilm", num_labels=2, device=env.device, seed=env.seed)
    data = tokenize_for_classification(subsample(splits["train"], size, seed=env.seed), tokenizer)
    warm = copy.deepcopy(base)  # one untimed pass first: allocator and caches warm for both runs
    loader = make_loader(data, tokenizer, batch_size, padding="dynamic", shuffle=False)
    time_training_steps(warm, loader, optimizer_for(warm, lr=1e-4), 2, env.device, env.precision)
    model = copy.deepcopy(base)
    start = time.perf_counter()
    train_loop(model, loader, optimizer_for(model, lr=1e-4), device=env.device, precision=env.precision, progress=False)
    loop_rate = size / (time.perf_counter() - start)
    model = copy.deepcopy(base)
    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(
            output_dir=folder,
            per_device_train_batch_size=batch_size,
            learning_rate=1e-4,
            num_train_epochs=1,
            warmup_steps=0.1,
            weight_decay=0.01,
            train_sampling_strategy="sequential",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
            seed=env.seed,
            **env.precision.trainer_kwargs(),
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
        start = time.perf_counter()
        trainer.train()
        trainer_rate = size / (time.perf_counter() - start)
    return {
        "examples": size,
        "loop_examples_per_s": loop_rate,
        "trainer_examples_per_s": trainer_rate,
        "loop_over_trainer": loop_rate / trainer_rate,
    }


def padding_speed(env, splits, steps, batch_size=32) -> dict:
    base, tokenizer = load_classifier("minilm", num_labels=2, device=env.device, seed=env.seed)
    data = tokenize_for_classification(
        subsample(splits["train"], batch_size * (steps + 1) * 4, seed=env.seed), tokenizer, max_length=512
    )
    result = {}
    for padding in PADDINGS:
        loader = make_loader(data, tokenizer, batch_size, padding=padding, max_length=512, seed=env.seed)
        model = copy.deepcopy(base)
        seconds = time_training_steps(model, loader, optimizer_for(model, lr=1e-5), steps, env.device, env.precision)
        result[padding] = {"seconds_per_step": seconds, "padding_share": padding_share(loader)}
    for padding in ("dynamic", "length_grouped"):
        result[padding]["speedup_over_max_length"] = (
            result["max_length"]["seconds_per_step"] / result[padding]["seconds_per_step"]
        )
    # LengthGroupedSampler sorts by length inside mega-batches of min(50, n / (4 * batch_size)) batches: the share it
    # leaves depends on the pool, so it is also measured over the whole training split (no training, just batching).
    whole = tokenize_for_classification(splits["train"], tokenizer, max_length=512)
    result["pool"] = {
        "timed_examples": len(data),
        "whole_train_examples": len(whole),
        "length_grouped_padding_share_whole_train": padding_share(
            make_loader(whole, tokenizer, batch_size, padding="length_grouped", max_length=512, seed=env.seed)
        ),
    }
    return result


def trainer_run(
    env,
    splits,
    precision,
    seed,
    train_size,
    epochs,
    pooling="cls",
    probe=False,
    learning_rate=1e-4,
    batch_size=32,
    max_length=128,
    validation=False,
    probe_size=None,
) -> dict:
    """Lesson 03's ``Trainer`` recipe once, from ``load_classifier(seed=seed)``: 0/1 correctness of the final model on
    each test item, wall time (the linear probe included, with ``probe``, fitted on ``probe_size`` training examples,
    all with None) and, with ``validation``, the validation accuracy after each epoch and the final model's 0/1
    correctness on each validation item (whole validation split)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from helpers.evaluation.metrics import trainer_classification_metrics

    model, tokenizer = load_classifier("minilm", num_labels=2, device=env.device, seed=seed, pooling=pooling)
    texts = subsample(splits["train"], train_size, seed=env.seed)
    train = tokenize_for_classification(texts, tokenizer, max_length=max_length)
    test = tokenize_for_classification(splits["test"], tokenizer, max_length=max_length)
    evaluation = {}
    if validation:
        validation_data = tokenize_for_classification(splits["validation"], tokenizer, max_length=max_length)
        evaluation = {"eval_dataset": validation_data, "compute_metrics": trainer_classification_metrics}
    start = time.perf_counter()
    if probe:
        probe_texts = subsample(texts, probe_size, seed=env.seed)  # the notebook's probe_budget
        fit_head_by_linear_probe(
            model,
            tokenizer,
            list(probe_texts["text"]),
            list(probe_texts["label"]),
            env.device,
            precision,
            max_length=max_length,
            seed=seed,
        )
    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(
            output_dir=folder,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=64,
            num_train_epochs=epochs,
            warmup_steps=0.1,
            weight_decay=0.01,
            max_grad_norm=1.0,
            lr_scheduler_type="linear",
            train_sampling_strategy="group_by_length",
            eval_strategy="epoch" if validation else "no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
            seed=seed,
            **precision.trainer_kwargs(),
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer), **evaluation
        )
        trainer.train()
        seconds = time.perf_counter() - start
    result = evaluate(model, make_loader(test, tokenizer, 64, shuffle=False), env.device, precision)
    validation_correct = None
    if validation:
        scored = evaluate(model, make_loader(validation_data, tokenizer, 64, shuffle=False), env.device, precision)
        validation_correct = (scored["logits"].argmax(-1) == scored["labels"]).astype(float)
    return {
        "correct": (result["logits"].argmax(-1) == result["labels"]).astype(float),
        "validation_correct": validation_correct,
        "seconds": seconds,
        "examples": len(train),
        "validation_accuracy_per_epoch": [
            row["eval_accuracy"] for row in trainer.state.log_history if "eval_accuracy" in row
        ],
    }


def precision_comparison(env, splits, train_size=2400, epochs=3, max_length=128) -> dict:
    """Lesson 03's Trainer recipe trained in fp32 and in bf16 from the same start; test accuracy and speed."""
    supported = supported_precisions(env.capabilities, env.device)
    if not supported.get("bf16", "").startswith("native"):
        return {"skipped": f"no native bf16 on this {env.device}: " + supported.get("bf16", "bf16 not supported")}
    runs = {}
    for name in ("fp32", "bf16"):
        precision = resolve_precision(env.capabilities, env.device, name)
        run = trainer_run(env, splits, precision, env.seed, train_size, epochs, max_length=max_length)
        runs[name] = {
            "correct": run["correct"],
            "seconds": run["seconds"],
            "examples_per_s": run["examples"] * epochs / run["seconds"],
            "test_accuracy": bootstrap_interval(run["correct"], seed=env.seed).as_dict(),
        }
    comparison = paired_bootstrap(runs["bf16"]["correct"], runs["fp32"]["correct"], seed=env.seed)
    for run in runs.values():
        del run["correct"]
    return {
        "train_examples": train_size,
        "epochs": epochs,
        "test_examples": len(splits["test"]),
        **runs,
        "bf16_minus_fp32_accuracy": comparison.as_dict(),
        "bf16_speedup": runs["fp32"]["seconds"] / runs["bf16"]["seconds"],
    }


def chosen_head_start(starts: dict) -> str:
    """The head start with the better mean validation accuracy of the final model over seeds (never a test figure)."""
    return max(
        starts, key=lambda name: float(np.mean([run[-1] for run in starts[name]["validation_accuracy_per_epoch"]]))
    )


def chosen_recipe(recipes: dict) -> str:
    """The candidate budget with the best mean validation accuracy over seeds (never a test figure)."""
    return max(recipes, key=lambda name: float(np.mean(recipes[name]["validation_accuracy_per_seed"])))


def head_start(env, splits, seeds) -> dict:
    """The notebook's recipe from a random head and from a linear-probe head, with the same seeds, on the same items."""
    recipe = {key: value for key, value in RECIPE.items() if key not in ("train_size", "epochs")}
    starts = {}
    for start in HEAD_STARTS:
        runs = [
            trainer_run(
                env,
                splits,
                env.precision,
                seed,
                RECIPE["train_size"],
                RECIPE["epochs"],
                probe=start == "linear probe",
                validation=True,
                **recipe,
            )
            for seed in seeds
        ]
        starts[start] = {
            "correct": [run["correct"] for run in runs],
            "test_accuracy_per_seed": [float(run["correct"].mean()) for run in runs],
            "validation_accuracy_per_epoch": [run["validation_accuracy_per_epoch"] for run in runs],
            "seconds": [run["seconds"] for run in runs],
            "test_accuracy": seeds_interval([run["correct"] for run in runs], seed=env.seed).as_dict(),
        }
    comparison = paired_seeds(starts["linear probe"]["correct"], starts["random"]["correct"], seed=env.seed)
    for start in starts.values():
        del start["correct"]
    return {
        "recipe": RECIPE,
        "train_examples": len(splits["train"]),
        "validation_examples": len(splits["validation"]),
        "test_examples": len(splits["test"]),
        "seeds": list(seeds),
        "starts": starts,
        "probe_minus_random": comparison.as_dict(),
    }


def recipe_choice(env, splits, seeds) -> dict:
    """The notebook's recipe at the budgets in ``CANDIDATE_RECIPES``, same seeds and items. The budget is chosen on the
    validation split (``chosen_recipe``), each candidate paired against the chosen one there; test accuracy over
    seeds and items, training time and the paired differences against TF-IDF and the chosen recipe are reported."""
    tfidf_correct = tfidf_test_correct(env, splits)
    base = {key: value for key, value in RECIPE.items() if key not in ("train_size", "epochs", "learning_rate")}
    runs = {
        name: [
            trainer_run(
                env, splits, env.precision, seed, RECIPE["train_size"], probe=True, validation=True, **base, **settings
            )
            for seed in seeds
        ]
        for name, settings in CANDIDATE_RECIPES.items()
    }
    recipes = {
        name: {
            **CANDIDATE_RECIPES[name],
            "validation_accuracy_per_seed": [float(run["validation_correct"].mean()) for run in seed_runs],
        }
        for name, seed_runs in runs.items()
    }
    chosen = chosen_recipe(recipes)
    for name, seed_runs in runs.items():
        correct = [run["correct"] for run in seed_runs]
        versus_chosen = name != chosen
        recipes[name].update(
            {
                "validation_accuracy": seeds_interval(
                    [run["validation_correct"] for run in seed_runs], seed=env.seed
                ).as_dict(),
                "validation_minus_chosen": (
                    paired_seeds(
                        [run["validation_correct"] for run in seed_runs],
                        [run["validation_correct"] for run in runs[chosen]],
                        seed=env.seed,
                    ).as_dict()
                    if versus_chosen
                    else None
                ),
                "test_accuracy": seeds_interval(correct, seed=env.seed).as_dict(),
                "test_accuracy_per_seed": [float(c.mean()) for c in correct],
                "seconds": [run["seconds"] for run in seed_runs],
                "minus_tfidf": paired_seeds(correct, [tfidf_correct] * len(seeds), seed=env.seed).as_dict(),
                "minus_chosen_recipe": (
                    paired_seeds(correct, [run["correct"] for run in runs[chosen]], seed=env.seed).as_dict()
                    if versus_chosen
                    else None
                ),
            }
        )
    return {
        "recipe": RECIPE,
        "chosen_on": "validation",
        "chosen": chosen,
        "seeds": list(seeds),
        "validation_examples": len(splits["validation"]),
        "test_examples": len(splits["test"]),
        "tfidf_test_accuracy": float(tfidf_correct.mean()),
        "recipes": recipes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=None, help="training examples for the accuracy run (all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--speed-examples", type=int, default=640)
    parser.add_argument("--padding-steps", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2], help="training seeds (head_start)")
    parser.add_argument("--recipe-seeds", type=int, nargs="+", default=[42, 1], help="training seeds (recipe)")
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
    splits = rotten_tomatoes(seed=env.seed)
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    # Parts can be re-measured one at a time, on different machines: each records where it ran.
    measured_on = machine_record(env)
    results.pop("versions", None)
    seconds = results.setdefault("seconds", {})
    for part in args.parts:
        start = time.perf_counter()
        if part == "accuracy":
            results[part] = accuracy_run(env, splits, args.train_size, args.epochs)
        elif part == "loop_vs_trainer":
            results[part] = loop_vs_trainer(env, splits, args.speed_examples)
        elif part == "precision":
            results[part] = precision_comparison(env, splits)
        elif part == "head_start":
            results[part] = head_start(env, splits, args.seeds)
        elif part == "recipe":
            results[part] = recipe_choice(env, splits, args.recipe_seeds)
        elif part == "notebook":
            results[part] = (
                recorded_notebook_run(env, NOTEBOOK, NOTEBOOK_RESULTS)
                if args.reuse_course_times_run
                else run_notebook_default(NOTEBOOK, NOTEBOOK_RESULTS)
            )
        else:
            results[part] = padding_speed(env, splits, args.padding_steps)
        seconds[part] = time.perf_counter() - start
        results[part]["measured_on"] = measured_on
    # The head start's choice is derived here, by the rule, from the recorded validation figures (new or earlier
    # runs alike), so the record and the rule cannot disagree.
    if "head_start" in results:
        results["head_start"].update(chosen_on="validation", chosen=chosen_head_start(results["head_start"]["starts"]))
    if set(REQUIRED_PARTS) - set(results):  # head_start and notebook are printed (and tabled) only when recorded
        sys.exit(
            f"missing parts {sorted(set(REQUIRED_PARTS) - set(results))}: run them or pass --out with earlier results"
        )
    if args.out:  # first, so that a later printing error loses nothing
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    acc, speed, pad = results["accuracy"], results["loop_vs_trainer"], results["padding"]
    last = acc["minilm_test_accuracy_per_epoch"][-1]  # the last epoch: picking the best one would select on test
    print("\nmeasure                                         value")
    print("-" * 60)
    print(f"TF-IDF + logistic regression, test accuracy     {acc['tfidf_test_accuracy']:.3f}")
    for epoch, value in enumerate(acc["minilm_test_accuracy_per_epoch"], start=1):
        print(f"MiniLM ({acc['train_examples']} ex.), epoch {epoch}, test accuracy   {value:.3f}")
    print(f"MiniLM last epoch minus TF-IDF (points)         {100 * (last - acc['tfidf_test_accuracy']):+.1f}")
    print(f"MiniLM training time incl. test evals (s)        {acc['minilm_train_seconds_with_test_evals']:.0f}")
    print(f"explicit loop, examples/s                       {speed['loop_examples_per_s']:.1f}")
    print(f"Trainer, examples/s                             {speed['trainer_examples_per_s']:.1f}")
    print(f"loop / Trainer                                  {speed['loop_over_trainer']:.2f}")
    for padding in PADDINGS:
        row = pad[padding]
        extra = f", x{row['speedup_over_max_length']:.1f} vs max_length" if "speedup_over_max_length" in row else ""
        print(f"{padding:>14}: {row['seconds_per_step']:.2f} s/step, {row['padding_share']:.1%} padding{extra}")
    if "pool" in pad:
        print(
            f"padding share over the {pad['pool']['timed_examples']} snippets timed; length-grouped over the whole "
            f"training split ({pad['pool']['whole_train_examples']}): "
            f"{pad['pool']['length_grouped_padding_share_whole_train']:.1%}"
        )
    prec = results["precision"]
    if "skipped" in prec:
        print(f"fp32 vs bf16: skipped ({prec['skipped']})")
    else:
        for name in ("fp32", "bf16"):
            acc = prec[name]["test_accuracy"]
            print(
                f"Trainer {name}: test accuracy {acc['value']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}], "
                f"{prec[name]['examples_per_s']:.1f} examples/s"
            )
        diff = prec["bf16_minus_fp32_accuracy"]
        print(
            f"bf16 - fp32 accuracy: {diff['difference']['value']:+.3f} [{diff['difference']['low']:+.3f}, "
            f"{diff['difference']['high']:+.3f}] -> bf16 is {diff['verdict']}; bf16 x{prec['bf16_speedup']:.2f} speed"
        )
    if "head_start" in results:  # parts measured since the results file was first written may be absent
        start_run = results["head_start"]
        for name, start in start_run["starts"].items():
            acc = start["test_accuracy"]
            print(
                f"notebook recipe, {name} head, {len(start_run['seeds'])} seeds: test accuracy {acc['value']:.3f} "
                f"[{acc['low']:.3f}, {acc['high']:.3f}] (per seed: "
                + ", ".join(f"{a:.3f}" for a in start["test_accuracy_per_seed"])
                + ")"
            )
        diff = start_run["probe_minus_random"]
        print(
            f"linear probe - random head: {100 * diff['difference']['value']:+.1f} points "
            f"[{100 * diff['difference']['low']:+.1f}, {100 * diff['difference']['high']:+.1f}] -> {diff['verdict']}"
        )
    if "recipe" in results:
        print(f"recipe chosen on validation: {results['recipe']['chosen']}")
        for name, run in results["recipe"]["recipes"].items():
            acc, gap, val = run["test_accuracy"], run["minus_tfidf"]["difference"], run["validation_accuracy"]
            print(
                f"recipe {name}: validation accuracy {val['value']:.3f} [{val['low']:.3f}, {val['high']:.3f}]; "
                f"test accuracy {acc['value']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}], minus "
                f"TF-IDF {100 * gap['value']:+.1f} points [{100 * gap['low']:+.1f}, {100 * gap['high']:+.1f}], "
                f"{sum(run['seconds']) / len(run['seconds']):.0f} s per run"
            )
    if "notebook" in results:
        notebook = results["notebook"]["results"]
        trainer = notebook["test_accuracy"][f"{notebook['model']} (Trainer)"]
        gap = notebook["trainer_minus_tfidf"]["difference"]
        print(
            f"notebook 03, default mode: {results['notebook']['seconds']:.0f} s; Trainer test accuracy "
            f"{trainer['value']:.3f} [{trainer['low']:.3f}, {trainer['high']:.3f}]; minus TF-IDF "
            f"{100 * gap['value']:+.1f} points [{100 * gap['low']:+.1f}, {100 * gap['high']:+.1f}] "
            f"({notebook['trainer_minus_tfidf']['verdict']})"
        )
    print(
        "seconds per part: "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f" on {env.device} ({env.precision.name}, {env.threads} threads)"
    )


if __name__ == "__main__":
    main()
