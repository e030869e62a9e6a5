"""Run under torchrun by tests/test_distributed.py: build TrainingArguments and apply the course's guard."""

import sys

from transformers import TrainingArguments

from helpers.training.distributed import check_trainer_is_distributed

args = TrainingArguments(output_dir=sys.argv[2], use_cpu=sys.argv[1] == "use_cpu", report_to="none")
check_trainer_is_distributed(args)
print(f"rank {args.process_index} of {args.world_size}: distributed", flush=True)
