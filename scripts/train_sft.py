"""Lesson 04's recipe as a script: SmolLM2-135M-Instruct tuned on instructions with Trainer, on one or several processes.

    python scripts/train_sft.py --output-dir runs/sft
    torchrun --nproc_per_node 2 scripts/train_sft.py --output-dir runs/sft
    accelerate launch --config_file scripts/accelerate/one_node_gpus.yaml scripts/train_sft.py --output-dir runs/sft

The recipe is :func:`helpers.training.reference.instruction_model` (the
lesson's data, prompt masked, the last ``--trainable-layers`` blocks trained,
Trainer through :func:`helpers.training.causal_lm.train_causal_lm`, whose
configuration takes ``use_cpu=True`` on a CPU so that several processes share
their gradients over gloo). ``--batch-size`` is per process. The main process
writes the model, its tokenizer and ``run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

TASKS = ("sentiment", "topic", "describe", "qa")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True, help="where the tuned model and run.json go")
    for task, default in zip(TASKS, (296, 88, 8, 8)):
        parser.add_argument(f"--{task}", type=int, default=default, help=f"training examples of the {task} task")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per process and per step")
    parser.add_argument("--trainable-layers", type=int, default=10, help="last blocks trained (embeddings frozen)")
    parser.add_argument("--lr", type=float, default=1.6e-3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", default=None, help="fp32, bf16, fp16 or auto (default: FTCOURSE_PRECISION)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.trainable_layers < 1 or args.epochs < 1:
        parser.error("--batch-size, --trainable-layers and --epochs must be at least 1")
    if not any(getattr(args, task) for task in TASKS) or any(getattr(args, task) < 0 for task in TASKS):
        parser.error("the task sizes must be >= 0 and not all 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from helpers import setup
    from helpers.training.distributed import launched_world_size
    from helpers.training.reference import instruction_model

    env = setup(seed=args.seed, verbose=False, precision=args.precision)  # the notebooks' device and precision
    device, precision = env.device, env.precision
    model, tokenizer, info = instruction_model(
        {task: getattr(args, task) for task in TASKS},
        seed=args.seed,
        lr=args.lr,
        trainable_last_layers=args.trainable_layers,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=device,
        precision=precision,
        cache=False,
        progress=False,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        run = {
            "arguments": vars(args),
            "processes": launched_world_size(),
            "effective_batch": args.batch_size * launched_world_size(),
            "device": device,
            "precision": precision.name,
            "training_seconds": info["training_seconds"],
        }
        Path(args.output_dir, "run.json").write_text(json.dumps(run, indent=2))
        print(json.dumps(run))


if __name__ == "__main__":
    main()
