"""Every library entry point that takes a precision, run in fp32 and in bf16 on this CPU.

The precision reaches the code in two ways only: ``Precision.autocast`` in the explicit loops (training,
evaluation, timing, gradients, the LR finder, the linear probe) and ``Precision.trainer_kwargs`` in the
``Trainer``/TRL configurations (classifier runs, causal-LM runs, SFT). Each is run here in both precisions
with the tiny random models of tests/conftest.py, and each run is checked to have really computed in that
precision (the dtype a linear layer's output has during the run), to have trained (finite losses, weights
moved) and to leave the weights in fp32. That is what lets `make test` execute the notebooks once, in the
machine's native precision, and still test the code of both (Makefile, ``test``).
"""

import contextlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from helpers.data.batching import tokenize_for_classification
from helpers.data.causal_lm import tokenize_instructions
from helpers.data.loaders import rotten_tomatoes
from helpers.device import FP32, Precision
from helpers.training.accumulation import batch_gradients, saved_activation_bytes
from helpers.training.freezing import optimizer_for
from helpers.training.loops import evaluate, time_training_steps, train_loop

BF16 = Precision("bf16", "test", torch.bfloat16, device="cpu")
PRECISIONS = [pytest.param(FP32, id="fp32"), pytest.param(BF16, id="bf16")]
EXPECTED_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


@contextlib.contextmanager
def linear_output_dtypes(model: torch.nn.Module):
    """The dtypes of every output of the model's first ``nn.Linear`` while the block runs (a set, filled in)."""
    seen: set[torch.dtype] = set()
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    try:
        yield seen
    finally:
        handle.remove()


def classification_loader(tokenizer, n=16, batch_size=4):
    data = tokenize_for_classification(rotten_tomatoes(seed=0)["train"].select(range(n)), tokenizer, max_length=24)
    return DataLoader(data, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_trained_in_fp32_weights(model, before):
    assert all(p.dtype == torch.float32 for p in model.parameters())  # bf16 is for the arithmetic, not storage
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_explicit_loops_compute_in_the_precision_asked(precision, tiny_classifier):
    model, tokenizer = tiny_classifier
    loader = classification_loader(tokenizer)
    before = weights(model)
    with linear_output_dtypes(model) as seen:
        history = train_loop(model, loader, optimizer_for(model, lr=1e-4), precision=precision, progress=False)
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert np.isfinite(history["loss"]).all()
    assert_trained_in_fp32_weights(model, before)

    with linear_output_dtypes(model) as seen:
        result = evaluate(model, loader, precision=precision)
    assert seen == {EXPECTED_DTYPE[precision.name]} and np.isfinite(result["loss"])
    assert result["logits"].dtype == np.float32  # what callers compute metrics from

    with linear_output_dtypes(model) as seen:
        gradients = batch_gradients(model, next(iter(loader)), accumulation_steps=2, precision=precision)
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in gradients.values())

    with linear_output_dtypes(model) as seen:
        assert saved_activation_bytes(model, next(iter(loader)), precision=precision) > 0
    assert seen == {EXPECTED_DTYPE[precision.name]}

    with linear_output_dtypes(model) as seen:
        seconds = time_training_steps(model, loader, optimizer_for(model, lr=1e-4), num_steps=2, precision=precision)
    assert seen == {EXPECTED_DTYPE[precision.name]} and seconds > 0


@pytest.mark.parametrize("precision", PRECISIONS)
def test_lr_finder_and_linear_probe_compute_in_the_precision_asked(precision, tiny_classifier):
    from helpers.training.lr_finder import lr_range_test
    from helpers.training.probing import head_inputs

    model, tokenizer = tiny_classifier
    loader = classification_loader(tokenizer)
    before = weights(model)
    with linear_output_dtypes(model) as seen:
        found = lr_range_test(
            model,
            loader,
            optimizer_for(model, lr=1e-4),
            min_lr=1e-6,
            max_lr=1e-2,
            num_steps=5,
            precision=precision,
            progress=False,
        )
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert np.isfinite(found.losses).all() and len(found.losses) == 5
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # restored

    with linear_output_dtypes(model) as seen:
        features = head_inputs(model, tokenizer, ["a fine film", "a dull mess"], precision=precision)
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert features.dtype == np.float32 and features.shape == (2, model.classifier.in_features)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_trainer_runs_compute_in_the_precision_asked_and_release_it(precision, tiny_classifier, tmp_path):
    from helpers.training.classifier_runs import train_classifier

    model, tokenizer = tiny_classifier
    train = tokenize_for_classification(rotten_tomatoes(seed=0)["train"].select(range(16)), tokenizer, max_length=24)
    before = weights(model)
    with linear_output_dtypes(model) as seen:
        run = train_classifier(
            model, tokenizer, train, tmp_path, num_epochs=1, batch_size=8, precision=precision, progress=False
        )
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert np.isfinite(run.trainer.state.log_history[-1]["train_loss"])
    assert_trained_in_fp32_weights(model, before)
    with linear_output_dtypes(model) as seen, torch.no_grad():  # afterwards, the model is scored as stored
        model(**next(iter(classification_loader(tokenizer, n=4))))
    assert seen == {torch.float32}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_causal_lm_and_sft_runs_compute_in_the_precision_asked(precision, tiny_lm, tmp_path):
    from trl import SFTTrainer

    from helpers.data.instructions import instruction_dataset
    from helpers.training.causal_lm import train_causal_lm
    from helpers.training.lora import prompt_completion_dataset, sft_config_for

    model, tokenizer = tiny_lm
    rows = instruction_dataset({"train": 2, "validation": 0, "test": 0})["train"]
    before = weights(model)
    with linear_output_dtypes(model) as seen:
        trainer, _ = train_causal_lm(
            model,
            tokenizer,
            tokenize_instructions(rows, tokenizer),
            precision,
            str(tmp_path / "lm"),
            batch_size=4,
            progress=False,
        )
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert np.isfinite(trainer.state.log_history[-1]["train_loss"])
    assert_trained_in_fp32_weights(model, before)
    assert model.forward.__func__ is type(model).forward  # given back as it was before training

    # A second run on the same model: it must again compute in the precision asked. (accelerate marks a model
    # as prepared; with the mark left, this bf16 run computed in fp32 without a word.)
    config = sft_config_for(
        tmp_path / "sft", precision, "cpu", max_steps=2, batch_size=4, max_length=128, progress=False
    )
    assert (config.bf16, config.use_cpu) == (precision.name == "bf16", True)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=prompt_completion_dataset(rows, tokenizer, "chat"),
        processing_class=tokenizer,
    )
    before = weights(model)
    with linear_output_dtypes(model) as seen:
        result = trainer.train()
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert_trained_in_fp32_weights(model, before)


def test_the_matrix_covers_every_precision_entry_point():
    """A new function that takes a precision must be added above: the list of those that do is checked here."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "helpers"
    takes_precision = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                if any(arg.arg == "precision" for arg in node.args.args + node.args.kwonlyargs):
                    takes_precision.add(
                        f"{path.relative_to(root.parent).with_suffix('')}.{node.name}".replace("/", ".")
                    )
    covered_here = {
        "helpers.training.loops.train_loop",
        "helpers.training.loops.evaluate",
        "helpers.training.loops.time_training_steps",
        "helpers.training.accumulation.batch_gradients",
        "helpers.training.accumulation.saved_activation_bytes",
        "helpers.training.lr_finder.lr_range_test",
        "helpers.training.probing.head_inputs",
        "helpers.training.classifier_runs.train_classifier",
        "helpers.training.trainers.course_training_settings",  # through train_classifier and sft_config_for
        "helpers.training.causal_lm.train_causal_lm",
        "helpers.training.lora.sft_config_for",
        "helpers.training.preference.reference_logprobs",
    }
    # Callers of the above that add no precision-dependent code of their own (they pass it on).
    passes_it_on = set()
    for name in takes_precision - covered_here:
        module, function = name.rsplit(".", 1)
        source = (root.parent / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        body = ast.get_source_segment(
            source,
            next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == function),
        )
        if ".autocast(" not in body and "trainer_kwargs(" not in body:
            passes_it_on.add(name)
    assert takes_precision - covered_here - passes_it_on == set()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_dpo_reference_and_training_compute_in_the_precision_asked(precision, tiny_lm):
    """The reference's log-probabilities are computed in the precision the policy trains in: at the first
    update the policy is the reference, so its DPO loss is exactly log 2 only if both use the same arithmetic."""
    import math

    from helpers.data.instructions import instruction_dataset
    from helpers.data.preferences import closed_task_pairs
    from helpers.training.preference import reference_logprobs, train_dpo

    model, tokenizer = tiny_lm
    items = instruction_dataset({"train": 4, "validation": 0, "test": 0}, seed=0)["train"]
    pairs = closed_task_pairs(items, tokenizer, style="qa", kinds=["wrong_label"], seed=0)
    with linear_output_dtypes(model) as seen:
        reference = reference_logprobs(model, tokenizer, pairs, precision=precision)
    assert seen == {EXPECTED_DTYPE[precision.name]} and reference[0].dtype == torch.float32
    before = weights(model)
    with linear_output_dtypes(model) as seen:
        history = train_dpo(model, tokenizer, pairs, reference, lr=1e-3, batch_size=4, precision=precision,
                            progress=False)  # fmt: skip
    assert seen == {EXPECTED_DTYPE[precision.name]}
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert_trained_in_fp32_weights(model, before)
