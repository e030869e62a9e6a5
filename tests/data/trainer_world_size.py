"""Run under torchrun by tests/test_distributed.py: build TrainingArguments and apply the course's guard.

``default`` and ``use_cpu`` apply the guard; ``unguarded`` skips it and trains two steps with Trainer's
default (``use_cpu=False``) on a machine without a GPU, then prints what this process did: the processes
Trainer counts, the batches it read, a digest of its first batch, whether the model was wrapped in DDP and
a digest of the final weights.
"""

import hashlib
import sys

import torch
from transformers import TrainingArguments

from helpers.training.distributed import check_trainer_is_distributed

mode, output_dir = sys.argv[1], sys.argv[2]
args = TrainingArguments(
    output_dir=output_dir,
    use_cpu=mode == "use_cpu",
    report_to="none",
    per_device_train_batch_size=4,
    max_steps=2,
    train_sampling_strategy="sequential",
    disable_tqdm=True,
    save_strategy="no",
)
if mode != "unguarded":
    check_trainer_is_distributed(args)
    print(f"rank {args.process_index} of {args.world_size}: distributed", flush=True)
else:
    from transformers import DataCollatorWithPadding, Trainer

    from helpers.data.batching import tokenize_for_classification
    from helpers.data.loaders import rotten_tomatoes
    from helpers.models.loading import load_classifier
    from helpers.training.distributed import disable_dropout

    model, tokenizer = load_classifier("minilm", num_labels=2, seed=42, pooling="mean")
    disable_dropout(model)
    reviews = rotten_tomatoes(seed=42)["train"].select(range(16))
    data = tokenize_for_classification(reviews, tokenizer, max_length=32)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    loader = trainer.get_train_dataloader()
    first = hashlib.sha256(next(iter(loader))["input_ids"].numpy().tobytes()).hexdigest()[:12]
    trainer.train()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy().tobytes()
    print(
        f"counted={args.world_size} batches={len(loader)} first={first} ddp={type(trainer.model_wrapped).__name__}"
        f" weights={hashlib.sha256(weights).hexdigest()[:12]}",
        flush=True,
    )
