"""The benchmarks that choose a lesson's settings choose them on validation items, never on the lesson's test items.

Lesson 04's learning rate comes from ``benchmarks/instruction_tuning.py --parts lr``: these tests check that the
items it scores are validation items, disjoint from the notebook's training and test items, that the recorded
choice is the one its rule gives from the recorded table, that the grid brackets it, and that the notebook uses
the chosen rate with the sizes the benchmark trained.
"""

import ast
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from benchmarks import instruction_tuning as bench
from helpers.data.instructions import CLOSED_TASKS, instruction_dataset
from helpers.data.loaders import rotten_tomatoes, subsample

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "instruction_tuning.json"
LESSON = ROOT / "course" / "04_gpt_instruction_tuning.ipynb"


def lesson_constants(lesson: Path = LESSON) -> dict:
    """The literal assignments of a lesson's code cells (``a, b = 1, 2`` too), and the keyword arguments of its
    ``env.pick`` calls."""
    found: dict = {}
    for cell in nbformat.read(lesson, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name, value = node.targets[0].id, node.value
                if isinstance(value, ast.Call) and getattr(value.func, "attr", "") == "pick":
                    found[name] = {k.arg: literal(k.value) for k in value.keywords}
                elif literal(value) is not None:
                    found[name] = literal(value)
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple):
                names = [target.id for target in node.targets[0].elts if isinstance(target, ast.Name)]
                values = literal(node.value)
                if isinstance(values, tuple) and len(names) == len(values) == len(node.targets[0].elts):
                    found.update(zip(names, values))
    return found


def literal(node: ast.AST):
    """The value of a literal expression, ``None`` for anything computed."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def test_the_selection_items_are_validation_items_apart_from_training_and_test():
    items = bench.selection_items(seed=42)
    assert set(items["task"]) == set(CLOSED_TASKS)
    assert all(items["task"].count(task) == bench.SELECTION_SIZES[task] for task in CLOSED_TASKS)
    validation = instruction_dataset({"train": 0, "validation": None, "test": 0}, seed=42, max_words=30)["validation"]
    assert set(items["input"]) <= set(validation["input"])
    lesson = instruction_dataset(bench.NOTEBOOK_SIZES, seed=42, max_words=30)
    for split in ("train", "test"):
        assert not set(items["input"]) & set(lesson[split]["input"])


def test_the_chosen_rate_is_the_best_mean_over_the_closed_tasks():
    table = {
        "sentiment | lr 0.0001": {"accuracy": 0.70},
        "topic | lr 0.0001": {"accuracy": 0.20},
        "sentiment | lr 0.0002": {"accuracy": 0.80},  # best on sentiment alone
        "topic | lr 0.0002": {"accuracy": 0.25},
        "sentiment | lr 0.0004": {"accuracy": 0.78},  # best mean
        "topic | lr 0.0004": {"accuracy": 0.40},
    }
    assert bench.chosen_rate(table, [1e-4, 2e-4, 4e-4]) == 4e-4


def test_the_lesson_uses_the_sizes_and_the_rate_the_benchmark_chose_on_validation():
    recorded = json.loads(RESULTS.read_text())["lr"]
    assert recorded["scored_on"] == "validation"
    rates = sorted(float(rate) for rate in recorded["train_seconds"])
    chosen = bench.chosen_rate(recorded["closed_tasks"], rates)
    assert recorded["chosen_rate"] == pytest.approx(chosen)
    assert rates[0] < chosen < rates[-1], "the grid must bracket the chosen rate"
    assert recorded["train_examples"] == sum(bench.NOTEBOOK_SIZES["train"].values())
    constants = lesson_constants()
    assert constants["LEARNING_RATE"] == pytest.approx(chosen)
    assert constants["TRAINABLE_LAST_LAYERS"] == bench.NOTEBOOK_TRAINABLE_LAST_LAYERS
    assert constants["per_task"]["full"]["train"] == bench.NOTEBOOK_SIZES["train"]
    assert constants["per_task"]["full"]["test"] == bench.NOTEBOOK_SIZES["test"]
    # The cached SFT model (helpers.training.reference.instruction_model) defaults to the same recipe.
    import inspect

    from helpers.training.reference import LESSON_04_TRAIN_SIZES, instruction_model

    defaults = {name: p.default for name, p in inspect.signature(instruction_model).parameters.items()}
    assert LESSON_04_TRAIN_SIZES == bench.NOTEBOOK_SIZES["train"] and defaults["train_sizes"] == LESSON_04_TRAIN_SIZES
    assert defaults["lr"] == pytest.approx(chosen)
    assert defaults["trainable_last_layers"] == bench.NOTEBOOK_TRAINABLE_LAST_LAYERS
    budget = json.loads(RESULTS.read_text())["budget"]
    assert budget["scored_on"] == "validation"
    assert any(
        run["rate"] == pytest.approx(chosen) and run["train"] == bench.NOTEBOOK_SIZES["train"]
        for run in budget["runs"].values()
    )


def test_lesson_09_retrains_lesson_04s_model_with_its_budget_and_rate():
    lesson_04, lesson_09 = lesson_constants(), lesson_constants(ROOT / "course" / "09_evaluation.ipynb")
    assert lesson_09["LEARNING_RATE"] == lesson_04["LEARNING_RATE"]
    assert lesson_09["TRAINABLE_LAST_LAYERS"] == lesson_04["TRAINABLE_LAST_LAYERS"]
    assert lesson_09["per_task"]["full"]["train"] == lesson_04["per_task"]["full"]["train"]


def test_the_warmup_grid_uses_lesson_05s_recipe_and_validation_reviews_only():
    from benchmarks import warmup

    constants = lesson_constants(ROOT / "course" / "05_hyperparameters.ipynb")
    assert (warmup.MAX_LENGTH, warmup.BATCH_SIZE) == (constants["max_length"], constants["batch_size"])
    _, texts, train, validation = warmup.lesson_data(seed=42)
    splits = rotten_tomatoes(seed=42)
    assert len(train) == warmup.TRAIN_SIZE and len(validation) == warmup.VALIDATION_SIZE
    assert set(texts["text"]) <= set(splits["train"]["text"])
    scored = set(subsample(splits["validation"], warmup.VALIDATION_SIZE, seed=42)["text"])
    assert scored <= set(splits["validation"]["text"]) and not scored & set(splits["test"]["text"])
    # The grid brackets the lesson's best rate (recorded in its default run) and reaches the rate where it collapses.
    lessons = json.loads((ROOT / "benchmarks" / "results" / "lessons.json").read_text())
    best = [
        run["records"]["best learning rate of the sweep"]["value"]
        for key, notebooks in lessons.items()
        for name, run in notebooks.items()
        if name.startswith("05_") and key.startswith("full/")
    ]
    assert best and all(min(warmup.RATES) <= rate < max(warmup.RATES) for rate in best)


def test_the_recorded_warmup_grid_compares_each_warmup_with_none_and_applies_holm():
    from helpers.evaluation import holm_verdicts

    recorded = json.loads((ROOT / "benchmarks" / "results" / "warmup.json").read_text())
    runs = {(r["rate"], r["start"], r["warmup"]) for r in recorded["runs"]}
    compared = [(c["rate"], c["start"], c["warmup"]) for c in recorded["comparisons"]]
    assert sorted(compared) == sorted(key for key in runs if key[2] > 0)
    assert all((rate, start, 0.0) in runs for rate, start, _ in compared)
    adjusted = holm_verdicts(
        [c["verdict"] for c in recorded["comparisons"]], [c["p_value"] for c in recorded["comparisons"]]
    )
    assert adjusted == [c["holm_verdict"] for c in recorded["comparisons"]]


def test_lesson_03s_budget_is_the_candidate_with_the_best_mean_validation_accuracy():
    from benchmarks.bert_classification import chosen_head_start, chosen_recipe

    recipes = {
        "a": {"validation_accuracy_per_seed": [0.80, 0.84], "test_accuracy_per_seed": [0.90, 0.90]},  # best on test
        "b": {"validation_accuracy_per_seed": [0.83, 0.82], "test_accuracy_per_seed": [0.80, 0.80]},  # best mean
    }
    assert chosen_recipe(recipes) == "b"
    starts = {
        "random": {"validation_accuracy_per_epoch": [[0.90, 0.70], [0.90, 0.72]]},  # better after epoch 1 only
        "linear probe": {"validation_accuracy_per_epoch": [[0.60, 0.80], [0.60, 0.80]]},
    }
    assert chosen_head_start(starts) == "linear probe"


def test_lesson_03s_recipe_and_head_start_are_the_ones_chosen_on_validation():
    from benchmarks import bert_classification as bert

    recorded = json.loads((ROOT / "benchmarks" / "results" / "bert_classification.json").read_text())
    recipe, start = recorded["recipe"], recorded["head_start"]
    assert recipe["chosen_on"] == start["chosen_on"] == "validation"
    assert set(recipe["recipes"]) == set(bert.CANDIDATE_RECIPES)
    chosen = bert.chosen_recipe(recipe["recipes"])
    assert recipe["chosen"] == chosen
    settings = bert.CANDIDATE_RECIPES[chosen]
    assert (bert.RECIPE["epochs"], bert.RECIPE["learning_rate"]) == (settings["epochs"], settings["learning_rate"])
    # The rates tried for the chosen number of epochs bracket the best of them on validation.
    same_epochs = {name: run for name, run in recipe["recipes"].items() if run["epochs"] == settings["epochs"]}
    rates = sorted(run["learning_rate"] for run in same_epochs.values())
    best_rate = same_epochs[bert.chosen_recipe(same_epochs)]["learning_rate"]
    assert rates[0] < best_rate < rates[-1], "the rate grid must bracket its best value"
    assert start["chosen"] == bert.chosen_head_start(start["starts"]) == "linear probe"
    lesson = lesson_constants(ROOT / "course" / "03_bert_classification.ipynb")
    assert (lesson["max_epochs"], lesson["learning_rate"]) == (settings["epochs"], settings["learning_rate"])
    assert lesson["batch_size"] == bert.RECIPE["batch_size"]


def test_the_larger_multitask_run_is_lesson_08s_experiment_with_holm_over_its_comparisons():
    from benchmarks import multitask_transfer as bench_08
    from helpers.evaluation import holm_verdicts

    lesson = lesson_constants(ROOT / "course" / "08_multitask.ipynb")
    assert (bench_08.MAX_LENGTH, bench_08.BATCH_SIZE, bench_08.LEARNING_RATE) == (
        lesson["max_length"],
        lesson["batch_size"],
        lesson["lr"],
    )
    assert set(bench_08.SIZES) == set(lesson["train_sizes"]["full"])
    recorded = json.loads((ROOT / "benchmarks" / "results" / "multitask_transfer.json").read_text())
    assert recorded["setup"]["sizes"] == bench_08.SIZES
    assert recorded["setup"]["seeds"] == [42, 43, 44]  # the lesson's seeds: env.seed, + 1, + 2
    compared = [(c["comparison"], c["task"]) for c in recorded["comparisons"]]
    assert sorted(compared) == sorted((name, task) for name, _, _ in bench_08.COMPARISONS for task in bench_08.SIZES)
    adjusted = holm_verdicts(
        [c["verdict"] for c in recorded["comparisons"]], [c["p_value"] for c in recorded["comparisons"]]
    )
    assert adjusted == [c["holm_verdict"] for c in recorded["comparisons"]]


def test_lesson_11s_rates_are_the_best_mean_on_validation_and_the_grid_must_bracket_it():
    from benchmarks.peft_rates import brackets, chosen_rate, grid_record

    candidates = {
        "0.001": {"validation_score_per_seed": [0.70, 0.90]},  # the best single seed
        "0.003": {"validation_score_per_seed": [0.82, 0.82]},  # the best mean
        "0.01": {"validation_score_per_seed": [0.60, 0.60]},
    }
    assert chosen_rate(candidates) == "0.003"
    assert brackets([1e-3, 3e-3, 1e-2], 3e-3) and not brackets([1e-3, 3e-3], 3e-3)
    scores = {1e-3: [[1, 0, 1, 0], [1, 1, 0, 0]], 3e-3: [[1, 1, 1, 0], [1, 1, 1, 0]], 1e-2: [[0, 0, 1, 0]] * 2}
    record = grid_record(
        {rate: [np.asarray(s, dtype=float) for s in runs] for rate, runs in scores.items()},
        {rate: [1.0, 1.0] for rate in scores},
        seed=0,
    )
    assert record["chosen"] == 3e-3 and record["bracketed"]
    assert record["candidates"]["0.003"]["minus_chosen"] is None
    assert record["candidates"]["0.01"]["minus_chosen"]["difference"]["value"] == pytest.approx(-0.5)


def test_lesson_11_uses_the_rates_chosen_on_validation_with_the_benchmarks_recipe():
    from benchmarks import peft_rates as bench_11

    lesson = lesson_constants(ROOT / "course" / "11_peft.ipynb")
    recorded = json.loads((ROOT / "benchmarks" / "results" / "peft_rates.json").read_text())
    assert recorded["chosen_on"] == "validation"
    # the benchmark trains what the lesson trains
    assert lesson["LORA_ALPHA"] == bench_11.LORA_ALPHA
    assert lesson["minilm_sizes"]["full"]["train"] == bench_11.MINILM["train_size"]
    assert lesson["smollm_sizes"]["full"]["train"] == bench_11.SMOLLM["train"]
    assert lesson["smollm_sizes"]["full"]["batch_size"] == bench_11.SMOLLM["batch_size"]
    assert recorded["minilm"]["train_size"] == bench_11.MINILM["train_size"]
    # every grid brackets its choice, and the choice is the rule applied to the record
    for part in ("minilm", "smollm"):
        for method, grid in recorded[part]["methods"].items():
            assert grid["chosen"] == float(bench_11.chosen_rate(grid["candidates"])), method
            assert grid["bracketed"], f"{part} {method}: the grid must bracket its best rate"
    minilm, smollm = recorded["minilm"]["methods"], recorded["smollm"]["methods"]
    assert lesson["MINILM_FULL_LR"] == minilm["complet"]["chosen"]
    assert lesson["MINILM_LORA_LR"] == minilm["LoRA r=8 attention"]["chosen"]
    assert lesson["MINILM_LORA_MLP_LR"] == minilm["LoRA r=8 attention+MLP"]["chosen"]
    assert lesson["SMOLLM_FULL_LR"] == smollm["complet"]["chosen"]
    assert lesson["SMOLLM_PARTIAL_LR"] == smollm["partiel (10 derniers blocs)"]["chosen"]
    assert lesson["SMOLLM_LORA_LR"] == smollm["LoRA r=8 attention"]["chosen"]
