"""Write the measured tables of README.md and RESULTS.md from the result files the benchmarks write.

No figure in either file is typed by hand: each table sits between
``<!-- table:NAME -->`` and ``<!-- /table -->`` and is rendered here from
``benchmarks/results/*.json``. ``--check`` exits 1 when a file is out of
date with the result files (the test suite runs it).

    python benchmarks/readme_tables.py          # rewrite the tables
    python benchmarks/readme_tables.py --check  # fail if they are stale
"""

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCUMENTS = (README, ROOT / "RESULTS.md")  # the README stays a guide; RESULTS.md holds the measurements
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def machine(on: dict) -> str:
    """'AMD EPYC, no native bf16, fp32' from a result's ``measured_on``-style record."""
    if on.get("device", "cpu") != "cpu":
        return f"{on['device']}, {on['precision']}"
    native = "native bf16" if on.get("cpu_native_bf16") else "no native bf16"
    return f"{on.get('cpu', 'CPU')} ({on.get('threads', '?')} threads), {native}, {on['precision']}"


def course_times() -> str:
    record = _load("course_times")
    # fp32 forced on a native-bf16 CPU (``/fp32``) stands beside the CPUs without native bf16, which train in fp32
    columns = [
        key
        for key in (
            "full/no-native-bf16",
            "full/native-bf16/fp32",
            "full/native-bf16",
            "fast/no-native-bf16",
            "fast/native-bf16/fp32",
            "fast/native-bf16",
            "full/cuda",
            "fast/cuda",
        )
        if key in record
    ]
    notebooks = sorted({name for key in columns for name in record[key]["seconds"]})
    lines = [
        "| notebook | "
        + " | ".join(f"{key.split('/')[0]} mode, {machine(record[key])}; {record[key]['date']}" for key in columns)
        + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    others = {}  # a notebook timed on another CPU of the same kind than its column's header names

    def cell(key: str, name: str) -> str:
        if name not in record[key]["seconds"]:
            return "—"
        cpu = record[key].get("cpu_by_notebook", {}).get(name, record[key]["cpu"])
        if cpu == record[key]["cpu"]:
            return duration(record[key]["seconds"][name])
        mark = others.setdefault(cpu, "†" * (len(others) + 1))
        return f"{duration(record[key]['seconds'][name])} {mark}"

    for name in notebooks:
        lines.append(f"| `{name}` | " + " | ".join(cell(k, name) for k in columns) + " |")
    totals = []
    for key in columns:  # a column that lacks notebooks says so: its total is not the whole course
        seconds = record[key]["seconds"]
        missing = len(notebooks) - len(seconds)
        totals.append(
            f"**{duration(sum(seconds.values()))}**"
            + (f" ({len(seconds)} of {len(notebooks)} notebooks)" if missing else "")
        )
    lines.append("| **all lessons** | " + " | ".join(totals) + " |")
    for cpu, mark in others.items():
        lines.append(f"\n{mark} measured on {cpu}, a CPU of the same kind (native bf16 or not) as its column's.")
    return "\n".join(lines)


PADDINGS = ("max_length", "dynamic", "length_grouped")


def padding_shares(pad: dict) -> str:
    """The padding shares of the timed batches, and where recorded, of length grouping over the whole training split.

    Length grouping sorts mega-batches of up to 50 batches: over a small pool it leaves far more padding than over
    the whole training split (what lesson 02 shows), so the row says which pool each share is over.
    """
    shares = " / ".join(f"{pad[k]['padding_share']:.1%}" for k in PADDINGS)
    pool = pad.get("pool")
    if pool is None:  # recorded before the pool was
        return f"(padding share over the snippets timed: {shares})"
    return (
        f"(padding share over the {pool['timed_examples']:,} snippets timed: {shares}; length-grouped over the "
        f"whole training split of {pool['whole_train_examples']:,}: "
        f"{pool['length_grouped_padding_share_whole_train']:.1%})"
    )


def bert_benchmark() -> str:
    r = _load("bert_classification")
    acc, speed, pad, prec = r["accuracy"], r["loop_vs_trainer"], r["padding"], r["precision"]
    last = acc["minilm_test_accuracy_per_epoch"][-1]  # not the best epoch: that would be chosen on test items
    per_epoch = " / ".join(f"{a:.1%}" for a in acc["minilm_test_accuracy_per_epoch"])
    rows = [
        (
            "TF-IDF (1–2 grams) + logistic regression, all training snippets",
            f"{acc['tfidf_test_accuracy']:.1%} test accuracy",
            acc["measured_on"],
        ),
        (
            f"MiniLM fine-tuned on {acc['train_examples']:,} snippets (explicit loop, length-grouped batches of 32, "
            f"lr 1e-4), accuracy after each epoch",
            f"{per_epoch} (last epoch {100 * (last - acc['tfidf_test_accuracy']):+.1f} points over TF-IDF); "
            f"{duration(acc['minilm_train_seconds_with_test_evals'])} of training",
            acc["measured_on"],
        ),
        (
            f"explicit loop vs `Trainer`, same {speed['examples']} examples in the same order",
            f"{speed['loop_examples_per_s']:.1f} vs {speed['trainer_examples_per_s']:.1f} examples/s "
            f"(ratio {speed['loop_over_trainer']:.2f})",
            speed["measured_on"],
        ),
        (
            "one training step, batch of 32: `max_length=512` / dynamic / length-grouped padding",
            " / ".join(f"{pad[k]['seconds_per_step']:.2f}" for k in PADDINGS) + " s " + padding_shares(pad),
            pad["measured_on"],
        ),
    ]
    if "skipped" not in prec:
        diff = prec["bf16_minus_fp32_accuracy"]
        d = diff["difference"]
        for name in ("fp32", "bf16"):
            a = prec[name]["test_accuracy"]
            rows.append(
                (
                    f"MiniLM with `Trainer` ([CLS] head, random start, {prec['train_examples']:,} snippets × "
                    f"{prec['epochs']} epochs) in **{name}**",
                    f"{a['value']:.1%} test accuracy [95% CI {a['low']:.1%}, {a['high']:.1%}], "
                    f"{prec[name]['examples_per_s']:.1f} examples/s",
                    {**prec["measured_on"], "precision": name},
                )
            )
        rows.append(
            (
                "bf16 minus fp32, paired bootstrap on the same test items",
                f"{100 * d['value']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]: "
                f"bf16 is **{diff['verdict']}** in accuracy, ×{prec['bf16_speedup']:.2f} the speed",
                {**prec["measured_on"], "precision": "fp32 and bf16"},
            )
        )
    rows += bert_recipe_rows(r)
    lines = ["| measure | value | measured on |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {machine(on)} |" for what, value, on in rows]
    return "\n".join(lines)


def epochs(n: float) -> str:
    """'1 epoch', '2 epochs', '1.5 epochs'."""
    return f"{n:g} epoch" + ("" if n == 1 else "s")


def _interval(a: dict) -> str:
    return f"{a['value']:.1%} [95% CI {a['low']:.1%}, {a['high']:.1%}]"


def _points(comparison: dict) -> str:
    d = comparison["difference"]
    return (
        f"{100 * d['value']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]: **{comparison['verdict']}**"
    )


def bert_recipe_rows(r: dict) -> list:
    """Rows of the lesson's current recipe: its head start over seeds, and the notebook's own default-mode run."""
    rows = []
    if "head_start" in r:
        h = r["head_start"]
        recipe = h["recipe"]
        for start, run in h["starts"].items():
            validation = [seed_run[-1] for seed_run in run["validation_accuracy_per_epoch"]]
            chosen = "; **chosen** on validation" if start == h["chosen"] else ""
            rows.append(
                (
                    f"lesson 03's recipe (all {h['train_examples']:,} snippets, {recipe['pooling']}-pooling "
                    f"head, batches of {recipe['batch_size']}, lr {recipe['learning_rate']:g}, "
                    f"{epochs(recipe['epochs'])}) from a **{start}** head, {len(h['seeds'])} seeds",
                    f"validation accuracy {sum(validation) / len(validation):.2%} (mean over seeds, "
                    f"{h['validation_examples']:,} items{chosen}). Reported on test: "
                    f"{_interval(run['test_accuracy'])} over seeds and test items; per seed "
                    + " / ".join(f"{a:.1%}" for a in run["test_accuracy_per_seed"]),
                    h["measured_on"],
                )
            )
        rows.append(
            (
                "linear-probe head minus random head, same seeds, same test items",
                _points(h["probe_minus_random"]),
                h["measured_on"],
            )
        )
    if "recipe" in r:
        c = r["recipe"]
        for name, run in c["recipes"].items():
            chosen = run["validation_minus_chosen"] is None
            versus = (
                f"**chosen** (best mean validation accuracy, {c['validation_examples']:,} validation items)"
                if chosen
                else f"minus the chosen one {_points(run['validation_minus_chosen'])}"
            )
            on_test = "" if chosen else f"; minus the chosen one {_points(run['minus_chosen_recipe'])}"
            rows.append(
                (
                    f"budget: {name}, linear-probe head, all {c['recipe']['train_size'] or 'training'} snippets, "
                    f"{len(c['seeds'])} seeds",
                    f"validation {_interval(run['validation_accuracy'])}, {versus}. Reported on test: "
                    f"{_interval(run['test_accuracy'])}; minus TF-IDF {_points(run['minus_tfidf'])}{on_test}; "
                    f"{duration(sum(run['seconds']) / len(run['seconds']))} per run",
                    c["measured_on"],
                )
            )
    if "notebook" in r:
        nb, on = r["notebook"]["results"], r["notebook"]["measured_on"]
        accuracy = nb["test_accuracy"]
        rows.append(
            (
                f"`course/03_bert_classification.ipynb` in default mode, {duration(r['notebook']['seconds'])} "
                f"in all: MiniLM (`Trainer`, {nb['train_examples']:,} snippets, {epochs(nb['epochs_run'])}, "
                f"lr {nb['learning_rate']:g}) "
                f"vs TF-IDF, {nb['test_examples']:,} test items",
                f"{_interval(accuracy[nb['model'] + ' (Trainer)'])} vs "
                f"{_interval(accuracy['TF-IDF + régression logistique'])}; paired difference "
                + _points(nb["trainer_minus_tfidf"]),
                on,
            )
        )
        rows.append(
            (
                f"same notebook: explicit loop stopped after {nb['loop_updates']} updates of `Trainer`'s schedule "
                f"minus `Trainer`'s checkpoint at that step, same start, same validation items",
                _points(nb["loop_minus_trainer_checkpoint"]),
                on,
            )
        )
    return rows


def instruction_benchmark() -> str:
    r = _load("instruction_tuning")
    part = r["notebook"]
    nb, on = part["results"], part["measured_on"]
    before, after = nb["before"], nb["after"]

    def pair(metric: str, task: str, digits: int = 2) -> str:
        a, b = before[metric].get(task), after[metric].get(task)
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            return "—"
        return f"{a:.{digits}f} → {b:.{digits}f}"

    def interval(row: dict) -> str:
        return f"{row['accuracy']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"

    def difference(paired: dict, words: dict | None = None) -> str:
        d = paired["difference"]
        verdict = (words or {}).get(paired["verdict"], paired["verdict"])
        return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ({verdict}, n = {paired['n']})"

    speed = r["speed"]
    lines = [
        f"Measured on {machine(on)}: notebook in default mode {duration(part['seconds'])}; "
        f"training {nb['train_examples']} examples in {nb['updates']} updates at learning rate "
        f"{nb['learning_rate']:g}, {duration(nb['train_seconds'])}. Training tokens/s (on "
        f"{machine(speed['measured_on'])}): "
        + ", ".join(f"{k} {v:.0f}" for k, v in speed["tokens_per_second"].items())
        + ".",
        "",
        "Closed tasks, accuracy with 95% bootstrap intervals on the same test items "
        '("clear gain": the tuned model beats every baseline by at least 15 points with disjoint intervals):',
        "",
        "| task | n | tuned | majority answer | untuned (strict) | untuned (lenient) | clear gain |",
        "|---|---|---|---|---|---|---|",
    ]
    closed = nb["closed_tasks"]
    for task, clear in nb["closed_tasks_clear_gain"].items():
        row = {
            name: closed[f"{task} | {name}"]
            for name in ("ajusté", "classe majoritaire", "non ajusté", "non ajusté (indulgent)")
        }
        lines.append(
            f"| {task} | {row['ajusté']['n']:.0f} | {interval(row['ajusté'])} | "
            f"{interval(row['classe majoritaire'])} | {interval(row['non ajusté'])} | "
            f"{interval(row['non ajusté (indulgent)'])} | {'yes' if clear else 'no'} |"
        )
    lines += [
        "",
        "| task | n | exact match | label named (lenient) | ROUGE-L | response perplexity |",
        "|---|---|---|---|---|---|",
    ]
    for task in before["n"]:
        lines.append(
            f"| {task} | {before['n'][task]:.0f} | {pair('exact_match', task)} | "
            f"{pair('label_in_answer', task)} | {pair('rouge_l', task, 3)} | "
            f"{pair('perplexité', task, 1)} |"
        )
    lines += [
        "",
        "Response-only labels minus `labels = input_ids`, exact match on the same closed-task items: "
        + difference(nb["recipes_paired"])
        + ".",
        "Forgetting, loss per token of general Wikipedia paragraphs after minus before tuning: "
        + difference(
            nb["forgetting_paired"]["après"],
            {"better": "the loss is higher after tuning", "worse": "the loss is lower after tuning"},
        )
        + ".",
    ]

    def closed_runs(part: dict, title: str, first_column: str, rows: list[tuple[str, str, float]]) -> list[str]:
        """One row of closed-task accuracies per training run (label, its key in the results, its seconds)."""
        tasks = list(part["test_per_task"])
        table = [
            "",
            f"{title}; measured on {machine(part['measured_on'])}):",
            "",
            f"| {first_column} | "
            + " | ".join(f"{t} (n = {part['test_per_task'][t]})" for t in tasks)
            + " | training |",
            "|---|" + "---|" * (len(tasks) + 1),
        ]
        table.append(
            "| majority answer | "
            + " | ".join(interval(part["closed_tasks"][f"{t} | majority"]) for t in tasks)
            + " | — |"
        )
        for label, key, seconds in rows:
            table.append(
                f"| {label} | "
                + " | ".join(interval(part["closed_tasks"][f"{t} | {key}"]) for t in tasks)
                + f" | {duration(seconds)} |"
            )
        return table

    if "lr" in r:
        lr = r["lr"]
        blocks = f", last {lr['trainable_last_layers']} blocks trained" if "trainable_last_layers" in lr else ""
        chosen = lr.get("chosen_rate")
        lines += closed_runs(
            lr,
            f"Learning rate, chosen on {lr.get('scored_on', 'test')} items (the notebook's data and recipe, "
            f"{lr['train_examples']} training examples{blocks}",
            "learning rate",
            [
                (rate + (" (chosen)" if chosen is not None and float(rate) == chosen else ""), f"lr {rate}", seconds)
                for rate, seconds in lr["train_seconds"].items()
            ],
        )
    if "budget" in r:
        budget = r["budget"]
        lines += closed_runs(
            budget,
            f"Training budget (the notebook's recipe otherwise; accuracy on the same {budget.get('scored_on', 'test')} "
            "items",
            "budget",
            [(name, name, seconds) for name, seconds in budget["train_seconds"].items()],
        )
    return "\n".join(lines)


def _english(name: str) -> str:
    """The notebook's French row names, in English for the README."""
    name = re.sub(r"partiel \((\d+) derniers blocs\)", r"partial (last \1 blocks)", name)
    for french, english in [
        ("départ (sonde linéaire)", "start (linear probe)"),
        ("réponse majoritaire", "majority answer"),
        ("départ", "start"),
        ("complet", "full"),
        ("adaptateur désactivé", "adapter disabled"),
        ("rechargé", "reloaded"),
        ("fusionné", "merged"),
        ("adapté", "adapted"),
        (" / ", " vs "),
    ]:
        name = name.replace(french, english)
    return name


def peft_benchmark() -> str:
    part = _load("adaptation_methods")
    nb, on = part["results"], part["measured_on"]
    verdicts = {
        "better": "better",
        "worse": "worse",
        "indistinguishable": "indistinguishable",
        "reference": "reference",
    }

    def interval(row: dict, column: str, digits: int = 3) -> str:
        if row.get(column) is None:  # a baseline without a model (the majority answer) has no retention
            return "—"
        return f"{row[column]:.{digits}f} [{row[column + '_low']:.{digits}f}, {row[column + '_high']:.{digits}f}]"

    def change(row: dict, column: str) -> str:
        if row.get(column + "_verdict") is None:
            return "—"
        if row[column + "_verdict"] == "reference":
            return "reference"
        return (
            f"{row[column + '_change']:+.3f} [{row[column + '_change_low']:+.3f}, "
            f"{row[column + '_change_high']:+.3f}] {verdicts[row[column + '_verdict']]}"
        )

    def number(value, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    seeds = len(nb.get("minilm_seeds", [None]))
    over = f"over {seeds} training seeds and the test items" if seeds > 1 else "over the test items"
    lines = [
        f"Measured on {machine(on)}: notebook in default mode {duration(part['seconds'])}. Every model of a "
        "table is trained on the same examples in the same order for the same number of updates; quality is "
        "paired against full fine-tuning, retention against the model before fine-tuning (95% bootstrap "
        "intervals; Holm's correction is applied in the lesson's summary, not in these tables)."
    ]
    for key, title, quality, retention in [
        (
            "minilm",
            f"MiniLM on Rotten Tomatoes ({nb['minilm_sizes']['train']} training reviews, "
            f"{nb['minilm_sizes']['test']} test reviews; all runs start from the same linear-probe head; "
            f"intervals {over})",
            "accuracy",
            "topic-probe accuracy on its sentence vectors",
        ),
        (
            "smollm",
            "SmolLM2-135M on lesson 04's closed instruction tasks (sentiment and topic; one training run per "
            "method, intervals over the test items)",
            "exact match",
            "loss per token on general paragraphs (lower is better)",
        ),
    ]:
        lines += [
            "",
            f"{title}:",
            "",
            f"| model | trainable | training state | peak RSS | examples/s | stored per task | {quality} | "
            f"vs full | {retention} | vs start |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in nb[key].items():
            trained = row["trainable"] is not None
            lines.append(
                f"| {_english(name)} | {number(row['trainable'], ',.0f')}"
                + (f" ({row['trainable_share']:.2%})" if trained else "")
                + f" | {number(row['training_state_MB'], '.0f')}{' MB' if trained else ''}"
                f" | {number(row['peak_rss_MB'], '.0f')}{' MB' if trained else ''}"
                f" | {number(row['examples_per_second'], '.1f')}"
                f" | {number(row['stored_MB'], '.2f')}{' MB' if trained else ''}"
                f" | {interval(row, 'quality')} | {change(row, 'quality')}"
                f" | {interval(row, 'retention')} | {change(row, 'retention')} |"
            )
    trl, checks = nb["trl"], nb["adapter_checks"]
    if "step_seconds" in trl:  # recorded per step, the first left out
        timing = (
            f"median {statistics.median(trl['step_seconds']):.2f} s per step (steps 2 to {trl['steps']}) vs "
            f"{statistics.median(trl['course_step_seconds']):.2f} s"
        )
    else:  # a record made before the lesson timed each step
        timing = (
            f"{trl['seconds_per_step']:.2f} s per step (start-up included) vs {trl['course_seconds_per_step']:.2f} s"
        )
    lines += [
        "",
        "Adapter checks, largest logit difference: "
        + "; ".join(f"{_english(k)} {v:.1e}" for k, v in checks.items())
        + f". TRL `SFTTrainer` against the course recipe, same LoRA r=8 start and batches, first {trl['steps']} "
        f"steps: largest loss difference {trl['max_step_loss_gap']:.4f}, {timing}. SmolLM2's weights: "
        f"{nb['qlora_weight_bytes']['fp32'] / 1e6:.0f} MB in fp32, {nb['qlora_weight_bytes']['nf4'] / 1e6:.0f} MB "
        "as QLoRA stores them (NF4, computed).",
    ]
    return "\n".join(lines)


def warmup_benchmark() -> str:
    """Lesson 05's warmup grid: validation accuracy per rate, start and warmup share, and warmup vs none (Holm)."""
    r = _load("warmup")
    setup = r["setup"]
    compared = {(c["rate"], c["start"], c["warmup"]): c for c in r["comparisons"]}
    lines = [
        f"Measured on {r['measured_on']}, {r['date']}, {duration(r['seconds'])}: {setup['train_reviews']} training "
        f"reviews, batches of {setup['batch_size']}, {epochs(setup['epochs'])} ({setup['updates']} updates), "
        f"{len(setup['seeds'])} seeds; validation accuracy on {setup['validation_reviews']} reviews (seeds and "
        "reviews resampled together); each warmup against none at the same rate and start, paired, the "
        f"{len(r['comparisons'])} comparisons read together with Holm's correction.",
        "",
        "| peak rate | start | warmup (updates) | validation accuracy | runs on one class | warmup minus none | "
        "verdict | Holm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        a = run["accuracy"]
        versus = compared.get((run["rate"], run["start"], run["warmup"]))
        shown = (
            ("reference", "", "")
            if versus is None
            else (
                f"{100 * versus['difference']['value']:+.1f} points [{100 * versus['difference']['low']:+.1f}, "
                f"{100 * versus['difference']['high']:+.1f}]",
                versus["verdict"],
                versus["holm_verdict"],
            )
        )
        lines.append(
            f"| {run['rate']:g} | {run['start']} | {run['warmup']:g} ({run['warmup_updates']}) | "
            f"{a['value']:.3f} [{a['low']:.3f}, {a['high']:.3f}] | {run['one_class_seeds']} of "
            f"{len(setup['seeds'])} | {shown[0]} | {shown[1]} | {shown[2]} |"
        )
    return "\n".join(lines)


def multitask_benchmark() -> str:
    """Lesson 08 at larger sizes: each task alone and together, per task, and the paired comparisons (Holm)."""
    r = _load("multitask_transfer")
    setup = r["setup"]
    sizes = ", ".join(f"{task} {n:,}" for task, n in setup["sizes"].items())
    tested = ", ".join(f"{task} {n}" for task, n in setup["test_items_per_task"].items())
    lines = [
        f"Measured on {r['measured_on']}, {r['date']}, {duration(r['seconds'])}: training examples {sizes}; "
        f"{setup['updates']} updates of {setup['batch_size']} at lr {setup['learning_rate']:g} for every model; "
        f"{len(setup['seeds'])} seeds; test items {tested} (seeds and items resampled together); the "
        f"{len(r['comparisons'])} paired comparisons read together with Holm's correction.",
        "",
        "| task | start | alone | together, T = 1 | together, T = inf |",
        "|---|---|---|---|---|",
    ]
    for task, accuracy in r["accuracy"].items():
        cells = [f"{accuracy['start']:.1%}"] + [
            _interval(accuracy[config]).replace("95% CI ", "")
            for config in ("alone", "together, T = 1", "together, T = inf")
        ]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison | task | difference | verdict | Holm |", "|---|---|---|---|---|"]
    for c in r["comparisons"]:
        d = c["difference"]
        lines.append(
            f"| {c['comparison']} | {c['task']} | {100 * d['value']:+.1f} points [{100 * d['low']:+.1f}, "
            f"{100 * d['high']:+.1f}] | {c['verdict']} | **{c['holm_verdict']}** |"
        )
    return "\n".join(lines)


def peft_rates() -> str:
    """Lesson 11's learning rates: each method's grid, scored on validation items over seeds, and the choice."""
    r = _load("peft_rates")
    on = r["measured_on"]
    lines = [
        f"Measured on {machine(on)}, {on['date']}; "
        + ", ".join(
            f"{part} part {duration(r['part_seconds'][part]) if part in r.get('part_seconds', {}) else 'not timed'}"
            for part in ("minilm", "smollm")
        )
        + f"; chosen on {r['chosen_on']} items only "
        "(mean over seeds; seeds and items resampled together for the intervals).",
        "",
        "| model | method | learning rate | validation score | minus the chosen rate | chosen |",
        "|---|---|---|---|---|---|",
    ]
    for key, model, items, unit in [
        ("minilm", "MiniLM", "validation_size", "accuracy"),
        ("smollm", "SmolLM2", "validation", "exact match"),
    ]:
        part = r[key]
        n = part[items] if isinstance(part[items], int) else sum(part[items].values())
        for method, grid in part["methods"].items():
            for name, candidate in grid["candidates"].items():
                chosen = candidate["learning_rate"] == grid["chosen"]
                versus = candidate["minus_chosen"]
                difference = (
                    "—"
                    if versus is None
                    else f"{_recorded_value({'kind': 'PairedComparison', **versus})} {versus['verdict']}"
                )
                score = _recorded_value({"kind": "Interval", **candidate["validation_score"]})
                mark = ("**chosen**" + ("" if grid["bracketed"] else " (at the grid's edge)")) if chosen else ""
                lines.append(
                    f"| {model} ({n} validation items, {len(part['seeds'])} seeds) | {_english(method)} | {name} | "
                    f"{unit} {score} | {difference} | {mark} |"
                )
    return "\n".join(lines)


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _recorded_value(entry: dict) -> str:
    """A record of ``env.record`` as one cell: the value and its interval, or the difference and its interval."""
    kind = entry["kind"]
    if kind == "Interval":
        return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"
    if kind == "SpeedUp":
        r = entry["ratio"]
        return f"×{r['value']:.2f} [×{r['low']:.2f}, ×{r['high']:.2f}]"
    if kind in ("PairedComparison", "IndependentComparison"):
        d = entry["difference"]
        return f"{_signed(d['value'])} [{_signed(d['low'])}, {_signed(d['high'])}]"
    if kind == "McNemarTest":
        return f"{entry['a_only']} vs {entry['b_only']} discordant items"
    if kind == "number":
        value = entry["value"]
        return "—" if value is None else f"{value:.4g}"
    return str(entry["value"])


def _items(entry: dict) -> str:
    if "n_a" in entry:
        return f"{entry['n_a']} / {entry['n_b']}"
    return str(entry.get("n", "—"))


def lesson_results() -> str:
    """One table per lesson and kind of machine, from ``lessons.json``: what each lesson's summary recorded."""
    record = _load("lessons")
    sections = []
    for key in sorted(record, key=lambda k: (not k.endswith("/fp32"), k)):  # fp32, the budget's reference, first
        for notebook in sorted(record[key]):
            run = record[key][notebook]
            rows = [
                f"### `{notebook}` — {key.split('/')[0]} mode, {run['measured_on']}; {run['date']}, "
                f"{duration(run['seconds'])}",
                "",
                "| record | value [95 % interval] | unit | verdict | Holm | p | items | seeds |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for name, entry in run["records"].items():
                p = entry.get("p_value")
                rows.append(
                    f"| {name} | {_recorded_value(entry)} | {entry.get('unit', '')} | {entry.get('verdict', '')} | "
                    f"{entry.get('holm_verdict', '')} | {'' if p is None else f'{p:.3g}'} | {_items(entry)} | "
                    f"{entry.get('seeds', '')} |"
                )
            sections.append("\n".join(rows))
    return (
        "\n\n".join(sections)
        if sections
        else "No lesson recorded yet: run `python benchmarks/course_times.py --mode full`."
    )


def grading() -> str:
    record = _load("grading")
    lines = [
        "| class | autograded notebooks | wall time | per student | per autograded notebook | measured on |",
        "|---|---|---|---|---|---|",
    ]
    for key in sorted(record):
        r = record[key]
        where = machine(
            {**r, "device": "cpu", "precision": r.get("precision_override") or "auto precision", "threads": 2}
        )
        sandbox = r.get("sandbox", "none (graded before the sandbox existed)")
        if r.get("confinement"):
            sandbox += f" ({r['confinement']} limits, signed grader report)"
        lines.append(
            f"| {r['students']} students, `--jobs {r['jobs']}`, sandbox {sandbox} | {r['autograded_notebooks']} | "
            f"{duration(r['seconds'])} | {r['seconds_per_student']:.1f} s | "
            f"{r['seconds_per_autograded_notebook']:.2f} s | {where}; {r['date']} |"
        )
    return "\n".join(lines)


def test_times() -> str:
    record = _load("test_times")
    lines = ["| check | wall time | target | result | measured on |", "|---|---|---|---|---|"]
    for name in ("make quick", ".ci/run"):
        if name not in record:
            continue
        r = record[name]
        result = "passed" if r["exit_status"] == 0 else f"FAILED (exit {r['exit_status']})"
        met = "met" if r["exit_status"] == 0 and r["seconds"] <= r["target_seconds"] else "not met"
        where = machine({**r, "device": "cpu", "precision": "both precisions" if name == ".ci/run" else "auto"})
        lines.append(
            f"| `{name}` | {duration(r['seconds'])} | {duration(r['target_seconds'])} ({met}) | {result} | "
            f"{where}; {r['date']} |"
        )
    return "\n".join(lines)


TABLES = {
    "course-times": course_times,
    "test-times": test_times,
    "grading": grading,
    "lesson-results": lesson_results,
    "bert-benchmark": bert_benchmark,
    "instruction-benchmark": instruction_benchmark,
    "peft-benchmark": peft_benchmark,
    "peft-rates": peft_rates,
    "warmup-benchmark": warmup_benchmark,
    "multitask-benchmark": multitask_benchmark,
}


def render(readme: str) -> str:
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"a document names an unknown table {name!r}; known: {', '.join(TABLES)}")
        return f"{match.group(1)}{TABLES[name]()}\n{match.group(4)}"

    return BLOCK.sub(replace, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated table is out of date")
    args = parser.parse_args()
    stale = []
    for document in DOCUMENTS:
        current = document.read_text()
        fresh = render(current)
        if fresh == current:
            continue
        stale.append(document.name)
        if not args.check:
            document.write_text(fresh)
    names = ", ".join(document.name for document in DOCUMENTS)
    if args.check:
        if stale:
            sys.exit(
                f"{', '.join(stale)}: tables out of date with benchmarks/results: run python benchmarks/readme_tables.py"
            )
        print(f"{names}: tables match benchmarks/results")
        return
    print(f"tables rewritten from benchmarks/results ({', '.join(stale) or 'nothing changed'})")


if __name__ == "__main__":
    main()
