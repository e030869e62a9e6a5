"""Multi-task fine-tuning: one shared encoder, one head per task, batches drawn per task by a sampling rule.

The source chapter sketches a ``MultiTaskModel`` with several heads; this is
the working version. :class:`MultiTaskModel` is the embedded MiniLM (mean of
its tokens, as it was trained) with one linear head per task;
``model(task=..., **batch)`` sends the batch through the head of its task.
Each training step takes a batch of *one* task: :func:`task_sampling_probabilities`
says how often each task is drawn (proportional to its size, or flattened by
a temperature, as in multilingual and T5-style mixtures),
:func:`task_schedule` orders that many steps of each task at random, and
:class:`MultiTaskLoader` turns it into batches (each carrying its task and
the task's loss weight) that the course's ordinary
:func:`helpers.training.loops.train_loop` trains on. A single-task model is
the same class with one head and a schedule of one task, so single- and
multi-task runs share every line of the recipe. Taught in
``course/08_multitask.ipynb``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput

from helpers.data.batching import make_loader
from helpers.device import FP32, Precision
from helpers.models.heads import mean_pool
from helpers.training.freezing import optimizer_for
from helpers.training.loops import evaluate, train_loop

__all__ = [
    "TASKS_FILE",
    "HEADS_FILE",
    "MultiTaskModel",
    "TaskView",
    "task_sampling_probabilities",
    "task_counts",
    "task_schedule",
    "MultiTaskLoader",
    "build_multitask_model",
    "fit_heads_by_linear_probe",
    "MultiTaskRun",
    "task_loaders",
    "predict_task",
    "train_multitask",
    "alone_and_together",
]

TASKS_FILE = "tasks.json"
HEADS_FILE = "heads.pt"


class MultiTaskModel(nn.Module):
    """A shared encoder and one linear classification head per task (mean pooling, dropout, linear).

    ``tasks`` maps each task's name to its label names. ``forward(task=...,
    input_ids=..., attention_mask=..., labels=...)`` returns a
    ``SequenceClassifierOutput`` whose logits come from that task's head and
    whose loss (with ``labels``) is the cross-entropy times ``loss_weight``.
    ``base_model`` is the encoder, so the freezing helpers and
    :func:`helpers.training.freezing.optimizer_for` see the usual parts.
    """

    def __init__(
        self, encoder: PreTrainedModel, tasks: Mapping[str, Sequence[str]], dropout: float | None = None
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task model needs at least one task")
        for task, labels in tasks.items():
            if len(labels) < 2:
                raise ValueError(f"task {task!r} needs at least 2 labels, got {list(labels)}")
        self.encoder = encoder
        self.tasks = {str(task): [str(label) for label in labels] for task, labels in tasks.items()}
        config = encoder.config
        self.dropout_rate = config.hidden_dropout_prob if dropout is None else float(dropout)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.heads = nn.ModuleDict(
            {task: nn.Linear(config.hidden_size, len(labels)) for task, labels in self.tasks.items()}
        )

    @property
    def base_model(self) -> PreTrainedModel:
        return self.encoder

    def forward(
        self,
        task: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        loss_weight: float = 1.0,
    ) -> SequenceClassifierOutput:
        if task not in self.heads:
            raise KeyError(f"unknown task {task!r}; this model has heads for {sorted(self.heads)}")
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        logits = self.heads[task](self.dropout(mean_pool(hidden, attention_mask)))
        loss = None
        if labels is not None:
            loss = loss_weight * nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save(self, folder: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
        """Write the encoder (``save_pretrained``), every head, the tasks and their labels (and the tokenizer) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder / "encoder")
        torch.save({task: head.state_dict() for task, head in self.heads.items()}, folder / HEADS_FILE)
        (folder / TASKS_FILE).write_text(json.dumps({"tasks": self.tasks, "dropout": self.dropout_rate}, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(folder / "encoder")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> MultiTaskModel:
        """The model :meth:`save` wrote, every head included, in eval mode."""
        from transformers import AutoModel

        folder = Path(folder)
        if not (folder / TASKS_FILE).is_file() or not (folder / HEADS_FILE).is_file():
            raise FileNotFoundError(
                f"{folder} holds no saved multi-task model ({TASKS_FILE} and {HEADS_FILE} expected)"
            )
        meta = json.loads((folder / TASKS_FILE).read_text())
        encoder = AutoModel.from_pretrained(folder / "encoder", dtype=torch.float32, add_pooling_layer=False)
        model = cls(encoder, meta["tasks"], dropout=meta["dropout"])
        heads = torch.load(folder / HEADS_FILE, map_location="cpu", weights_only=True)
        if set(heads) != set(model.heads):
            raise ValueError(f"{folder}: heads {sorted(heads)} do not match the tasks {sorted(model.heads)}")
        for task, state in heads.items():
            model.heads[task].load_state_dict(state)
        return model.to(device).eval()


class TaskView(nn.Module):
    """One task of a :class:`MultiTaskModel` seen as an ordinary classifier: ``view(**batch)`` and ``view.classifier``.

    Lets the single-task helpers (the linear probe of
    :mod:`helpers.training.probing`, :func:`helpers.training.loops.evaluate`)
    work on one head of the shared model. The view owns no parameters of its own.
    """

    def __init__(self, model: MultiTaskModel, task: str) -> None:
        super().__init__()
        if task not in model.heads:
            raise KeyError(f"unknown task {task!r}; this model has heads for {sorted(model.heads)}")
        self.model, self.task = model, task

    @property
    def classifier(self) -> nn.Linear:
        return self.model.heads[self.task]

    def forward(self, **batch) -> SequenceClassifierOutput:
        return self.model(task=self.task, **batch)


def task_sampling_probabilities(sizes: Mapping[str, int], temperature: float = 1.0) -> dict[str, float]:
    """How often each task is drawn: ``p(task) ∝ size ** (1 / temperature)``.

    ``temperature=1`` is proportional to the data (a large task dominates);
    ``math.inf`` is uniform (a small task is drawn as often as a large one,
    so its examples repeat); values in between flatten the mix (T5 and
    multilingual models use such a temperature).
    """
    if not sizes:
        raise ValueError("no tasks")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (math.inf for uniform), got {temperature}")
    if any(size < 1 for size in sizes.values()):
        raise ValueError(f"every task needs at least one example, got {dict(sizes)}")
    exponent = 0.0 if math.isinf(temperature) else 1.0 / temperature
    weights = {task: float(size) ** exponent for task, size in sizes.items()}
    total = sum(weights.values())
    return {task: weight / total for task, weight in weights.items()}


def task_counts(sizes: Mapping[str, int], num_steps: int, temperature: float = 1.0) -> dict[str, int]:
    """How many of ``num_steps`` steps each task gets: ``num_steps * p(task)`` rounded so that they sum to ``num_steps``.

    Largest-remainder rounding of :func:`task_sampling_probabilities`: the
    mix is the rule's, exactly, instead of a random draw around it (with few
    steps a draw can leave a small task out altogether).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    shares = {task: p * num_steps for task, p in task_sampling_probabilities(sizes, temperature).items()}
    counts = {task: math.floor(share) for task, share in shares.items()}
    by_remainder = sorted(shares, key=lambda task: shares[task] - counts[task], reverse=True)
    for task in by_remainder[: num_steps - sum(counts.values())]:
        counts[task] += 1
    return counts


def task_schedule(sizes: Mapping[str, int], num_steps: int, temperature: float = 1.0, seed: int = 0) -> list[str]:
    """The task of each of ``num_steps`` training steps: :func:`task_counts` of each task, in a seeded random order.

    Shuffling mixes the tasks through the whole run, so that no task is
    trained last (and favoured by the end of the schedule).
    """
    schedule = [task for task, count in task_counts(sizes, num_steps, temperature).items() for _ in range(count)]
    order = np.random.default_rng(seed).permutation(len(schedule))
    return [schedule[i] for i in order]


class MultiTaskLoader:
    """Batches in the order of a task schedule: step ``i`` is the next batch of task ``schedule[i]``.

    ``loaders`` holds one DataLoader per task; a task whose loader runs out
    starts a new pass over its data (reshuffled by the loader's generator).
    Every batch carries its ``task`` and that task's ``loss_weight`` (default
    1), which :meth:`MultiTaskModel.forward` reads, so
    :func:`helpers.training.loops.train_loop` trains on it unchanged.
    """

    def __init__(
        self, loaders: Mapping[str, Iterable], schedule: Sequence[str], loss_weights: Mapping[str, float] | None = None
    ) -> None:
        unknown = sorted(set(schedule) - set(loaders))
        if unknown:
            raise ValueError(f"the schedule names tasks without a loader: {unknown}")
        weights = dict(loss_weights or {})
        if set(weights) - set(loaders):
            raise ValueError(f"loss weights for unknown tasks: {sorted(set(weights) - set(loaders))}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        self.loaders, self.schedule = dict(loaders), list(schedule)
        self.loss_weights = {task: float(weights.get(task, 1.0)) for task in loaders}

    def __len__(self) -> int:
        return len(self.schedule)

    def __iter__(self) -> Iterator[dict]:
        iterators: dict[str, Iterator] = {}
        for task in self.schedule:
            try:
                batch = next(iterators[task]) if task in iterators else None
            except StopIteration:
                batch = None
            if batch is None:  # first use, or a finished pass: start (another) pass over the task's data
                iterators[task] = iter(self.loaders[task])
                batch = next(iterators[task])
            yield {**batch, "task": task, "loss_weight": self.loss_weights[task]}


class _WithTask:
    """A loader whose batches name their task (for :func:`helpers.training.loops.evaluate`)."""

    def __init__(self, loader: Iterable, task: str) -> None:
        self.loader, self.task = loader, task

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield {**batch, "task": self.task}


def build_multitask_model(
    tasks: Mapping[str, Sequence[str]],
    model_name: str = "minilm",
    seed: int = 0,
    device: str = "cpu",
    head_states: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> tuple[MultiTaskModel, PreTrainedTokenizerBase]:
    """The pretrained encoder of ``model_name`` with one new head per task (seeded); ``head_states`` replaces some heads."""
    from helpers.models.loading import load_encoder

    encoder, tokenizer = load_encoder(model_name, device=device)
    torch.manual_seed(seed)
    model = MultiTaskModel(encoder, tasks).to(device)
    for task, state in (head_states or {}).items():
        if task in model.heads:
            model.heads[task].load_state_dict(state)
    return model, tokenizer


def fit_heads_by_linear_probe(
    model: MultiTaskModel,
    tokenizer: PreTrainedTokenizerBase,
    train_sets: Mapping[str, Dataset],
    device: str = "cpu",
    precision: Precision = FP32,
    max_length: int = 128,
    seed: int = 42,
) -> dict[str, dict[str, torch.Tensor]]:
    """Fit every head as a linear probe on the frozen encoder (raw ``text``/``label`` sets); return their state dicts.

    The LP-FT start of ``course/03_bert_classification.ipynb``, head by head
    (:func:`helpers.training.probing.fit_head_by_linear_probe` on a
    :class:`TaskView`). The returned states are copies: pass them to
    :func:`build_multitask_model` so that every run starts from the same heads.
    """
    from helpers.training.probing import fit_head_by_linear_probe

    states = {}
    for task, data in train_sets.items():
        fit_head_by_linear_probe(
            TaskView(model, task),
            tokenizer,
            data["text"],
            data["label"],
            device,
            precision,
            max_length=max_length,
            seed=seed,
        )
        states[task] = {key: value.detach().clone() for key, value in model.heads[task].state_dict().items()}
    return states


@dataclass
class MultiTaskRun:
    """A finished run: which evaluation items each task's head got right, the training history, the task mix, time."""

    correct: dict[str, np.ndarray]  # task -> 1.0 where right, in the evaluation set's order
    history: dict
    steps_per_task: dict[str, int]
    seconds: float

    def accuracy(self, task: str) -> float:
        return float(self.correct[task].mean())


def task_loaders(
    tokenized: Mapping[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
) -> dict[str, Iterable]:
    """One DataLoader per task over tokenized sets (dynamic padding; shuffled and seeded, or in order for evaluation)."""
    return {
        task: make_loader(data, tokenizer, batch_size, shuffle=shuffle, seed=seed) for task, data in tokenized.items()
    }


def predict_task(
    model: MultiTaskModel,
    tokenized: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    device: str = "cpu",
    precision: Precision = FP32,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits of ``task``'s head for a tokenized set (with ``labels``), in the set's order."""
    loader = make_loader(tokenized, tokenizer, batch_size, shuffle=False)
    return evaluate(model, _WithTask(loader, task), device, precision)["logits"]


def train_multitask(
    tasks: Mapping[str, Sequence[str]],
    train_sets: Mapping[str, Dataset],
    eval_sets: Mapping[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    schedule: Sequence[str],
    lr: float,
    seed: int,
    batch_size: int = 16,
    loss_weights: Mapping[str, float] | None = None,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    head_states: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    model_name: str = "minilm",
    device: str = "cpu",
    precision: Precision = FP32,
    progress: bool = False,
) -> tuple[MultiTaskModel, MultiTaskRun]:
    """Train one model with a head for each task of ``tasks`` on ``schedule``, then score each head on its evaluation set.

    ``train_sets`` and ``eval_sets`` are tokenized (``input_ids``, ``labels``,
    ...), one per task. A single-task run is ``tasks`` with one task and a
    schedule naming only it. The head initialisation, dropout and batch order
    follow ``seed``; ``head_states`` (from :func:`fit_heads_by_linear_probe`)
    gives every run the same starting heads. AdamW without decay on biases
    and norms, linear warmup and decay over the whole schedule, gradient
    clipping: :func:`helpers.training.loops.train_loop`.
    """
    model, _ = build_multitask_model(tasks, model_name, seed, device, head_states)
    torch.manual_seed(seed)  # dropout
    loader = MultiTaskLoader(
        task_loaders({t: train_sets[t] for t in tasks}, tokenizer, batch_size, seed), schedule, loss_weights
    )
    optimizer = optimizer_for(model, lr=lr, weight_decay=weight_decay)
    start = time.perf_counter()
    history = train_loop(
        model,
        loader,
        optimizer,
        num_epochs=1,
        device=device,
        precision=precision,
        warmup_ratio=warmup_ratio,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    correct = {}
    for task in tasks:
        logits = predict_task(model, eval_sets[task], tokenizer, task, device, precision)
        correct[task] = (logits.argmax(-1) == np.asarray(eval_sets[task]["labels"])).astype(float)
    steps = {task: sum(t == task for t in schedule) for task in tasks}
    return model, MultiTaskRun(correct, history, steps, seconds)


def alone_and_together(
    tasks: Mapping[str, Sequence[str]],
    train_sets: Mapping[str, Dataset],
    eval_sets: Mapping[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    sizes: Mapping[str, int],
    num_steps: int,
    configs: Mapping[str, float | None],
    seed: int,
    lr: float,
    batch_size: int,
    head_states: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    device: str = "cpu",
    precision: Precision = FP32,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float], dict[str, MultiTaskModel]]:
    """One seed of lesson 08's comparison (section 5; also ``benchmarks/multitask_transfer.py``): each task alone
    and the tasks together, at the same budget.

    ``configs`` maps a name to a sampling temperature, or to None for "each
    task alone": one model per task, trained on exactly the updates of its own
    that a joint model gets under the proportional rule (``T = 1``) over
    ``num_steps``, so the single-task models together cost one joint model.
    A temperature trains one model on all the tasks with
    :func:`task_schedule` at that temperature. Returns each configuration's
    0/1 correctness per task on ``eval_sets``, its training seconds (summed
    over the single-task models) and the joint models by name.
    """
    counts = task_counts(sizes, num_steps, 1.0)
    correct: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    joint_models: dict[str, MultiTaskModel] = {}

    def run(task_names, schedule):
        return train_multitask(
            {task: tasks[task] for task in task_names},
            train_sets,
            eval_sets,
            tokenizer,
            schedule,
            lr=lr,
            seed=seed,
            batch_size=batch_size,
            head_states=head_states,
            device=device,
            precision=precision,
        )

    for name, temperature in configs.items():
        if temperature is None:
            runs = [run([task], [task] * counts[task])[1] for task in tasks]
            correct[name] = {task: single.correct[task] for task, single in zip(tasks, runs)}
            seconds[name] = sum(single.seconds for single in runs)
        else:
            joint_models[name], joint = run(list(tasks), task_schedule(sizes, num_steps, temperature, seed))
            correct[name], seconds[name] = dict(joint.correct), joint.seconds
    return correct, seconds, joint_models
