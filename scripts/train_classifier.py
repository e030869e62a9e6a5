"""Lesson 03's recipe as a script: MiniLM fine-tuned on Rotten Tomatoes with Trainer, on one or several processes.

The same file runs under the three launchers (README, "Training on several processes"):

    python scripts/train_classifier.py --output-dir runs/classifier
    torchrun --nproc_per_node 2 scripts/train_classifier.py --output-dir runs/classifier
    accelerate launch --config_file scripts/accelerate/one_node_gpus.yaml scripts/train_classifier.py --output-dir ...

``--batch-size`` is per process: with N processes an update averages N * batch
size examples (the effective batch). On a machine without a GPU the processes
use the gloo backend (``use_cpu=True``, from the course's precision settings);
with GPUs, Trainer takes one GPU per process and nccl. The script refuses a
configuration in which each process would run the whole training alone
(:func:`helpers.training.distributed.check_trainer_is_distributed`). Only the
main process writes the model, with ``run.json`` (the arguments, the number of
processes, the precision and the training time).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True, help="where the trained model and run.json go")
    parser.add_argument(
        "--train-size", type=int, default=2048, help="training reviews (films of the test split excluded)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="examples per process and per step")
    parser.add_argument("--accumulation", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many updates (-1: the epochs)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", default=None, help="fp32, bf16, fp16 or auto (default: FTCOURSE_PRECISION)")
    parser.add_argument("--in-order", action="store_true", help="read the reviews in order, no shuffling")
    parser.add_argument("--no-dropout", action="store_true", help="dropout off (to compare weights across runs)")
    args = parser.parse_args(argv)
    if args.train_size < 2 or args.batch_size < 1 or args.accumulation < 1:
        parser.error("--train-size must be at least 2, --batch-size and --accumulation at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from helpers import setup
    from helpers.data.batching import tokenize_for_classification
    from helpers.data.loaders import rotten_tomatoes, subsample
    from helpers.models.loading import load_classifier
    from helpers.training.distributed import check_trainer_is_distributed, disable_dropout

    env = setup(seed=args.seed, verbose=False, precision=args.precision)  # the notebooks' device and precision
    device, precision = env.device, env.precision
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        train_sampling_strategy="sequential" if args.in_order else "random",
        seed=args.seed,
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        disable_tqdm=True,
        **precision.trainer_kwargs(),
    )
    check_trainer_is_distributed(training_args)

    model, tokenizer = load_classifier(
        "minilm", num_labels=2, id2label={0: "negative", 1: "positive"}, seed=args.seed, pooling="mean"
    )
    if args.no_dropout:
        disable_dropout(model)
    reviews = subsample(rotten_tomatoes(seed=args.seed)["train"], args.train_size, seed=args.seed)
    train = tokenize_for_classification(reviews, tokenizer, max_length=args.max_length)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(args.output_dir)  # the main process writes; the others wait
    if training_args.process_index == 0:
        run = {
            "arguments": vars(args),
            "processes": training_args.world_size,
            "effective_batch": args.batch_size * args.accumulation * training_args.world_size,
            "device": device,
            "precision": precision.name,
            "updates": result.global_step,
            "training_loss": result.training_loss,
            "training_seconds": seconds,
        }
        Path(args.output_dir, "run.json").write_text(json.dumps(run, indent=2))
        print(json.dumps(run))


if __name__ == "__main__":
    main()
