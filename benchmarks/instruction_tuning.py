"""Benchmark of lesson 04: training tokens/s of SmolLM2, and the notebook's before/after in default mode.

1. Training tokens/s on identical batches of instruction examples (batch 4):
   full fine-tuning, and the notebook's CPU choice (last 10 of 30 blocks,
   embeddings frozen).
2. ``course/04_gpt_instruction_tuning.ipynb`` executed in default mode in a
   fresh kernel: its wall time and the results it saves
   (``course/outputs/04_instruction_tuning/results.json``).

Run from the repository root (about 15 minutes on 2 CPU cores):

    python benchmarks/instruction_tuning.py --out benchmarks/results/instruction_tuning.json
"""

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from helpers import setup  # noqa: E402
from helpers.training.causal_lm import instruction_collator, tokenize_instructions  # noqa: E402
from helpers.training.freezing import freeze_embeddings, optimizer_for, unfreeze_all, unfreeze_last_layers  # noqa: E402
from helpers.data.instructions import instruction_dataset  # noqa: E402
from helpers.models import load_causal_lm  # noqa: E402
from ftcourse.runner import run_notebook  # noqa: E402
from helpers.training.loops import time_training_steps  # noqa: E402

NOTEBOOK = ROOT / "course" / "04_gpt_instruction_tuning.ipynb"
RESULTS = ROOT / "course" / "outputs" / "04_instruction_tuning" / "results.json"


def tokens_per_second(env, steps: int) -> dict:
    base, tokenizer = load_causal_lm("smollm2-135m", device=env.device)
    data = tokenize_instructions(instruction_dataset({"train": steps + 1}, seed=env.seed)["train"], tokenizer)
    batches = list(DataLoader(data, batch_size=4, collate_fn=instruction_collator(tokenizer)))[: steps + 1]
    result = {}
    for name, freeze in [("full fine-tuning", unfreeze_all),
                         ("last 10 blocks, embeddings frozen", lambda m: (unfreeze_last_layers(m, 10), freeze_embeddings(m)))]:
        torch.manual_seed(env.seed)
        model = copy.deepcopy(base)
        freeze(model)
        seconds_per_step = time_training_steps(model, batches, optimizer_for(model, lr=1e-5), steps, env.device,
                                               env.precision)
        tokens = sum(int(batch["attention_mask"].sum()) for batch in batches[1:])  # the first step is not timed
        seconds = seconds_per_step * steps
        result[name] = tokens / seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per configuration")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    env = setup(seed=42, fast=False)
    speed = tokens_per_second(env, args.steps)
    os.environ["FTCOURSE_FAST"] = "0"  # the kernel inherits it: default mode
    RESULTS.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        run = run_notebook(NOTEBOOK, Path(folder))
    if run.status != "passed":
        sys.exit(f"the notebook failed: {run.detail}")
    notebook = json.loads(RESULTS.read_text())
    results = {"device": env.device, "precision": env.precision.name, "threads": env.threads,
               "training_tokens_per_second": speed, "notebook_seconds": run.seconds, "notebook": notebook}
    before, after = notebook["before"], notebook["after"]
    print("\nmeasure                                              value")
    print("-" * 64)
    for name, value in speed.items():
        print(f"training tokens/s, {name:<34} {value:.0f}")
    print(f"notebook 04, default mode, wall time                 {run.seconds / 60:.1f} min")
    print(f"notebook training ({notebook['train_examples']} examples, {notebook['updates']} updates)      "
          f"{notebook['train_seconds']:.0f} s, {notebook['train_tokens_per_second']:.0f} tokens/s")
    for task in ("sentiment", "topic", "describe", "qa", "all"):
        print(f"{task:>9}: exact match {before['exact_match'][task]:.3f} -> {after['exact_match'][task]:.3f}, "
              f"ROUGE-L {before['rouge_l'][task]:.3f} -> {after['rouge_l'][task]:.3f}, "
              f"perplexity {before['perplexité'][task]:.1f} -> {after['perplexité'][task]:.1f}")
    for task in ("sentiment", "topic"):
        print(f"{task:>9}: label named in the answer {before['label_in_answer'][task]:.3f} -> "
              f"{after['label_in_answer'][task]:.3f}")
    general = notebook["general_perplexity"]
    print("general Wikipedia perplexity: " + ", ".join(f"{k} {v:.2f}" for k, v in general.items()))
    source = notebook["labels_input_ids"]["exact_match"]
    print(f"labels = input_ids: exact match sentiment {source['sentiment']:.3f}, topic {source['topic']:.3f}; "
          f"response perplexity {notebook['labels_input_ids_response_perplexity']:.1f} "
          f"(response-only labels: {after['perplexité']['all']:.1f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
