"""Multi-task fine-tuning (helpers.training.multitask, course/08_multitask.ipynb): the real MiniLM, tiny data."""

import collections
import copy
import math

import numpy as np
import pytest
import torch

from helpers.data.batching import make_loader, tokenize_for_classification
from helpers.data.loaders import review_tasks, stratified_subsample, wiki_topics
from helpers.training.multitask import (
    MultiTaskLoader,
    MultiTaskModel,
    TaskView,
    alone_and_together,
    build_multitask_model,
    fit_heads_by_linear_probe,
    predict_task,
    task_counts,
    task_sampling_probabilities,
    task_schedule,
    train_multitask,
)

SIZES = {"sentiment": 300, "topic": 100, "subjectivity": 25}


def test_sampling_probabilities_follow_the_temperature_rule():
    proportional = task_sampling_probabilities(SIZES, 1.0)
    assert proportional == pytest.approx({"sentiment": 300 / 425, "topic": 100 / 425, "subjectivity": 25 / 425})
    uniform = task_sampling_probabilities(SIZES, math.inf)
    assert uniform == pytest.approx({task: 1 / 3 for task in SIZES})
    square_root = task_sampling_probabilities(SIZES, 2.0)
    total = math.sqrt(300) + 10 + 5
    assert square_root["sentiment"] == pytest.approx(math.sqrt(300) / total)
    assert square_root["subjectivity"] == pytest.approx(5 / total)
    # A higher temperature moves probability from the large task to the small one.
    assert proportional["subjectivity"] < square_root["subjectivity"] < uniform["subjectivity"]
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            task_sampling_probabilities(SIZES, bad)
    with pytest.raises(ValueError, match="at least one example"):
        task_sampling_probabilities({"a": 3, "b": 0})


@pytest.mark.parametrize("temperature", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("num_steps", [1, 7, 100, 1001])
def test_schedule_mix_follows_the_rule_and_is_seeded(temperature, num_steps):
    probabilities = task_sampling_probabilities(SIZES, temperature)
    schedule = task_schedule(SIZES, num_steps, temperature, seed=3)
    counts = collections.Counter(schedule)
    assert len(schedule) == num_steps == sum(task_counts(SIZES, num_steps, temperature).values())
    assert counts == {task: n for task, n in task_counts(SIZES, num_steps, temperature).items() if n}
    for task, p in probabilities.items():
        assert abs(counts[task] - num_steps * p) < 1, (task, counts[task], num_steps * p)  # the rule, rounded
    assert task_schedule(SIZES, num_steps, temperature, seed=3) == schedule
    if num_steps > 10:
        assert task_schedule(SIZES, num_steps, temperature, seed=4) != schedule  # another order
        # Mixed through the run: the small task is not all at one end.
        positions = [i for i, task in enumerate(schedule) if task == "subjectivity"]
        assert positions[0] < num_steps / 2 < positions[-1]


def test_task_counts_hand_example():
    # p = 300/425, 100/425, 25/425 of 10 steps = 7.06, 2.35, 0.59 -> floors 7, 2, 0; the one step left goes to
    # the largest remainder (subjectivity, 0.59).
    assert task_counts(SIZES, 10, 1.0) == {"sentiment": 7, "topic": 2, "subjectivity": 1}
    assert task_counts(SIZES, 9, math.inf) == {"sentiment": 3, "topic": 3, "subjectivity": 3}
    with pytest.raises(ValueError, match="at least 1"):
        task_counts(SIZES, 0)


@pytest.fixture(scope="module")
def encoder_and_data():
    from helpers.models.loading import load_encoder

    encoder, tokenizer = load_encoder("minilm")
    reviews = review_tasks()
    data = {"sentiment": reviews["sentiment"], "topic": wiki_topics(), "subjectivity": reviews["subjectivity"]}
    tasks = {task: splits["train"].features["label"].names for task, splits in data.items()}
    raw = {
        task: stratified_subsample(data[task]["train"], n, seed=0)
        for task, n in {"sentiment": 12, "topic": 22, "subjectivity": 6}.items()
    }
    tokenized = {task: tokenize_for_classification(d, tokenizer, max_length=32) for task, d in raw.items()}
    return encoder, tokenizer, tasks, raw, tokenized


def _model(encoder_and_data, seed=0):
    encoder, tokenizer, tasks, _, _ = encoder_and_data
    torch.manual_seed(seed)
    return MultiTaskModel(copy.deepcopy(encoder), tasks), tokenizer


def test_stratified_subsample_keeps_every_class():
    topics = wiki_topics()["train"]
    subset = stratified_subsample(topics, 22, seed=0)
    assert len(subset) == 22 and set(subset["label"]) == set(range(11))
    assert stratified_subsample(topics, 22, seed=0)["text"] == subset["text"]
    assert stratified_subsample(topics, 22, seed=1)["text"] != subset["text"]
    with pytest.raises(ValueError, match="cannot hold all 11 classes"):
        stratified_subsample(topics, 10)


def test_review_tasks_share_one_split_by_film_and_subjectivity_is_balanced():
    reviews = review_tasks()
    for split in ("train", "validation", "test"):
        labels = np.asarray(reviews["subjectivity"][split]["label"])
        assert (labels == 0).sum() == (labels == 1).sum() > 0
    train_films = set(reviews["sentiment"]["train"]["movie"]) | set(reviews["subjectivity"]["train"]["movie"])
    test_films = set(reviews["sentiment"]["test"]["movie"]) | set(reviews["subjectivity"]["test"]["movie"])
    assert not train_films & test_films
    # The subjective texts are reviews of the same split, the objective ones plot summaries (never a sentiment text).
    sentiment_texts = set(reviews["sentiment"]["test"]["text"])
    subjectivity = reviews["subjectivity"]["test"]
    assert all(
        (text in sentiment_texts) == bool(label) for text, label in zip(subjectivity["text"], subjectivity["label"])
    )


def test_loader_follows_the_schedule_restarts_a_finished_task_and_carries_weights(encoder_and_data):
    _, tokenizer, _, _, tokenized = encoder_and_data
    loaders = {task: make_loader(data, tokenizer, batch_size=4, seed=0) for task, data in tokenized.items()}
    schedule = ["subjectivity"] * 5 + ["topic", "sentiment"]  # subjectivity: 6 examples = 2 batches, so 2.5 passes
    loader = MultiTaskLoader(loaders, schedule, loss_weights={"topic": 0.5})
    batches = list(loader)
    assert len(loader) == len(batches) == 7
    assert [b["task"] for b in batches] == schedule
    assert [b["loss_weight"] for b in batches] == [1.0] * 5 + [0.5, 1.0]
    assert [len(b["labels"]) for b in batches[:5]] == [4, 2, 4, 2, 4]
    first_pass = sorted(torch.cat([batches[0]["labels"], batches[1]["labels"]]).tolist())
    assert first_pass == sorted(tokenized["subjectivity"]["labels"])
    with pytest.raises(ValueError, match="without a loader"):
        MultiTaskLoader(loaders, ["nope"])
    with pytest.raises(ValueError, match=">= 0"):
        MultiTaskLoader(loaders, schedule, loss_weights={"topic": -1})


def test_each_batch_reaches_its_own_head_only(encoder_and_data):
    model, tokenizer = _model(encoder_and_data)
    _, _, tasks, _, tokenized = encoder_and_data
    calls = collections.Counter()
    for task, head in model.heads.items():
        head.register_forward_hook(lambda module, args, output, task=task: calls.update([task]))
    batch = next(iter(make_loader(tokenized["topic"], tokenizer, batch_size=4, seed=0)))
    output = model(task="topic", **batch)
    assert output.logits.shape == (4, len(tasks["topic"])) and calls == {"topic": 1}
    output.loss.backward()
    assert model.heads["topic"].weight.grad.abs().sum() > 0
    assert model.heads["sentiment"].weight.grad is None and model.heads["subjectivity"].weight.grad is None
    assert (
        model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    )  # the shared body learns from every task
    with pytest.raises(KeyError, match="unknown task"):
        model(task="nope", **batch)


def test_loss_weight_scales_the_loss_and_its_gradient(encoder_and_data):
    model, tokenizer = _model(encoder_and_data)
    model.eval()  # no dropout: the two forwards are identical
    batch = next(iter(make_loader(encoder_and_data[4]["sentiment"], tokenizer, batch_size=4, seed=0)))
    plain = model(task="sentiment", **batch).loss
    weighted = model(task="sentiment", loss_weight=2.5, **batch).loss
    assert weighted.item() == pytest.approx(2.5 * plain.item(), rel=1e-5)
    model(task="sentiment", loss_weight=0.0, **batch).loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_save_and_reload_give_identical_logits_for_every_head(encoder_and_data, tmp_path):
    model, tokenizer = _model(encoder_and_data, seed=1)
    tokenized = encoder_and_data[4]
    model.eval()
    before = {task: predict_task(model, tokenized[task], tokenizer, task) for task in tokenized}
    model.save(tmp_path / "mt", tokenizer)
    reloaded = MultiTaskModel.load(tmp_path / "mt")
    assert reloaded.tasks == model.tasks and not reloaded.training
    for task in tokenized:
        np.testing.assert_array_equal(predict_task(reloaded, tokenized[task], tokenizer, task), before[task])
    with pytest.raises(FileNotFoundError, match="no saved multi-task model"):
        MultiTaskModel.load(tmp_path)


def test_linear_probe_heads_and_a_short_run_train_every_task(encoder_and_data):
    encoder, tokenizer, tasks, raw, tokenized = encoder_and_data
    model, _ = _model(encoder_and_data)
    states = fit_heads_by_linear_probe(model, tokenizer, raw, max_length=32)
    assert set(states) == set(tasks)
    # The fitted heads classify their own training texts better than chance.
    for task in tasks:
        accuracy = (
            predict_task(model, tokenized[task], tokenizer, task).argmax(-1) == np.asarray(tokenized[task]["labels"])
        ).mean()
        assert accuracy > 1 / len(tasks[task]), task
    assert TaskView(model, "topic").classifier is model.heads["topic"]
    schedule = ["sentiment", "topic", "subjectivity", "sentiment"]
    trained, run = train_multitask(
        tasks, tokenized, tokenized, tokenizer, schedule, lr=1e-4, seed=0, batch_size=4, head_states=states
    )
    assert run.steps_per_task == {"sentiment": 2, "topic": 1, "subjectivity": 1}
    assert len(run.history["loss"]) == 4 and all(np.isfinite(run.history["loss"]))
    assert {task: len(c) for task, c in run.correct.items()} == {task: len(d) for task, d in tokenized.items()}
    start, _ = build_multitask_model(tasks, head_states=states)
    for task in tasks:  # the run started from the probe's heads and moved them
        assert torch.equal(start.heads[task].weight, states[task]["weight"])
        assert not torch.equal(trained.heads[task].weight, states[task]["weight"])
    single, single_run = train_multitask(
        {"topic": tasks["topic"]},
        tokenized,
        tokenized,
        tokenizer,
        ["topic"] * 2,
        lr=1e-4,
        seed=0,
        batch_size=4,
        head_states=states,
    )
    assert list(single.heads) == ["topic"] and set(single_run.correct) == {"topic"}


@pytest.mark.slow  # seven short trainings of the real MiniLM
def test_alone_and_together_trains_each_task_on_its_proportional_share_and_the_joint_models(encoder_and_data):
    encoder, tokenizer, tasks, raw, tokenized = encoder_and_data
    model, _ = _model(encoder_and_data)
    states = fit_heads_by_linear_probe(model, tokenizer, raw, max_length=32)
    sizes = {task: len(data) for task, data in tokenized.items()}
    num_steps = 5
    configs = {"alone": None, "proportional": 1.0}
    correct, seconds, joint_models = alone_and_together(
        tasks, tokenized, tokenized, tokenizer, sizes, num_steps, configs, 3, lr=1e-4, batch_size=4, head_states=states
    )
    assert set(correct) == set(seconds) == set(configs) and list(joint_models) == ["proportional"]
    assert all(seconds[name] > 0 for name in configs)
    counts = task_counts(sizes, num_steps, 1.0)
    for task in tasks:  # "alone" is the task's own model on exactly the updates the joint model gives it
        _, single = train_multitask(
            {task: tasks[task]},
            tokenized,
            tokenized,
            tokenizer,
            [task] * counts[task],
            lr=1e-4,
            seed=3,
            batch_size=4,
            head_states=states,
        )
        np.testing.assert_array_equal(correct["alone"][task], single.correct[task])
    joint_model, joint = train_multitask(
        tasks,
        tokenized,
        tokenized,
        tokenizer,
        task_schedule(sizes, num_steps, 1.0, 3),
        lr=1e-4,
        seed=3,
        batch_size=4,
        head_states=states,
    )
    for task in tasks:  # the joint model is the one train_multitask gives for the proportional schedule
        np.testing.assert_array_equal(correct["proportional"][task], joint.correct[task])
        assert torch.equal(joint_models["proportional"].heads[task].weight, joint_model.heads[task].weight)
