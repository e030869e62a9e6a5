"""Data-parallel training on several processes: DDP written by hand, with PyTorch's wrapper, and its silent failures.

Data parallelism keeps one copy of the model per process; each process
computes the gradient of its own share of the batch, the gradients are
averaged across processes (an *all-reduce*), and every copy takes the same
optimizer step, so the copies never drift apart. With ``N`` processes of
``b`` examples each, an update is the update of one process with ``N * b``
examples: the effective batch size counts the processes.

This module runs it for real on one machine: ``N`` operating-system
processes on the loopback interface, PyTorch's ``gloo`` backend (CPU;
``nccl`` is its GPU counterpart). :func:`run_on_processes` starts them;
:func:`train_replica` is what each runs, in three forms: ``"by_hand"``
(one :func:`all_reduce_gradients` after each backward pass: the whole idea
in a few lines), ``"ddp"`` (``torch.nn.parallel.DistributedDataParallel``,
which overlaps that all-reduce with the backward pass, trained by the
course's loop) and ``"no_sync"`` (no gradient exchange: each process trains
its own model on its share of the data, the failure to recognise).
:func:`equivalence_runs` compares them with one process on the same
examples in the same order. :func:`check_trainer_is_distributed` refuses
the ``Trainer`` configuration that trains that way without a word.
:func:`training_state_per_rank` says what each process holds when the
training state is sharded (ZeRO, FSDP) and :func:`sharded_state_per_rank`
measures it with FSDP2's ``fully_shard`` on real processes;
:func:`data_parallel_step_times` measures what an update costs on 1 and 2
processes: computation, all-reduce, optimizer step, and :func:`step_costs`
reads them step by step. :func:`accelerate_run` trains the same way with
Accelerate's ``Accelerator`` in an explicit loop, started by
``notebook_launcher``; :func:`token_averaging_runs` shows why a causal-LM
loss is averaged per token across processes. Taught in
``course/12_distributed.ipynb``; the scripts that take lessons 03 and 04 to
a cluster are ``scripts/train_classifier.py`` and ``scripts/train_sft.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

__all__ = [
    "BYTES_PER_PARAMETER",
    "LOOPBACK",
    "MODES",
    "SHARDINGS",
    "EquivalenceSetup",
    "accelerate_run",
    "all_reduce_gradients",
    "bus_bandwidth_from",
    "check_trainer_is_distributed",
    "compare_token_averaging",
    "data_parallel_step_times",
    "disable_dropout",
    "equivalence_runs",
    "free_port",
    "gloo_process_group",
    "launched_world_size",
    "max_weight_difference",
    "measure_sharded_state",
    "projected_step_seconds",
    "ring_all_reduce_seconds",
    "run_on_processes",
    "shard_indices",
    "sharded_state_per_rank",
    "step_costs",
    "time_replica_steps",
    "token_averaging_runs",
    "train_one_process",
    "train_with_accelerate",
    "train_replica",
    "training_state_per_rank",
    "update_difference",
]

LOOPBACK = "127.0.0.1"
MODES = ("by_hand", "ddp", "no_sync")


def free_port() -> int:
    """A TCP port of the loopback interface that nothing listens on now (for the processes' rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def launched_world_size() -> int:
    """How many processes a launcher (``torchrun``, ``accelerate launch``) started: ``WORLD_SIZE``, 1 without one."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError as error:
        raise ValueError(f"WORLD_SIZE must be a whole number, got {value!r}") from error
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be at least 1, got {size}")
    return size


def check_trainer_is_distributed(args: Any) -> None:
    """Refuse ``TrainingArguments`` that would make each launched process run the whole training alone.

    Under ``torchrun --nproc_per_node N`` on a machine without a GPU,
    ``TrainingArguments(use_cpu=False)`` (the default) leaves ``Trainer`` in
    ``ParallelMode.NOT_PARALLEL`` with ``world_size`` 1 in every process:
    each reads all the examples, the model is not wrapped in DDP, and the
    N processes run the same training N times over, with 1/N of the
    intended effective batch (``tests/test_distributed.py`` runs it). Only a
    transformers warning, hidden at the course's log level, says so.
    Raises ``ValueError`` when the launcher started more processes than
    ``args.world_size`` counts. (The course's configurations pass
    ``use_cpu=True`` on a CPU, through
    :meth:`helpers.device.Precision.trainer_kwargs`.)
    """
    launched = launched_world_size()
    if launched > 1 and args.world_size != launched:
        raise ValueError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but Trainer counts {args.world_size} "
            f"(parallel mode {args.parallel_mode}): each process would run the whole training alone, on all the "
            "examples, without averaging gradients (the same training run N times, with 1/N of the intended effective "
            "batch). On a machine without a GPU, pass use_cpu=True (the course's "
            "Precision.trainer_kwargs() does) so that Trainer uses the gloo process group."
        )


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability of ``model`` to 0; returns how many dropout modules it changed.

    Each process draws its own dropout masks, so with dropout on, two
    correct data-parallel runs differ by their random draws: to compare
    weights exactly, dropout goes.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0:
            module.p = 0.0
            changed += 1
    return changed


def shard_indices(num_examples: int, rank: int, world_size: int) -> list[int]:
    """The example indices process ``rank`` reads, in order: ``DistributedSampler(shuffle=False)``'s share.

    Every ``world_size``-th example from ``rank``; when ``num_examples`` does
    not divide evenly, the first examples are repeated at the end so that
    every process has the same number of batches (the sampler pads, it does
    not drop).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    sampler = DistributedSampler(range(num_examples), num_replicas=world_size, rank=rank, shuffle=False)
    return list(sampler)


@contextmanager
def gloo_process_group(rank: int, world_size: int, port: int) -> Iterator[None]:
    """This process as ``rank`` of a ``gloo`` group of ``world_size`` on the loopback ``port``, for the block.

    Each process takes ``cpu_count // world_size`` threads, so that the
    processes share the cores instead of fighting over them; the group is
    destroyed on the way out, also on an error.
    """
    from unittest import mock

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    # the rendezvous address for this group only: a caller that goes on (a notebook) keeps its environment
    with mock.patch.dict(os.environ, {"MASTER_ADDR": LOOPBACK, "MASTER_PORT": str(port)}):
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_reduce_gradients(model: torch.nn.Module, world_size: int) -> int:
    """Average every gradient of ``model`` across the process group, in place; returns the bytes each process sends.

    The whole of data parallelism in one loop: each process has the gradient
    of its share of the batch; ``all_reduce`` sums them (every process ends
    with the same sum) and the division by ``world_size`` turns the sum into
    the mean, the gradient of the whole batch. The byte count is the size of
    the gradients (4 bytes a value in fp32).
    """
    sent = 0
    for parameter in model.parameters():
        if parameter.grad is None:
            continue
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
        parameter.grad /= world_size
        sent += parameter.grad.numel() * parameter.grad.element_size()
    return sent


@dataclass(frozen=True)
class EquivalenceSetup:
    """The small MiniLM training that every run of :func:`equivalence_runs` repeats.

    ``batch_size`` is per process; ``steps`` updates on the first
    ``num_examples`` (``batch_size * world_size * steps``) Rotten Tomatoes
    training reviews, in their order, with dropout off, a constant ``lr``
    and AdamW without weight decay, fp32.
    """

    batch_size: int = 4
    steps: int = 3
    world_size: int = 2
    lr: float = 1e-4
    max_length: int = 64
    seed: int = 42
    model: str = "minilm"

    @property
    def num_examples(self) -> int:
        return self.batch_size * self.world_size * self.steps


def _training_pieces(setup: EquivalenceSetup) -> tuple[torch.nn.Module, Any, Dataset]:
    from helpers.data.batching import tokenize_for_classification
    from helpers.data.loaders import rotten_tomatoes
    from helpers.models.loading import load_classifier

    model, tokenizer = load_classifier(setup.model, num_labels=2, seed=setup.seed, pooling="mean")
    disable_dropout(model)
    reviews = rotten_tomatoes(seed=setup.seed)["train"].select(range(setup.num_examples))
    return model, tokenizer, tokenize_for_classification(reviews, tokenizer, max_length=setup.max_length)


def _loader(data: Dataset, tokenizer: Any, batch_size: int, sampler: Any) -> DataLoader:
    from transformers import DataCollatorWithPadding

    return DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=DataCollatorWithPadding(tokenizer))


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    from helpers.training.freezing import optimizer_for

    return optimizer_for(model, lr=lr, weight_decay=0.0)


def train_one_process(setup: EquivalenceSetup, batch_size: int, accumulation: int = 1) -> dict[str, torch.Tensor]:
    """The reference run, in this process: ``batch_size`` examples a batch, an update every ``accumulation`` batches.

    The examples are read in order (no shuffling), so ``batch_size =
    world_size * b`` and ``batch_size = b`` with ``accumulation =
    world_size`` see, update by update, the same examples as ``world_size``
    processes of ``b``. Trained by :func:`helpers.training.loops.train_loop`;
    returns the final weights.
    """
    from helpers.training.loops import train_loop

    model, tokenizer, data = _training_pieces(setup)
    loader = _loader(data, tokenizer, batch_size, SequentialSampler(data))
    train_loop(
        model,
        loader,
        _optimizer(model, setup.lr),
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=None,
        gradient_accumulation_steps=accumulation,
        progress=False,
    )
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def train_replica(
    rank: int, world_size: int, port: int, setup: EquivalenceSetup, modes: tuple[str, ...], folder: str
) -> None:
    """What each process of a data-parallel run does, once per mode; writes the final weights to ``folder``.

    Beside the weights, ``"by_hand"`` writes the bytes each all-reduce sends and
    its seconds (:func:`time_replica_steps` times whole steps).

    Joins the ``gloo`` process group on the loopback interface, reads its
    shard of the examples (:class:`torch.utils.data.DistributedSampler`,
    no shuffling) in batches of ``setup.batch_size``, and trains for the
    whole shard: ``"by_hand"`` averages the gradients with
    :func:`all_reduce_gradients` after each backward pass, ``"ddp"`` wraps the
    model in ``DistributedDataParallel`` and trains it with the course's
    loop, ``"no_sync"`` exchanges nothing. Each process uses
    ``cpu_count // world_size`` threads, so that the processes share the
    cores instead of fighting over them. The modes run one after the other
    in the same processes (starting processes costs more than this training).
    """
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise ValueError(f"modes must be some of {MODES}, got {modes!r}")
    with gloo_process_group(rank, world_size, port):
        for mode in modes:
            _train_replica_once(rank, world_size, setup, mode, Path(folder))


def _train_replica_once(rank: int, world_size: int, setup: EquivalenceSetup, mode: str, folder: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from helpers.training.loops import train_loop

    torch.manual_seed(setup.seed)
    model, tokenizer, data = _training_pieces(setup)
    sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=False)
    loader = _loader(data, tokenizer, setup.batch_size, sampler)
    optimizer = _optimizer(model, setup.lr)
    sync_seconds, sent = [], 0
    if mode == "ddp":
        train_loop(
            DistributedDataParallel(model),
            loader,
            optimizer,
            warmup_ratio=0.0,
            lr_scheduler_type="constant",
            max_grad_norm=None,
            progress=False,
        )
    else:
        model.train()
        for batch in loader:
            model(**batch).loss.backward()
            if mode == "by_hand":
                synced = time.perf_counter()
                sent = all_reduce_gradients(model, world_size)
                sync_seconds.append(time.perf_counter() - synced)
            optimizer.step()
            optimizer.zero_grad()
    weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    torch.save(weights, folder / f"{mode}-rank{rank}.pt")
    timings = {"sync_seconds": sync_seconds, "bytes_per_step": sent}  # step costs: time_replica_steps
    (folder / f"{mode}-rank{rank}.json").write_text(json.dumps(timings))


def run_on_processes(worker: Callable[..., None], world_size: int, *args: Any) -> None:
    """Start ``world_size`` processes running ``worker(rank, world_size, port, *args)`` and wait for all of them.

    Real operating-system processes (``torch.multiprocessing``, start method
    ``spawn``: each imports ``worker`` afresh, so it must live in a module,
    not in a notebook cell), meeting on a free loopback port. A process that
    fails makes the whole call raise.
    """
    import torch.multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    mp.start_processes(
        worker, args=(world_size, free_port(), *args), nprocs=world_size, join=True, start_method="spawn"
    )


def max_weight_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two sets of weights with the same names (0 when equal)."""
    if first.keys() != second.keys():
        raise ValueError("the two sets of weights do not name the same tensors")
    return max(float((first[name].float() - second[name].float()).abs().max()) for name in first)


def update_difference(
    start: dict[str, torch.Tensor], first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]
) -> float:
    """How far two trainings from the same ``start`` ended apart, as a share of the first one's whole update.

    ``||u2 - u1|| / ||u1||`` with ``u = weights - start`` over all the
    weights. With Adam, a weight whose gradient is near zero can step by
    about the learning rate either way on a rounding error, so the largest
    single difference says little; this share says whether two runs took
    the same steps (a rounding-level share) or different ones (near 1).
    ``u2 - u1`` is ``second - first``: subtractions of nearby floats, exact
    in fp32 or within one rounding of the result, so no float64 copies of the
    model are made (they cost seconds for MiniLM on a machine whose
    arithmetic here is bound by memory speed).
    """
    if not start.keys() == first.keys() == second.keys():
        raise ValueError("the three sets of weights do not name the same tensors")
    moved = difference = 0.0
    for name in start:
        moved += float(torch.linalg.vector_norm(first[name].float() - start[name].float())) ** 2
        difference += float(torch.linalg.vector_norm(second[name].float() - first[name].float())) ** 2
    if moved == 0:
        raise ValueError("the first run did not move from the start: nothing to compare with")
    return (difference / moved) ** 0.5


def time_replica_steps(
    rank: int, world_size: int, port: int, setup: EquivalenceSetup, repeats: int, warmup: int, folder: str
) -> None:
    """Time ``warmup + repeats`` data-parallel steps on one fixed batch; writes ``folder/steps-rank{rank}.json``.

    Each step is timed in three parts: ``compute`` (forward and backward on
    this process's ``setup.batch_size`` examples), ``sync``
    (:func:`all_reduce_gradients`, nothing with one process) and ``update``
    (the AdamW step); the first ``warmup`` steps are dropped (memory
    allocation, first calls). Every process uses ``cpu_count // world_size``
    threads.
    """
    with gloo_process_group(rank, world_size, port):
        model, tokenizer, data = _training_pieces(setup)
        shard = data.select(shard_indices(len(data), rank, world_size)[: setup.batch_size])
        batch = next(iter(_loader(shard, tokenizer, setup.batch_size, SequentialSampler(shard))))
        optimizer = _optimizer(model, setup.lr)
        model.train()
        steps, sent = [], 0
        for step in range(warmup + repeats):
            start = time.perf_counter()
            model(**batch).loss.backward()
            computed = time.perf_counter()
            sent = all_reduce_gradients(model, world_size) if world_size > 1 else 0
            synced = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad()
            done = time.perf_counter()
            if step >= warmup:
                steps.append({"compute": computed - start, "sync": synced - computed, "update": done - synced})
        (Path(folder) / f"steps-rank{rank}.json").write_text(json.dumps({"steps": steps, "bytes_per_step": sent}))


def data_parallel_step_times(
    global_batch: int = 16, world_sizes: tuple[int, ...] = (1, 2), repeats: int = 10, warmup: int = 2
) -> dict[int, list[dict]]:
    """What one update of ``global_batch`` examples costs on 1, 2, ... processes of this machine, measured.

    For each ``N`` in ``world_sizes``, ``N`` processes of ``global_batch / N``
    examples (:func:`time_replica_steps`, MiniLM, fp32; ``N = 1`` runs in this
    process, with all the cores, as a lone process would). Returns ``{N: [per
    rank: {"steps": [{"compute", "sync", "update"} seconds per step],
    "bytes_per_step"}]}``. On a machine with fewer cores than ``N`` times the
    threads one process would use, the processes share the same cores:
    that is part of what this measures.
    """
    times = {}
    for world_size in world_sizes:
        if global_batch % world_size:
            raise ValueError(f"global_batch {global_batch} does not split into {world_size} equal shares")
        setup = EquivalenceSetup(batch_size=global_batch // world_size, steps=1, world_size=world_size)
        with tempfile.TemporaryDirectory() as folder:
            if world_size == 1:  # this process (starting one would cost more than the steps), with its threads back
                threads = torch.get_num_threads()
                try:
                    time_replica_steps(0, 1, free_port(), setup, repeats, warmup, folder)
                finally:
                    torch.set_num_threads(threads)
            else:
                run_on_processes(time_replica_steps, world_size, setup, repeats, warmup, folder)
            times[world_size] = [
                json.loads((Path(folder) / f"steps-rank{rank}.json").read_text()) for rank in range(world_size)
            ]
    return times


def step_costs(times: dict[int, list[dict]]) -> dict[int, dict[str, list[float]]]:
    """Step by step, what an update of :func:`data_parallel_step_times` cost: ``{N: {"step", "compute", "sync", "update": [seconds]}}``.

    ``"step"``: the whole update, as long as its slowest process (compute +
    all-reduce + optimizer step). ``"compute"`` and ``"update"``: the slowest
    process's. ``"sync"``: the *fastest* process's all-reduce, because a
    process that finished its backward pass early waits in the all-reduce for
    the others; the last one to arrive waits least, and its time is closest
    to the transfer itself.
    """
    costs = {}
    for world_size, ranks in times.items():
        per_step = list(zip(*(rank["steps"] for rank in ranks)))  # one tuple of the processes' parts per step
        costs[world_size] = {
            "step": [max(p["compute"] + p["sync"] + p["update"] for p in parts) for parts in per_step],
            "compute": [max(p["compute"] for p in parts) for parts in per_step],
            "sync": [min(p["sync"] for p in parts) for parts in per_step],
            "update": [max(p["update"] for p in parts) for parts in per_step],
        }
    return costs


def ring_all_reduce_seconds(
    gradient_bytes: float, world_size: int, bus_bandwidth: float, latency: float = 0.0
) -> float:
    """Time of a ring all-reduce of ``gradient_bytes`` over ``world_size`` processes.

    In a ring, the buffer is cut into ``N`` pieces; ``N - 1`` steps of
    reduce-scatter then ``N - 1`` steps of all-gather each send one piece to
    the next process: every process sends (and receives) ``2 (N - 1) / N``
    of the buffer, whatever ``N``, in ``2 (N - 1)`` steps. Hence
    ``2 (N - 1) / N * bytes / bus_bandwidth + 2 (N - 1) * latency``
    (``bus_bandwidth`` in bytes a second, as NCCL's tests report it). Zero
    for one process.
    """
    if world_size < 1 or gradient_bytes < 0 or bus_bandwidth <= 0 or latency < 0:
        raise ValueError("world_size >= 1, gradient_bytes >= 0, bus_bandwidth > 0 and latency >= 0 are required")
    if world_size == 1:
        return 0.0
    return 2 * (world_size - 1) / world_size * gradient_bytes / bus_bandwidth + 2 * (world_size - 1) * latency


def bus_bandwidth_from(gradient_bytes: float, world_size: int, seconds: float) -> float:
    """The bus bandwidth a measured all-reduce of ``gradient_bytes`` in ``seconds`` implies (latency neglected).

    The inverse of :func:`ring_all_reduce_seconds`: ``2 (N - 1) / N * bytes / seconds``.
    """
    if world_size < 2 or seconds <= 0 or gradient_bytes <= 0:
        raise ValueError("a bandwidth needs at least 2 processes, a positive time and a positive size")
    return 2 * (world_size - 1) / world_size * gradient_bytes / seconds


def projected_step_seconds(
    compute_seconds: float,
    world_size: int,
    gradient_bytes: float,
    bus_bandwidth: float,
    latency: float = 0.0,
    overlap: float = 0.0,
) -> float:
    """One update of a fixed global batch on ``world_size`` processes, by a simple model (strong scaling).

    ``compute_seconds / N`` (each process computes its share of the batch,
    forward and backward) plus the part of the all-reduce that the backward
    pass does not hide: ``(1 - overlap) * ring_all_reduce_seconds(...)``
    (``DistributedDataParallel`` starts reducing a bucket of gradients as soon
    as it is ready; ``overlap`` is the share hidden that way, 0 without
    overlap). The model ignores the optimizer step, memory and stragglers: it
    says when communication starts to dominate, not the exact time.
    """
    if compute_seconds < 0 or not 0 <= overlap <= 1:
        raise ValueError("compute_seconds must be >= 0 and overlap in [0, 1]")
    communication = ring_all_reduce_seconds(gradient_bytes, world_size, bus_bandwidth, latency)
    return compute_seconds / world_size + (1 - overlap) * communication


SHARDINGS = ("ddp", "zero1", "zero2", "fsdp")
# Bytes per parameter of (weights, gradients, optimizer state) under AdamW: fp32 training keeps two fp32
# moments; "mixed" is the ZeRO paper's accounting (fp16/bf16 weights and gradients, and an fp32 master
# copy beside the two moments: 2 + 2 + 12 = 16 bytes).
BYTES_PER_PARAMETER = {"fp32": (4, 4, 8), "mixed": (2, 2, 12)}


def training_state_per_rank(
    parameters: int, world_size: int, sharding: str, precision: str = "fp32"
) -> dict[str, float]:
    """Bytes each process holds for the weights, the gradients and AdamW's state, by how they are sharded.

    ``"ddp"``: every process holds all three. Then ZeRO's stages
    (Rajbhandari et al. 2020) split them across the ``world_size``
    processes: ``"zero1"`` the optimizer state, ``"zero2"`` also the
    gradients, ``"fsdp"`` (ZeRO-3, PyTorch's FSDP) the weights too, which are
    gathered layer by layer when needed. ``precision``: a key of
    :data:`BYTES_PER_PARAMETER`. Activations, which depend on the batch, are
    not included.
    """
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {sharding!r}")
    if precision not in BYTES_PER_PARAMETER:
        raise ValueError(f"precision must be one of {tuple(BYTES_PER_PARAMETER)}, got {precision!r}")
    if parameters < 1 or world_size < 1:
        raise ValueError(f"parameters and world_size must be positive, got {parameters} and {world_size}")
    weights, gradients, optimizer = (parameters * b for b in BYTES_PER_PARAMETER[precision])
    shards = {"weights": sharding == "fsdp", "gradients": sharding in ("zero2", "fsdp"), "optimizer": sharding != "ddp"}
    full = {"weights": weights, "gradients": gradients, "optimizer": optimizer}
    return {part: full[part] / world_size if shards[part] else float(full[part]) for part in full}


def measure_sharded_state(rank: int, world_size: int, port: int, model_name: str, folder: str) -> None:
    """One AdamW step of ``model_name`` (a course classifier) sharded with FSDP2's ``fully_shard``, on gloo.

    Each transformer layer is a sharding unit, then the whole model; after
    one step, :func:`helpers.training.freezing.training_state_bytes` (which
    counts the shard each process holds) is written to
    ``folder/fsdp-rank{rank}.json``. Run by :func:`run_on_processes`.
    """
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6 (the course's lower bound is 2.4) had FSDP2 under its first, private name
        from torch.distributed._composable.fsdp import fully_shard

    from helpers.models.loading import load_classifier
    from helpers.training.freezing import training_state_bytes

    with gloo_process_group(rank, world_size, port):
        model, tokenizer = load_classifier(model_name, num_labels=2, seed=0, pooling="mean")
        for layer in model.base_model.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = tokenizer(["A fine film.", "A dull, long film."], return_tensors="pt", padding=True)
        model(**batch, labels=torch.tensor([1, 0])).loss.backward()
        optimizer.step()
        held = training_state_bytes(model, optimizer)
        (Path(folder) / f"fsdp-rank{rank}.json").write_text(json.dumps(held))


def sharded_state_per_rank(world_size: int = 2, model_name: str = "minilm") -> list[dict[str, int]]:
    """Measured bytes of weights, gradients and AdamW state that each of ``world_size`` FSDP processes holds."""
    with tempfile.TemporaryDirectory() as folder:
        run_on_processes(measure_sharded_state, world_size, model_name, folder)
        return [json.loads((Path(folder) / f"fsdp-rank{rank}.json").read_text()) for rank in range(world_size)]


def equivalence_runs(setup: EquivalenceSetup = EquivalenceSetup()) -> dict[str, Any]:
    """The same training done five ways, and the weights each ends with.

    In this process: ``"one process, batch N·b"`` and ``"one process, batch
    b, N accumulation steps"``; on ``setup.world_size`` processes of ``b``:
    ``"by_hand"``, ``"ddp"`` and ``"no_sync"`` (every rank's weights). Returns
    ``{"weights": {run: state dict}, "replicas": {mode: [state dict per
    rank]}, "timings": {mode: [per-rank timings]}, "start": the weights
    before training, "setup": asdict(setup)}``.
    """
    b, n = setup.batch_size, setup.world_size
    start = {name: value.detach().clone() for name, value in _training_pieces(setup)[0].state_dict().items()}
    weights = {
        "one process, batch N·b": train_one_process(setup, batch_size=n * b),
        "one process, batch b, N accumulation steps": train_one_process(setup, batch_size=b, accumulation=n),
    }
    replicas, timings = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        run_on_processes(train_replica, n, setup, MODES, folder)
        for mode in MODES:
            replicas[mode] = [torch.load(Path(folder) / f"{mode}-rank{rank}.pt") for rank in range(n)]
            timings[mode] = [json.loads((Path(folder) / f"{mode}-rank{rank}.json").read_text()) for rank in range(n)]
            weights[mode] = replicas[mode][0]
    return {"weights": weights, "replicas": replicas, "timings": timings, "start": start, "setup": asdict(setup)}


def train_with_accelerate(setup: EquivalenceSetup, folder: str) -> None:
    """The same training written with Accelerate's ``Accelerator`` in an explicit loop; one copy per process.

    Launched by :func:`accelerate.notebook_launcher` (see :func:`accelerate_run`):
    ``accelerator.prepare`` wraps the model in ``DistributedDataParallel`` and
    deals the loader's batches of ``setup.batch_size`` to the processes in
    turn, ``accelerator.backward`` replaces
    ``loss.backward()``. The main process writes the final weights and what
    Accelerate saw (processes, distributed type) to ``folder``.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    torch.manual_seed(setup.seed)
    model, tokenizer, data = _training_pieces(setup)
    # Accelerate deals the loader's batches out in turn (split_batches=False): batch i goes to process
    # i % world_size, so one step of all processes reads the same examples as one batch of b * world_size.
    loader = _loader(data, tokenizer, setup.batch_size, SequentialSampler(data))
    optimizer = _optimizer(model, setup.lr)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    updates = 0
    for batch in loader:
        accelerator.backward(model(**batch).loss)
        optimizer.step()
        optimizer.zero_grad()
        updates += 1
    if accelerator.is_main_process:
        weights = {name: value.detach().clone() for name, value in accelerator.unwrap_model(model).state_dict().items()}
        torch.save(weights, Path(folder) / "accelerate.pt")
        seen = {
            "processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type.value),
            "updates": updates,
            "examples_per_process": len(batch["labels"]),
        }
        (Path(folder) / "accelerate.json").write_text(json.dumps(seen))
    accelerator.wait_for_everyone()


def accelerate_run(setup: EquivalenceSetup = EquivalenceSetup()) -> dict[str, Any]:
    """:func:`train_with_accelerate` on ``setup.world_size`` processes started by ``notebook_launcher``.

    Returns ``{"weights": the final weights, "processes", "distributed_type",
    "updates", "examples_per_process"}``. ``notebook_launcher`` forks the
    processes, so it refuses to run once an ``Accelerator`` exists in the
    calling process.
    """
    from unittest import mock

    from accelerate import notebook_launcher

    # Unset, Accelerate picks the threads of each CPU process itself (and warns): give the course's share instead.
    threads = str(max(1, (os.cpu_count() or 1) // setup.world_size))
    # torch's elastic launcher, under notebook_launcher, installs signal handlers in the calling process and
    # leaves them: a Jupyter kernel would then die with a traceback on its next SIGTERM. Put them back.
    handlers = {
        number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
    }
    with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ, {"OMP_NUM_THREADS": threads}):
        try:
            notebook_launcher(
                train_with_accelerate, (setup, folder), num_processes=setup.world_size, master_addr=LOOPBACK,
                use_port=str(free_port()),
            )  # fmt: skip
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        seen = json.loads((Path(folder) / "accelerate.json").read_text())
        return {"weights": torch.load(Path(folder) / "accelerate.pt"), **seen}


def _summed_token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The next-token cross-entropy of ``batch`` summed over its learned labels (not -100), and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    total = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return total, int((labels != -100).sum())


def _averaged_gradients(
    model: torch.nn.Module, loss: torch.Tensor, world_size: int, keep_graph: bool = False
) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward(retain_graph=keep_graph)
    all_reduce_gradients(model, world_size)  # what DDP does: the mean of the processes' gradients
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def compare_token_averaging(
    rank: int, world_size: int, port: int, model_name: str, shards: list[list[dict]], folder: str
) -> None:
    """One causal-LM batch split across processes, its loss and gradient averaged two ways; rank 0 writes the comparison.

    Process ``rank`` holds ``shards[rank]`` (tokenized rows with ``labels``).
    *Per process*: each takes the mean loss over its own tokens and the
    gradients are averaged across processes (what a plain DDP loop does).
    *Per token*: the token counts are all-reduced first and each process
    scales its summed loss by ``world_size / total tokens`` (what
    ``TrainingArguments(average_tokens_across_devices=True)`` does), so that
    the average of the processes' gradients is the gradient of the mean over
    every token. Rank 0 also computes the whole batch in one process, and
    writes ``folder/token_averaging.json``: the three losses, the tokens of
    each process, and how far each averaged gradient is from the
    one-process gradient (:func:`helpers.training.accumulation.relative_difference`).
    """
    from helpers.data.causal_lm import instruction_collator
    from helpers.models.loading import load_causal_lm
    from helpers.training.accumulation import relative_difference

    with gloo_process_group(rank, world_size, port):
        model, tokenizer = load_causal_lm(model_name)
        disable_dropout(model)
        model.train()
        collate = instruction_collator(tokenizer)
        total, count = _summed_token_loss(model, collate(shards[rank]))
        counts = torch.tensor([0] * world_size)
        counts[rank] = count
        dist.all_reduce(counts)
        all_tokens = int(counts.sum())
        # one forward pass, two backward passes through it: the same summed loss, scaled two ways
        per_process = _averaged_gradients(model, total / count, world_size, keep_graph=True)
        per_token = _averaged_gradients(model, total * world_size / all_tokens, world_size)
        losses = torch.tensor([total.item() / count, total.item()])
        dist.all_reduce(losses)
        if rank == 0:
            whole = collate([row for shard in shards for row in shard])
            model.zero_grad()
            single_loss = model(**whole).loss
            single_loss.backward()
            single = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
            comparison = {
                "tokens_per_process": counts.tolist(),
                "one_process_loss": single_loss.item(),
                "mean_of_process_means": float(losses[0]) / world_size,
                "token_averaged_loss": float(losses[1]) / all_tokens,
                "gradient_difference_per_process": relative_difference(single, per_process),
                "gradient_difference_per_token": relative_difference(single, per_token),
            }
            (Path(folder) / "token_averaging.json").write_text(json.dumps(comparison))


def token_averaging_runs(shards: list[list[dict]], model_name: str = "smollm2-135m") -> dict[str, Any]:
    """:func:`compare_token_averaging` on ``len(shards)`` real processes; returns rank 0's comparison."""
    with tempfile.TemporaryDirectory() as folder:
        run_on_processes(compare_token_averaging, len(shards), model_name, shards, folder)
        return json.loads((Path(folder) / "token_averaging.json").read_text())
