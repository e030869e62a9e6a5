"""Preference pairs (helpers.data.preferences) and DPO written by hand (helpers.training.preference), checked
against TRL's DPOTrainer on the same batch. Tiny random Llama with SmolLM2's tokenizer: the claims are about
the formula and the token accounting, not about what a real model learns."""

import copy
import math

import numpy as np
import pytest
import torch

from helpers.data.instructions import closed_labels, format_prompt, instruction_dataset
from helpers.data.preferences import REJECTION_KINDS, closed_task_pairs, off_format_answer, preference_questions
from helpers.device import FP32
from helpers.evaluation.metrics import exact_match
from helpers.evaluation.preferences import answer_table, pair_scores
from helpers.models.generation import answer_instructions
from helpers.training.preference import (
    DPOObjective,
    chosen_nll,
    completion_logprobs,
    dpo_config_for,
    dpo_loss,
    grpo_config_for,
    on_policy_pairs,
    preference_batches,
    preferred_answer,
    prompt_completion_ids,
    reference_logprobs,
    simpo_config_for,
    train_dpo,
    trl_pair_loss,
)


@pytest.fixture(scope="module")
def instructions():
    return instruction_dataset({"train": 6, "validation": 3, "test": 3}, seed=0)


def test_pairs_prefer_the_right_label_in_the_requested_format(instructions, tiny_lm):
    _, tokenizer = tiny_lm
    split = instructions["train"]
    pairs = closed_task_pairs(split, tokenizer, style="chat", seed=0)
    labels = closed_labels()
    closed = [i for i, task in enumerate(split["task"]) if task in labels]
    assert len(pairs) == len(closed) * len(REJECTION_KINDS)
    for row in pairs:
        item = split[row["source"]]
        assert row["task"] == item["task"]
        assert row["prompt"] == format_prompt(item["instruction"], item["input"], "chat", tokenizer)
        assert row["chosen"] == item["output"] and row["chosen"] in labels[row["task"]]
        if row["kind"] == "wrong_label":
            assert row["rejected"] in labels[row["task"]] and row["rejected"] != row["chosen"]
        else:  # the right content, not in the one-word format
            assert row["rejected"] == off_format_answer(row["chosen"]) and row["rejected"] not in labels[row["task"]]
    assert closed_task_pairs(split, tokenizer, seed=0)["rejected"] == pairs["rejected"]


def test_pairs_keep_the_splits_apart(instructions):
    prompts = {name: set(closed_task_pairs(instructions[name], style="qa")["prompt"]) for name in instructions}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["validation"]


def test_pairs_refuse_bad_input(instructions):
    with pytest.raises(ValueError, match="kinds"):
        closed_task_pairs(instructions["train"], style="qa", kinds=["nonsense"])
    free = instructions["train"].filter(lambda row: row["task"] not in closed_labels())
    with pytest.raises(ValueError, match="no closed-task item"):
        closed_task_pairs(free, style="qa")
    bad = instructions["train"].map(lambda row: {"output": "maybe"} if row["task"] == "sentiment" else {})
    with pytest.raises(ValueError, match="not an allowed"):
        closed_task_pairs(bad, style="qa")


def test_completion_logprobs_sums_the_answer_tokens_and_the_end(tiny_lm):
    model, tokenizer = tiny_lm
    prompt, answer = "Q: Is the sky blue?\nA: ", "yes"
    prompt_ids, completion_ids = prompt_completion_ids(tokenizer, prompt, answer)
    assert completion_ids[-1] == tokenizer.eos_token_id
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    by_hand = sum(logprobs[t - 1, ids[0, t]].item() for t in range(len(prompt_ids), ids.shape[1]))
    # batched with a longer pair, so that this one is padded
    scored = completion_logprobs(model, tokenizer, [prompt, prompt + "Think twice."], [answer, "no, it is not"])
    assert scored[0].item() == pytest.approx(by_hand, abs=1e-4)
    assert not scored.requires_grad
    assert completion_logprobs(model, tokenizer, [prompt], [answer], grad=True).requires_grad


def test_dpo_loss_is_log_two_at_the_start_and_follows_the_margin():
    same = torch.tensor([-3.0, -5.0])
    start = dpo_loss(same, same - 1, same, same - 1, beta=0.1)
    assert start.loss.item() == pytest.approx(math.log(2))
    assert torch.equal(start.chosen_rewards, torch.zeros(2))
    better = dpo_loss(same + 2, same - 1, same, same - 1, beta=0.5)  # chosen log-ratio +2: margin 0.5 * 2
    assert better.loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert better.chosen_rewards.tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(same, same, same, same, beta=0)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(same, same[:1], same, same)


@pytest.mark.parametrize("sft_weight", [0.0, 0.7], ids=["dpo", "dpo+nll"])
def test_hand_loss_equals_trl_on_the_same_batch(instructions, tiny_lm, tmp_path, sft_weight):
    """The lesson's formula and TRL's DPOTrainer give one loss on one batch, with a reference that differs;
    with the NLL term, TRL's ``loss_type=["sigmoid", "sft"]`` is ``chosen_nll`` added with its weight."""
    policy, tokenizer = tiny_lm
    reference = copy.deepcopy(policy)
    torch.manual_seed(1)
    with torch.no_grad():  # a policy that has moved away from its reference: the log-ratios are not zero
        for parameter in policy.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    pairs = closed_task_pairs(instructions["train"], tokenizer, style="chat", seed=0).select(range(4))
    losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]} if sft_weight else {}
    config = dpo_config_for(tmp_path, FP32, "cpu", max_steps=1, beta=0.3, batch_size=4, progress=False, **losses)
    trl_loss = trl_pair_loss(policy, reference, tokenizer, pairs, config)

    prompts = pairs["prompt"]
    policy_chosen = completion_logprobs(policy, tokenizer, prompts, pairs["chosen"])
    hand = dpo_loss(
        policy_chosen,
        completion_logprobs(policy, tokenizer, prompts, pairs["rejected"]),
        completion_logprobs(reference, tokenizer, prompts, pairs["chosen"]),
        completion_logprobs(reference, tokenizer, prompts, pairs["rejected"]),
        beta=0.3,
    ).loss
    tokens = torch.tensor(
        [float(len(prompt_completion_ids(tokenizer, p, c)[1])) for p, c in zip(prompts, pairs["chosen"])]
    )
    hand = hand + sft_weight * chosen_nll(policy_chosen, tokens)
    assert abs(hand.item() - math.log(2)) > 1e-3  # the check would be empty at log 2
    assert hand.item() == pytest.approx(trl_loss, rel=1e-4)
    # TRL got copies: a copy of the course's reference still trains its own weights afterwards
    trained = copy.deepcopy(reference)
    completion_logprobs(trained, tokenizer, prompts, pairs["chosen"], grad=True).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters() if p.requires_grad)


def test_trl_tokenizes_the_pairs_as_the_hand_version(instructions, tiny_lm, tmp_path):
    from trl import DPOTrainer

    policy, tokenizer = tiny_lm
    pairs = closed_task_pairs(instructions["train"], tokenizer, style="chat", seed=0).select(range(4))
    config = dpo_config_for(tmp_path, FP32, "cpu", max_steps=1, batch_size=4, progress=False)
    config.precompute_ref_log_probs = False
    trainer = DPOTrainer(
        model=policy, ref_model=copy.deepcopy(policy), args=config, train_dataset=pairs, processing_class=tokenizer
    )
    for i, row in enumerate(pairs):  # the same tokens as TRL's own preparation
        prompt_ids, chosen_ids = prompt_completion_ids(tokenizer, row["prompt"], row["chosen"])
        assert trainer.train_dataset[i]["chosen_ids"] == chosen_ids
        assert trainer.train_dataset[i]["prompt_ids"] == prompt_ids


def test_objective_weighs_the_preference_and_the_supervised_terms(instructions, tiny_lm):
    model, tokenizer = tiny_lm
    pairs = closed_task_pairs(instructions["train"], tokenizer, style="chat", seed=0).select(range(4))
    reference = reference_logprobs(model, tokenizer, pairs)
    batch = next(iter(preference_batches(tokenizer, pairs, reference, batch_size=4, shuffle=False)))
    with torch.no_grad():
        dpo = DPOObjective(model, beta=0.1)(**batch).loss
        nll_only = DPOObjective(model, beta=0.1, sft_weight=1.0, dpo_weight=0.0)(**batch).loss
        both = DPOObjective(model, beta=0.1, sft_weight=0.5, dpo_weight=1.0)(**batch).loss
    assert dpo.item() == pytest.approx(math.log(2), abs=1e-5)  # the policy is its reference
    tokens = torch.tensor(
        [float(len(prompt_completion_ids(tokenizer, p, c)[1])) for p, c in zip(pairs["prompt"], pairs["chosen"])]
    )
    assert nll_only.item() == pytest.approx(chosen_nll(reference[0], tokens).item(), rel=1e-4)
    assert both.item() == pytest.approx(dpo.item() + 0.5 * nll_only.item(), rel=1e-4)
    for weights in ({"sft_weight": 0.0, "dpo_weight": 0.0}, {"sft_weight": -1.0}):
        with pytest.raises(ValueError, match="weights"):
            DPOObjective(model, beta=0.1, **weights)
    with pytest.raises(ValueError, match="counts"):
        chosen_nll(torch.zeros(3), torch.ones(2))


def test_pair_scores_read_the_margin_and_the_right_answers_probability():
    reference = (torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-3.0, -1.0, -0.5]))
    same = pair_scores(reference, reference, beta=0.1)
    assert (same["margin"] == 0).all() and (same["ranked_right"] == 0).all()
    policy = (torch.tensor([-0.5, -3.0, -0.7]), torch.tensor([-4.0, -1.0, -0.2]))
    scores = pair_scores(policy, reference, beta=0.5)
    assert scores["chosen_reward"].tolist() == pytest.approx([0.25, -0.5, -0.1])
    assert scores["rejected_reward"].tolist() == pytest.approx([-0.5, 0.0, 0.15])
    assert scores["margin"].tolist() == pytest.approx([0.75, -0.5, -0.25])
    assert scores["ranked_right"].tolist() == [1.0, 0.0, 0.0]
    assert scores["chosen_probability"].tolist() == pytest.approx(np.exp([-0.5, -3.0, -0.7]).tolist(), rel=1e-6)
    with pytest.raises(ValueError, match="same pairs"):
        pair_scores((torch.zeros(2), torch.zeros(2)), reference, beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        pair_scores(reference, reference, beta=0.0)


def test_answer_table_tells_right_from_in_format(tiny_lm):
    _, tokenizer = tiny_lm
    labels = closed_labels()
    wrong_label = next(label for label in labels["sentiment"] if label != "positive")
    table = answer_table(
        ["sentiment", "sentiment", "sentiment"],
        ["positive", wrong_label, "I think it is positive, really."],
        ["positive", "positive", "positive"],
        labels,
        tokenizer,
    )
    assert table["right"].tolist() == [1.0, 0.0, 0.0]
    assert table["in_format"].tolist() == [1.0, 1.0, 0.0]
    assert table["tokens"].iloc[2] > table["tokens"].iloc[0] >= 1
    with pytest.raises(ValueError, match="closed label"):
        answer_table(["qa"], ["Paris"], ["Paris"], labels, tokenizer)


def test_preference_questions_hold_no_sft_item_and_no_held_out_text():
    sft_sizes = {"sentiment": 30, "topic": 10}
    questions, held_out = preference_questions(sft_sizes, {"sentiment": 12, "topic": 5}, {"sentiment": 6, "topic": 4})
    assert list(questions["task"]).count("sentiment") == 12 and list(questions["task"]).count("topic") == 5
    assert sorted(held_out["task"]) == ["sentiment"] * 6 + ["topic"] * 4
    # the SFT model's items, a task left out having none (as instruction_model reads its recipe)
    sft_items = instruction_dataset(
        {"train": sft_sizes | {"describe": 0, "qa": 0}, "validation": 0, "test": 0}, seed=42, max_words=30
    )["train"]
    assert not set(questions["input"]) & set(sft_items["input"])
    assert not set(questions["input"]) & set(held_out["input"])
    only_topic, validation = preference_questions(sft_sizes, {"topic": 1}, {"topic": 3}, "validation")
    assert list(only_topic["task"]) == ["topic"] and list(validation["task"]) == ["topic"] * 3  # a task left out: none
    assert not set(validation["input"]) & set(held_out["input"])
    with pytest.raises(ValueError, match="closed tasks"):
        preference_questions(sft_sizes, {"qa": 1}, {"topic": 1})
    with pytest.raises(ValueError, match="held_out_split"):
        preference_questions(sft_sizes, {"topic": 1}, {"topic": 1}, "train")


def test_simpo_and_grpo_configs_are_set_for_the_machine(tmp_path):
    simpo = simpo_config_for(tmp_path, FP32, "cpu", max_steps=3, beta=2.0, gamma=1.0, lr=1e-5)
    assert (simpo.loss_type, simpo.cpo_alpha, simpo.beta, simpo.simpo_gamma) == ("simpo", 0.0, 2.0, 1.0)
    grpo = grpo_config_for(tmp_path, FP32, "cpu", max_steps=3, prompts_per_step=2, generations=4)
    assert (grpo.num_generations, grpo.per_device_train_batch_size, grpo.beta) == (4, 8, 0.0)
    for config in (simpo, grpo):
        assert config.use_cpu and not config.bf16 and not config.fp16 and config.max_steps == 3
        assert not config.gradient_checkpointing


def test_dpo_config_is_set_for_the_machine(tmp_path):
    precision = FP32
    config = dpo_config_for(tmp_path, precision, "cpu", max_steps=10, beta=0.2)
    assert config.beta == 0.2 and config.loss_type == ["sigmoid"] and config.precompute_ref_log_probs
    assert config.use_cpu and not config.bf16 and not config.gradient_checkpointing
    assert config.report_to == [] or config.report_to in ("none", ["none"])
    assert dpo_config_for(tmp_path, precision, "cpu", max_steps=10, loss_type=["ipo"]).loss_type == ["ipo"]
    with pytest.raises(ValueError, match="precision"):
        dpo_config_for(tmp_path, precision, "cuda", max_steps=10)


def test_preferred_answer_ranks_by_score_then_length():
    assert preferred_answer("negative", "positive", "positive", exact_match) == 1
    assert preferred_answer("Positive.", "it is positive", "positive", exact_match) == 0  # both wrong: shorter
    assert preferred_answer("positive", "Positive", "positive", exact_match) is None  # same score, same length


def test_on_policy_pairs_are_the_models_own_samples_ranked_by_the_rule(instructions, tiny_lm):
    model, tokenizer = tiny_lm
    items = instructions["validation"].select(range(6))
    pairs = on_policy_pairs(model, tokenizer, items, exact_match, style="qa", seed=3, max_new_tokens=5)
    draws = [
        answer_instructions(model, tokenizer, items, "qa", max_new_tokens=5, do_sample=True, seed=seed)
        for seed in (3, 4)
    ]
    assert draws[0] != draws[1]  # two real samples, not one answer twice
    made = 0
    for index, row in enumerate(items):
        answers = (draws[0][index], draws[1][index])
        winner = preferred_answer(*answers, row["output"], exact_match)
        found = [pair for pair in pairs if pair["source"] == index]
        if winner is None:
            assert not found
            continue
        made += 1
        (pair,) = found
        assert (pair["chosen"], pair["rejected"]) == (answers[winner], answers[1 - winner])
        assert pair["prompt"] == format_prompt(row["instruction"], row["input"], "qa")
        assert pair["chosen_score"] == exact_match(pair["chosen"], row["output"])
    assert made == len(pairs) > 0
    nothing = on_policy_pairs(model, tokenizer, items, lambda a, r: 0.0, style="qa", max_new_tokens=1, temperature=1e-3)
    assert len(nothing) == 0 and "chosen" in nothing.column_names  # one token, near-greedy: the same answer twice


def test_preference_batches_hold_chosen_then_rejected_rows_with_their_reference(instructions, tiny_lm):
    _, tokenizer = tiny_lm
    pairs = closed_task_pairs(instructions["train"], tokenizer, style="chat", seed=0).select(range(5))
    reference = (torch.arange(5.0), -torch.arange(5.0))
    batch = next(iter(preference_batches(tokenizer, pairs, reference, batch_size=3, shuffle=False)))
    assert batch["input_ids"].shape[0] == 6 and batch["reference_chosen"].tolist() == [0.0, 1.0, 2.0]
    assert batch["reference_rejected"].tolist() == [0.0, -1.0, -2.0]
    for row in range(3):
        for half, answer in ((0, pairs[row]["chosen"]), (3, pairs[row]["rejected"])):
            prompt_ids, completion_ids = prompt_completion_ids(tokenizer, pairs[row]["prompt"], answer)
            ids = batch["input_ids"][row + half][batch["attention_mask"][row + half].bool()].tolist()
            assert ids == prompt_ids + completion_ids  # left-padded: the row ends with its answer
            scored = batch["input_ids"][row + half][batch["completion_mask"][row + half].bool()].tolist()
            assert scored == completion_ids
    shuffled = [b["reference_chosen"] for b in preference_batches(tokenizer, pairs, reference, 2, seed=1)]
    assert sorted(torch.cat(shuffled).tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="reference"):
        preference_batches(tokenizer, pairs, (reference[0][:4], reference[1][:4]))


def test_train_dpo_starts_at_log_two_and_learns_its_pairs(instructions, tiny_lm):
    """The course loop with the DPO objective: the first update's loss is log 2 (policy = reference), and
    after training the chosen answers' log-ratios are above the rejected ones' on the training pairs."""
    model, tokenizer = tiny_lm
    pairs = closed_task_pairs(instructions["train"], tokenizer, style="qa", kinds=["wrong_label"], seed=0)
    reference = reference_logprobs(model, tokenizer, pairs)
    frozen = copy.deepcopy(model)
    history = train_dpo(model, tokenizer, pairs, reference, beta=0.5, lr=3e-3, epochs=6, batch_size=4, progress=False)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-4)
    after = dpo_loss(*reference_logprobs(model, tokenizer, pairs), *reference, beta=0.5)
    assert after.loss.item() < 0.5 * math.log(2)
    assert (after.chosen_rewards > after.rejected_rewards).float().mean().item() > 0.9
    assert not model.training
    untouched = dpo_loss(*reference_logprobs(frozen, tokenizer, pairs), *reference, beta=0.5)
    assert untouched.loss.item() == pytest.approx(math.log(2), abs=1e-5)  # the reference did not move
    with pytest.raises(ValueError, match="beta"):
        train_dpo(model, tokenizer, pairs, reference, beta=0.0)


@pytest.mark.slow
def test_simpo_and_grpo_train_through_trl_on_the_cpu(instructions, tiny_lm, tmp_path):
    """Both configurations drive TRL's trainers on this machine: SimPO moves the weights on pairs, GRPO scores its
    sampled answers with the exact reward and logs it at every step."""
    from datasets import Dataset
    from trl import GRPOTrainer
    from trl.experimental.cpo import CPOTrainer

    model, tokenizer = tiny_lm
    pairs = closed_task_pairs(instructions["train"], tokenizer, style="chat", seed=0).select_columns(
        ["prompt", "chosen", "rejected"]
    )
    simpo_model = copy.deepcopy(model)
    before = [p.detach().clone() for p in simpo_model.parameters()]
    config = simpo_config_for(tmp_path / "simpo", FP32, "cpu", max_steps=2, lr=1e-3, batch_size=2, progress=False)
    CPOTrainer(model=simpo_model, args=config, train_dataset=pairs, processing_class=tokenizer).train()
    assert any(not torch.equal(a, b) for a, b in zip(before, simpo_model.parameters()))

    seen = []

    def reward(completions, output, **kwargs):
        seen.extend(zip(completions, output))
        return [float(exact_match(c, o)) for c, o in zip(completions, output)]

    questions = Dataset.from_dict({"prompt": pairs["prompt"][:4], "output": pairs["chosen"][:4]})
    config = grpo_config_for(
        tmp_path / "grpo",
        FP32,
        "cpu",
        max_steps=2,
        lr=1e-4,
        prompts_per_step=2,
        generations=2,
        max_completion_length=4,
        progress=False,
    )
    trainer = GRPOTrainer(
        model=copy.deepcopy(model),
        reward_funcs=reward,
        args=config,
        train_dataset=questions,
        processing_class=tokenizer,
    )
    trainer.train()
    logged = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    assert len(logged) == 2 and all(0.0 <= value <= 1.0 for value in logged)
    assert len(seen) == 2 * 2 * 2 and {answer for _, answer in seen} <= set(pairs["chosen"][:4])
