"""Data parallelism on real processes (gloo, loopback): equivalence with one process, the no-sync failure,
and the guard against Trainer's silent one-process-each mode under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.training.distributed import (
    EquivalenceSetup,
    bus_bandwidth_from,
    check_trainer_is_distributed,
    data_parallel_step_times,
    equivalence_runs,
    free_port,
    launched_world_size,
    max_weight_difference,
    projected_step_seconds,
    ring_all_reduce_seconds,
    shard_indices,
    sharded_state_per_rank,
    step_costs,
    token_averaging_runs,
    training_state_per_rank,
    update_difference,
)

ROOT = Path(__file__).resolve().parent.parent


# Tests that start processes (each imports torch and transformers, then loads MiniLM) are slow.
processes = pytest.mark.slow


@pytest.fixture(scope="module")
def runs():
    return equivalence_runs(EquivalenceSetup(batch_size=4, steps=3, world_size=2))


@processes
def test_two_processes_of_b_take_the_steps_of_one_process_of_2b(runs):
    start, weights = runs["start"], runs["weights"]
    reference = weights["one process, batch N·b"]
    for name in ("one process, batch b, N accumulation steps", "by_hand", "ddp"):
        assert update_difference(start, reference, weights[name]) < 1e-3, name  # rounding, not other steps
    for mode in ("by_hand", "ddp"):
        first, second = runs["replicas"][mode]
        assert max_weight_difference(first, second) == 0.0  # the copies never drift apart
    assert max_weight_difference(weights["by_hand"], weights["ddp"]) < 1e-5


@processes
def test_without_the_all_reduce_each_process_trains_its_own_model(runs):
    first, second = runs["replicas"]["no_sync"]
    start, reference = runs["start"], runs["weights"]["one process, batch N·b"]
    assert update_difference(start, reference, first) > 0.1
    assert update_difference(start, first, second) > 0.1


@processes
def test_the_all_reduce_sends_every_gradient_once(runs):
    parameters = sum(tensor.numel() for name, tensor in runs["start"].items() if "position_ids" not in name)
    for rank_timings in runs["timings"]["by_hand"]:
        assert rank_timings["bytes_per_step"] == 4 * parameters  # fp32 gradients, one per trainable weight
        assert len(rank_timings["sync_seconds"]) == runs["setup"]["steps"]


@processes
def test_accelerate_in_an_explicit_loop_takes_the_steps_of_one_process(runs, tmp_path):
    """notebook_launcher forks 2 real processes; each reads a batch of b, the update is that of one batch of 2b.

    Run from a fresh Python process: notebook_launcher refuses to start once an Accelerator exists in the
    calling process, as one does in a test worker that already ran Trainer (a notebook calls it first).
    """
    setup = EquivalenceSetup(**runs["setup"])
    saved = tmp_path / "accelerate.pt"
    code = (
        "import json, sys, torch\n"
        "from helpers.training.distributed import EquivalenceSetup, accelerate_run\n"
        "torch.save(accelerate_run(EquivalenceSetup(**json.loads(sys.argv[1]))), sys.argv[2])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-c", code, json.dumps(runs["setup"]), str(saved)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = torch.load(saved)
    assert (run["processes"], run["distributed_type"], run["updates"]) == (2, "MULTI_CPU", setup.steps)
    assert run["examples_per_process"] == setup.batch_size
    reference = runs["weights"]["one process, batch N·b"]
    assert update_difference(runs["start"], reference, run["weights"]) < 1e-3
    assert update_difference(runs["start"], runs["replicas"]["no_sync"][0], run["weights"]) > 0.1


@processes
def test_token_averaging_gives_the_one_process_loss_and_gradient():
    """Short answers on one process, long ones on the other: the mean of the two means is not the batch's mean."""
    from helpers.data.causal_lm import tokenize_instruction
    from helpers.models.loading import load_causal_lm

    _, tokenizer = load_causal_lm("smollm2-135m")
    short = [tokenize_instruction("Sentiment?\n", answer, tokenizer) for answer in ("positive", "negative")]
    long = [tokenize_instruction("Describe it.\n", "A long answer " * 6, tokenizer)]
    compared = token_averaging_runs([short, long])
    assert compared["tokens_per_process"][0] < compared["tokens_per_process"][1]
    assert compared["token_averaged_loss"] == pytest.approx(compared["one_process_loss"], rel=1e-4)
    assert abs(compared["mean_of_process_means"] - compared["one_process_loss"]) > 0.05
    assert compared["gradient_difference_per_token"] < 1e-4
    assert compared["gradient_difference_per_process"] > 0.05


def test_shards_interleave_and_pad_to_equal_lengths():
    assert shard_indices(5, 0, 2) == [0, 2, 4]
    assert shard_indices(5, 1, 2) == [1, 3, 0]  # padded with the first example: same number of batches
    with pytest.raises(ValueError, match="rank"):
        shard_indices(5, 2, 2)


def test_world_size_comes_from_the_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="whole number"):
        launched_world_size()


def _torchrun(tmp_path, *script_args):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    command += ["--master_port", str(free_port()), str(ROOT / "tests" / "data" / "trainer_world_size.py"), *script_args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@processes
def test_the_guard_refuses_trainer_arguments_that_would_train_each_process_alone(tmp_path):
    refused = _torchrun(tmp_path, "default", str(tmp_path / "out"))
    assert refused.returncode != 0
    assert "each process would run the whole training alone" in refused.stderr
    accepted = _torchrun(tmp_path, "use_cpu", str(tmp_path / "out"))
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert "rank 0 of 2: distributed" in accepted.stdout and "rank 1 of 2: distributed" in accepted.stdout


@processes
def test_unguarded_each_process_runs_the_whole_training_alone(tmp_path):
    """What the guard prevents, for real: 2 processes, each counts 1, reads all 4 batches and ends with the same weights."""
    done = _torchrun(tmp_path, "unguarded", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    reports = sorted(line for line in done.stdout.splitlines() if line.startswith("counted="))
    assert len(reports) == 2 and reports[0] == reports[1]  # the same batches, the same weights: one training twice
    assert (
        reports[0].startswith("counted=1 batches=4 ") and "ddp=BertMeanPoolingForSequenceClassification" in reports[0]
    )


def test_the_guard_lets_a_single_process_through(monkeypatch, tmp_path):
    from transformers import TrainingArguments

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    check_trainer_is_distributed(TrainingArguments(output_dir=str(tmp_path), use_cpu=False, report_to="none"))


def test_the_memory_model_matches_what_one_process_holds():
    """DDP on one process is plain training: the formula equals the bytes measured after an AdamW step."""

    from helpers.models.loading import count_parameters, load_classifier
    from helpers.training.freezing import training_state_bytes

    model, tokenizer = load_classifier("minilm", num_labels=2, seed=0, pooling="mean")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = tokenizer(["A fine film.", "A dull, long film."], return_tensors="pt", padding=True)
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    optimizer.step()
    measured = training_state_bytes(model, optimizer)
    predicted = training_state_per_rank(count_parameters(model), 1, "ddp")
    assert measured == {part: int(value) for part, value in predicted.items()}
    four = {name: training_state_per_rank(1000, 4, name) for name in ("ddp", "zero1", "zero2", "fsdp")}
    assert [sum(state.values()) for state in four.values()] == [16000, 10000, 7000, 4000]
    assert sum(training_state_per_rank(1000, 1, "fsdp", precision="mixed").values()) == 16000  # ZeRO's 16 bytes
    with pytest.raises(ValueError, match="sharding"):
        training_state_per_rank(1000, 4, "zero4")


@processes
def test_fsdp_processes_each_hold_half_of_the_training_state():
    from helpers.models.loading import count_parameters, load_classifier

    model, _ = load_classifier("minilm", num_labels=2, seed=0, pooling="mean")
    predicted = training_state_per_rank(count_parameters(model), 2, "fsdp")
    for held in sharded_state_per_rank(2, "minilm"):
        for part in ("weights", "gradients", "optimizer"):
            assert held[part] == pytest.approx(predicted[part], rel=1e-3), part  # shards round up per tensor


@processes
def test_step_times_split_computation_all_reduce_and_update():
    times = data_parallel_step_times(global_batch=4, world_sizes=(1, 2), repeats=3, warmup=1)
    assert sorted(times) == [1, 2] and [len(ranks) for ranks in times.values()] == [1, 2]
    from helpers.models.loading import count_parameters, load_classifier

    parameters = count_parameters(load_classifier("minilm", num_labels=2, seed=0, pooling="mean")[0])
    assert times[1][0]["bytes_per_step"] == 0 and all(s["sync"] < 1e-3 for s in times[1][0]["steps"])
    for rank in times[2]:
        assert rank["bytes_per_step"] == 4 * parameters and len(rank["steps"]) == 3
        assert all(step["compute"] > 0 and step["sync"] > 0 and step["update"] > 0 for step in rank["steps"])
    with pytest.raises(ValueError, match="equal shares"):
        data_parallel_step_times(global_batch=5, world_sizes=(2,))


def test_the_update_difference_compares_two_updates_from_the_same_start():

    start, first, second = {"w": torch.zeros(2)}, {"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([3.0, 5.0])}
    assert update_difference(start, first, second) == pytest.approx(1 / 5)  # ||(0, 1)|| / ||(3, 4)||
    assert update_difference(start, first, first) == 0.0
    with pytest.raises(ValueError, match="did not move"):
        update_difference(start, start, second)
    with pytest.raises(ValueError, match="same tensors"):
        update_difference(start, first, {"v": torch.zeros(2)})


def test_a_process_group_leaves_the_callers_environment_as_it_was(monkeypatch):
    import torch.distributed as dist

    from helpers.training.distributed import gloo_process_group

    monkeypatch.delenv("MASTER_PORT", raising=False)
    with gloo_process_group(0, 1, free_port()):
        assert dist.is_initialized() and dist.get_world_size() == 1
    assert not dist.is_initialized() and "MASTER_PORT" not in os.environ


def test_a_step_lasts_as_long_as_its_slowest_process():
    fast = {"compute": 1.0, "sync": 0.5, "update": 0.1}  # arrived first: waited in the all-reduce
    slow = {"compute": 1.4, "sync": 0.1, "update": 0.2}
    costs = step_costs({1: [{"steps": [fast]}], 2: [{"steps": [fast, slow]}, {"steps": [slow, fast]}]})
    assert costs[1] == {"step": [1.6], "compute": [1.0], "sync": [0.5], "update": [0.1]}
    assert costs[2]["step"] == [pytest.approx(1.7)] * 2  # the slow process's 1.4 + 0.1 + 0.2
    assert costs[2]["compute"] == [1.4, 1.4] and costs[2]["sync"] == [0.1, 0.1] and costs[2]["update"] == [0.2, 0.2]


def test_the_ring_all_reduce_model_sends_two_n_minus_one_over_n_of_the_buffer():
    gigabyte = 1e9
    assert ring_all_reduce_seconds(gigabyte, 1, 10e9) == 0.0
    assert ring_all_reduce_seconds(gigabyte, 2, 10e9) == pytest.approx(0.1)  # 2 (N-1)/N = 1
    assert ring_all_reduce_seconds(gigabyte, 64, 10e9) == pytest.approx(2 * 63 / 64 * 0.1)  # bounded by 2x
    assert ring_all_reduce_seconds(gigabyte, 4, 10e9, latency=1e-3) == pytest.approx(1.5 * 0.1 + 6e-3)
    seconds = ring_all_reduce_seconds(3e8, 8, 5e9)
    assert bus_bandwidth_from(3e8, 8, seconds) == pytest.approx(5e9)  # the inverse
    # strong scaling: compute divides, communication does not; full overlap leaves the compute only
    assert projected_step_seconds(1.0, 1, gigabyte, 10e9) == 1.0
    assert projected_step_seconds(1.0, 2, gigabyte, 10e9) == pytest.approx(0.5 + 0.1)
    assert projected_step_seconds(1.0, 2, gigabyte, 10e9, overlap=1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        bus_bandwidth_from(1e6, 1, 0.1)
    with pytest.raises(ValueError):
        projected_step_seconds(1.0, 2, gigabyte, 10e9, overlap=1.5)
