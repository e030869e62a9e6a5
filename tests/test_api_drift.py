"""API drift: every class, function and keyword argument the course uses from transformers, peft and trl exists.

The next breaking release of a fast-moving library (a renamed ``TrainingArguments``
field, SFTTrainer's ``tokenizer`` that became ``processing_class``, the removed
``max_seq_length``) fails here, with the missing name and the installed
version, instead of inside a student's notebook. No model is loaded.

Two sources of names: the lists below (what ``helpers/`` passes through
``**kwargs`` and dicts), and a scan of ``helpers/`` and the notebooks for the
keyword arguments of direct calls (so a notebook that starts using a new
``TrainingArguments`` field is checked without editing this file).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata
import inspect
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (module, name) of what the course imports.
IMPORTS = [
    ("transformers", "TrainingArguments"),
    ("transformers", "Trainer"),
    ("transformers", "EarlyStoppingCallback"),
    ("transformers", "DataCollatorWithPadding"),
    ("transformers", "DataCollatorForSeq2Seq"),
    ("transformers", "PreTrainedModel"),
    ("transformers", "PreTrainedTokenizerBase"),
    ("transformers.trainer_pt_utils", "LengthGroupedSampler"),
    ("transformers.trainer_callback", "PrinterCallback"),
    ("transformers", "TrainerCallback"),
    ("transformers", "AutoModelForCausalLM"),
    ("transformers", "BitsAndBytesConfig"),  # helpers.training.adaptation.qlora_training_step (CUDA only)
    ("peft", "prepare_model_for_kbit_training"),
    ("peft", "LoraConfig"),
    ("peft", "TaskType"),
    ("peft", "PeftModel"),
    ("peft", "get_peft_model"),
    ("trl", "SFTConfig"),
    ("trl", "SFTTrainer"),
    ("trl", "DPOConfig"),  # helpers.training.preference (issue 34)
    ("trl", "DPOTrainer"),
    ("trl", "GRPOConfig"),  # helpers.training.preference.grpo_config_for (issue 34)
    ("trl", "GRPOTrainer"),
    ("trl.experimental.cpo", "CPOConfig"),  # SimPO (simpo_config_for): an experimental module, whose path may move
    ("trl.experimental.cpo", "CPOTrainer"),
]

# Keyword arguments the course passes, by callable: "module:Name" or "module:Name.method".
KEYWORDS = {
    "transformers:TrainingArguments": [
        # helpers.device.Precision.trainer_kwargs and helpers.training.trainers.course_training_arguments' shared dict
        "bf16",
        "fp16",
        "use_cpu",
        "output_dir",
        "per_device_eval_batch_size",
        "max_grad_norm",
        "lr_scheduler_type",
        "seed",
        "report_to",
        "disable_tqdm",
        "dataloader_pin_memory",
        # helpers.training.causal_lm.train_causal_lm, helpers.training.search, classifier_runs
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "num_train_epochs",
        "warmup_steps",
        "weight_decay",
        "logging_steps",
        "logging_strategy",
        "eval_strategy",
        "eval_steps",
        "train_sampling_strategy",
        "save_strategy",
        "save_total_limit",
        "save_only_model",
        "load_best_model_at_end",
        "metric_for_best_model",
        "max_steps",
    ],
    "transformers:Trainer": [
        "model",
        "args",
        "data_collator",
        "train_dataset",
        "eval_dataset",
        "processing_class",
        "compute_metrics",
        "callbacks",
        "model_init",
        "compute_loss_func",
    ],
    "transformers:Trainer.compute_loss": ["model", "inputs", "return_outputs", "num_items_in_batch"],
    "transformers:Trainer.hyperparameter_search": ["hp_space", "backend", "n_trials", "direction"],
    "transformers:EarlyStoppingCallback": ["early_stopping_patience", "early_stopping_threshold"],
    "transformers:DataCollatorWithPadding": ["tokenizer", "padding", "max_length"],
    "transformers:DataCollatorForSeq2Seq": ["tokenizer", "padding", "label_pad_token_id"],
    "transformers.trainer_pt_utils:LengthGroupedSampler": ["batch_size", "lengths", "generator"],
    "peft:LoraConfig": ["r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "task_type"],
    "peft:get_peft_model": ["model", "peft_config"],
    "peft:PeftModel.from_pretrained": ["model", "model_id", "is_trainable"],
    "peft:PeftModel.save_pretrained": ["save_directory"],
    "trl:SFTConfig": [
        # helpers.training.lora.sft_config_for
        "output_dir",
        "max_steps",
        "learning_rate",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "weight_decay",
        "lr_scheduler_type",
        "max_grad_norm",
        "seed",
        "max_length",
        "packing",
        "padding_free",
        "pad_to_multiple_of",
        "completion_only_loss",
        "assistant_only_loss",
        "logging_steps",
        "save_strategy",
        "report_to",
        "disable_tqdm",
        "dataloader_pin_memory",
        "bf16",
        "fp16",
        "use_cpu",
    ],
    "trl:SFTTrainer": [
        "model",
        "args",
        "train_dataset",
        "eval_dataset",
        "processing_class",
        "data_collator",
        "callbacks",
    ],
    "trl:DPOConfig": [
        # helpers.training.preference.dpo_config_for (the shared part is checked under TrainingArguments)
        "beta",
        "loss_type",
        "max_length",
        "pad_to_multiple_of",
        "precompute_ref_log_probs",
        "loss_weights",  # RPO (DPO + NLL): loss_type=["sigmoid", "sft"]
        "max_steps",
        "learning_rate",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "weight_decay",
        "logging_steps",
        "save_strategy",
        "bf16",
        "fp16",
        "use_cpu",
    ],
    "trl:DPOTrainer": ["model", "ref_model", "args", "train_dataset", "eval_dataset", "processing_class"],
    "trl:GRPOConfig": [
        # helpers.training.preference.grpo_config_for (the shared part is checked under TrainingArguments)
        "num_generations",
        "max_completion_length",
        "temperature",
        "beta",
        "pad_to_multiple_of",
        "max_steps",
        "learning_rate",
        "per_device_train_batch_size",
        "logging_steps",
        "save_strategy",
        "bf16",
        "fp16",
        "use_cpu",
    ],
    "trl:GRPOTrainer": ["model", "reward_funcs", "args", "train_dataset", "processing_class"],
    "trl.experimental.cpo:CPOConfig": [
        # helpers.training.preference.simpo_config_for
        "loss_type",
        "cpo_alpha",
        "beta",
        "simpo_gamma",
        "max_length",
        "max_steps",
        "learning_rate",
        "per_device_train_batch_size",
        "warmup_steps",
        "bf16",
        "fp16",
        "use_cpu",
    ],
    "trl.experimental.cpo:CPOTrainer": ["model", "args", "train_dataset", "processing_class"],
    "transformers:BitsAndBytesConfig": [
        "load_in_4bit",
        "bnb_4bit_quant_type",
        "bnb_4bit_use_double_quant",
        "bnb_4bit_compute_dtype",
    ],
    "peft:prepare_model_for_kbit_training": ["model", "use_gradient_checkpointing"],
    # helpers.training.adaptation.TrainingStateProbe reads these from the callback's keyword arguments
    "transformers:TrainerCallback.on_optimizer_step": ["args", "state", "control"],
    "transformers:TrainerCallback.on_step_end": ["args", "state", "control"],
}

# Methods the course calls on objects (existence only).
METHODS = {
    "peft:PeftModel": [
        "save_pretrained",
        "from_pretrained",
        "print_trainable_parameters",
        "disable_adapter",
        "get_base_model",
    ],
    "peft:LoraModel": ["merge_and_unload"],  # PeftModel forwards it to its LoRA base_model
    "transformers:Trainer": ["train", "evaluate", "predict", "hyperparameter_search", "remove_callback"],
    "transformers:PreTrainedModel": ["get_memory_footprint", "get_output_embeddings", "save_pretrained"],
}

# Calls whose keyword arguments are collected from helpers/ and the notebooks, and where they end up.
SCANNED = {
    "TrainingArguments": "transformers:TrainingArguments",
    "course_training_arguments": "transformers:TrainingArguments",
    "Trainer": "transformers:Trainer",
    "EarlyStoppingCallback": "transformers:EarlyStoppingCallback",
    "DataCollatorWithPadding": "transformers:DataCollatorWithPadding",
    "DataCollatorForSeq2Seq": "transformers:DataCollatorForSeq2Seq",
    "LengthGroupedSampler": "transformers.trainer_pt_utils:LengthGroupedSampler",
    "LoraConfig": "peft:LoraConfig",
    "SFTConfig": "trl:SFTConfig",
    "SFTTrainer": "trl:SFTTrainer",
    "DPOConfig": "trl:DPOConfig",
    "DPOTrainer": "trl:DPOTrainer",
    "GRPOConfig": "trl:GRPOConfig",
    "GRPOTrainer": "trl:GRPOTrainer",
    "CPOConfig": "trl.experimental.cpo:CPOConfig",
    "CPOTrainer": "trl.experimental.cpo:CPOTrainer",
}
# course_training_arguments' own parameters (not TrainingArguments fields).
OWN_PARAMETERS = {"course_training_arguments": {"output_dir", "precision", "seed", "progress"}}


def _version(module: str) -> str:
    distribution = module.split(".")[0]
    try:
        return f"{distribution} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{distribution} (not installed)"


def _resolve(target: str):
    module_name, _, path = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as error:
        pytest.fail(f"cannot import {module_name} ({_version(module_name)}): {error}")
    for part in path.split("."):
        if not hasattr(obj, part):
            pytest.fail(f"{module_name}.{path}: {part!r} is gone in {_version(module_name)}")
        obj = getattr(obj, part)
    return obj


def _accepted(obj) -> tuple[set[str], bool]:
    """Keyword names ``obj`` accepts (dataclass fields or signature parameters) and whether it takes ``**kwargs``."""
    function = obj.__init__ if inspect.isclass(obj) else obj
    parameters = inspect.signature(function).parameters.values()
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        # a dataclass's fields; a class with its own __init__ (BitsAndBytesConfig) takes those too, and its
        # **kwargs only store unknown names as attributes: never count them as accepting everything
        return names | {field.name for field in dataclasses.fields(obj) if field.init}, False
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def _missing(target: str, keywords) -> list[str]:
    names, var_keyword = _accepted(_resolve(target))
    return [] if var_keyword else sorted(set(keywords) - names)


def _scanned_keywords() -> dict[str, set[str]]:
    """Keyword arguments of the direct calls in :data:`SCANNED`, in helpers/ and in the course's notebooks."""
    found: dict[str, set[str]] = {}

    def scan(source: str) -> None:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in SCANNED:
                keywords = {k.arg for k in node.keywords if k.arg} - OWN_PARAMETERS.get(name, set())
                found.setdefault(SCANNED[name], set()).update(keywords)

    for path in sorted((ROOT / "helpers").rglob("*.py")):
        scan(path.read_text(encoding="utf-8"))
    for path in sorted((ROOT / "course").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                scan("\n".join(line for line in lines if not line.lstrip().startswith(("%", "!"))))
    return found


@pytest.mark.parametrize(("module", "name"), IMPORTS, ids=[f"{m}.{n}" for m, n in IMPORTS])
def test_imports(module, name):
    _resolve(f"{module}:{name}")


@pytest.mark.parametrize("target", sorted(KEYWORDS))
def test_keyword_arguments(target):
    missing = _missing(target, KEYWORDS[target])
    assert not missing, (
        f"{target.replace(':', '.')} no longer accepts {missing} in "
        f"{_version(target.partition(':')[0])}: the course passes them"
    )


@pytest.mark.parametrize("target", sorted(METHODS))
def test_methods(target):
    cls = _resolve(target)
    missing = [name for name in METHODS[target] if not hasattr(cls, name)]
    assert not missing, f"{target.replace(':', '.')} has no {missing} in {_version(target.partition(':')[0])}"


def test_keywords_used_in_helpers_and_notebooks():
    found = _scanned_keywords()
    assert found.get("transformers:TrainingArguments"), "the scan found no TrainingArguments(...) call: is it broken?"
    problems = [
        f"{target.replace(':', '.')} lacks {missing} ({_version(target.partition(':')[0])})"
        for target, keywords in sorted(found.items())
        if (missing := _missing(target, keywords))
    ]
    assert not problems, "keyword arguments used in helpers/ or course/ are gone: " + "; ".join(problems)


def test_removed_arguments_stay_removed():
    """The names the course deliberately avoids are really gone (else the lesson's warning about them is stale)."""
    sft_fields, _ = _accepted(_resolve("trl:SFTConfig"))
    assert "max_seq_length" not in sft_fields, "SFTConfig accepts max_seq_length again: update course/11_peft.ipynb"
    trainer_names, _ = _accepted(_resolve("trl:SFTTrainer"))
    assert "tokenizer" not in trainer_names, "SFTTrainer accepts tokenizer= again: update course/11_peft.ipynb"
    dpo_fields, _ = _accepted(_resolve("trl:DPOConfig"))
    gone = {"max_prompt_length", "max_completion_length"} & dpo_fields  # removed in early 2026 (issue 34)
    assert not gone, (
        f"DPOConfig accepts {sorted(gone)} again: helpers.training.preference.dpo_config_for says they are gone"
    )


def test_checkpointing_flag_exists():
    """``sft_config_for`` turns activation checkpointing off under its current name (``activation_checkpointing``
    in transformers 5.24, ``gradient_checkpointing`` a deprecated alias)."""
    from helpers.training.lora import checkpointing_field

    fields, _ = _accepted(_resolve("trl:SFTConfig"))
    assert checkpointing_field() in fields, f"SFTConfig has no {checkpointing_field()} field ({_version('trl')})"
    from trl import DPOConfig

    dpo_fields, _ = _accepted(_resolve("trl:DPOConfig"))
    assert checkpointing_field(DPOConfig) in dpo_fields, f"DPOConfig has no {checkpointing_field(DPOConfig)} field"


def test_sft_config_defaults_the_course_overrides():
    """TRL's defaults that :func:`helpers.training.lora.sft_config_for` sets explicitly, and why.

    If one changes, the override may have become unneeded: the lesson says what
    the defaults are.
    """
    from trl import SFTConfig

    defaults = {field.name: field.default for field in dataclasses.fields(SFTConfig)}
    version = _version("trl")
    assert defaults["gradient_checkpointing"] is True, f"SFTConfig no longer checkpoints by default ({version})"
    assert defaults["completion_only_loss"] is None, f"completion_only_loss default changed ({version})"
    assert defaults["packing"] is False, f"SFTConfig packs by default ({version})"
