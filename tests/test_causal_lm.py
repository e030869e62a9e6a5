"""Instruction data, perplexity, generation and train_causal_lm (lesson 04) on SmolLM2's tokenizer.

Tokenization, label masks, collators, the scoring formulas and train_causal_lm's mechanics do not depend on the
weights: they run on ``tiny_lm`` (tests/conftest.py), a fresh 2-block random Llama with SmolLM2's tokenizer, or
its float64 copy ``tiny64``. What needs the real SmolLM2 (``smollm``, slow) is behaviour: greedy generation
(batched equals one by one, the right answer), and real text scored as likelier than scrambled text.
"""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from helpers.data.causal_lm import (
    IGNORE_INDEX,
    instruction_collator,
    label_share,
    tokenize_instruction,
    tokenize_instructions,
)
from helpers.data.instructions import format_prompt
from helpers.evaluation.perplexity import mean_token_loss, perplexity, response_losses, response_perplexity
from helpers.models.generation import generate

ROWS = [
    {
        "instruction": "Is this movie review positive or negative? Answer with one word.",
        "input": "A joy from start to end.",
        "output": "positive",
    },
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."},
    {
        "instruction": "Describe the subject of this paragraph in a few words.",
        "input": "The violin is a wooden string instrument, the smallest of the violin family.",
        "output": "Bowed string instrument",
    },
]


@pytest.fixture(scope="module")
def tiny64(tiny_llama_dir):
    """The tiny Llama of tests/conftest.py in float64, for the module (read it, never change it), for
    equalities between computations that sum in different orders.

    In float32, a padded batch, an attention mask or another batch shape picks
    other kernels and moves a loss by up to ~1e-4 relative, depending on the
    CPU. In float64 the same reordering costs ~1e-13, so a rel=1e-9 tolerance
    fails only on a real scoring difference (a pad scored, a shifted label).
    """
    from helpers.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(str(tiny_llama_dir))
    return model.double(), tokenizer


def test_masked_positions_are_exactly_the_prompt_and_the_padding(tiny_lm):
    _, tokenizer = tiny_lm
    data = tokenize_instructions(Dataset.from_list(ROWS), tokenizer, style="chat")
    batch = instruction_collator(tokenizer)(data.to_list())
    for row, ids, mask, labels in zip(ROWS, batch["input_ids"], batch["attention_mask"], batch["labels"]):
        prompt_len = len(tokenizer(format_prompt(row["instruction"], row["input"], "chat", tokenizer))["input_ids"])
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()  # right padding
        assert (labels[:prompt_len] == IGNORE_INDEX).all()  # the prompt
        assert (labels[length:] == IGNORE_INDEX).all()  # the padding
        learned = labels[prompt_len:length]
        assert (learned == ids[prompt_len:length]).all()  # the response, learned as is
        assert tokenizer.decode(learned) == row["output"] + tokenizer.eos_token  # ... and the stop token


def test_unmasked_labels_copy_the_inputs_like_the_source(tiny_lm):
    _, tokenizer = tiny_lm
    masked = tokenize_instruction("Q: hi\nA: ", "hello", tokenizer)
    full = tokenize_instruction("Q: hi\nA: ", "hello", tokenizer, mask_prompt=False)
    assert full["labels"] == full["input_ids"] == masked["input_ids"]
    share = label_share(Dataset.from_list([masked]))
    assert share == pytest.approx(sum(label != IGNORE_INDEX for label in masked["labels"]) / len(masked["labels"]))
    assert 0 < share < label_share(Dataset.from_list([full])) == 1.0


def test_truncation_keeps_the_response(tiny_lm):
    _, tokenizer = tiny_lm
    encoded = tokenize_instruction("word " * 300, "the answer", tokenizer, max_length=32)
    assert len(encoded["input_ids"]) == 32
    assert tokenizer.decode([t for t in encoded["labels"] if t != IGNORE_INDEX]) == "the answer" + tokenizer.eos_token
    with pytest.raises(ValueError, match="more than max_length"):
        tokenize_instruction("prompt", "word " * 50, tokenizer, max_length=16)


def test_collator_refuses_a_left_padding_tokenizer(tiny_lm):
    _, tokenizer = tiny_lm
    tokenizer.padding_side = "left"
    try:
        with pytest.raises(ValueError, match="padded on the right"):
            instruction_collator(tokenizer)
    finally:
        tokenizer.padding_side = "right"


def float64_loss(model, tokenizer, text: str) -> float:
    """Mean next-token cross-entropy of one unpadded text, all in float64 (the model's own
    ``.loss`` casts logits to float32, which would dominate the comparison)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()


def test_perplexity_is_the_exponentiated_mean_loss(tiny64):
    model, tokenizer = tiny64  # float64: see the fixture
    text = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France."
    assert perplexity(model, tokenizer, [text]) == pytest.approx(
        math.exp(float64_loss(model, tokenizer, text)), rel=1e-9
    )
    # Batched with padding: the same as scoring token by token across texts, pads never scored.
    texts = [text, "Hello.", "Water boils at one hundred degrees Celsius at sea level."]
    losses, counts = [], []
    for one in texts:
        losses.append(float64_loss(model, tokenizer, one))
        counts.append(len(tokenizer(one)["input_ids"]) - 1)
    expected = math.exp(sum(loss * count for loss, count in zip(losses, counts)) / sum(counts))
    assert perplexity(model, tokenizer, texts, batch_size=3) == pytest.approx(expected, rel=1e-9)


def test_response_perplexity_scores_only_the_response(tiny64):
    model, tokenizer = tiny64  # float64: see the fixture
    data = Dataset.from_list(ROWS)
    tokenized = tokenize_instructions(data, tokenizer)
    loss, count = mean_token_loss(
        model, DataLoader(tokenized, batch_size=2, collate_fn=instruction_collator(tokenizer))
    )
    assert count == sum(len(tokenizer(r["output"])["input_ids"]) + 1 for r in ROWS)
    assert response_perplexity(model, tokenizer, data) == pytest.approx(math.exp(loss), rel=1e-9)
    tagged = Dataset.from_list([{**r, "task": t} for r, t in zip(ROWS, ["a", "b", "a"])])
    per_task = response_perplexity(model, tokenizer, tagged, by_task=True)
    assert set(per_task) == {"a", "b", "all"}
    assert per_task["all"] == pytest.approx(response_perplexity(model, tokenizer, data), rel=1e-9)
    alone = response_perplexity(model, tokenizer, Dataset.from_list([ROWS[1]]))
    assert per_task["b"] == pytest.approx(alone, rel=1e-9)  # padded in a batch or alone: the same score
    sums, counts = response_losses(model, tokenizer, data)  # per item, in the data's order
    assert counts.tolist() == [len(tokenizer(r["output"])["input_ids"]) + 1 for r in ROWS]
    assert math.exp(sums.sum() / counts.sum()) == pytest.approx(math.exp(loss), rel=1e-9)
    one_sum, one_count = response_losses(model, tokenizer, Dataset.from_list([ROWS[1]]))
    assert (sums[1], counts[1]) == (pytest.approx(one_sum[0], rel=1e-9), one_count[0])
    # Without the end token: one token fewer per response, and the loss of exactly that token less.
    answer_sums, answer_counts = response_losses(model, tokenizer, data, score_end=False)
    assert (answer_counts == counts - 1).all()
    with torch.no_grad():
        logits = model(**{k: torch.tensor([v]) for k, v in tokenized[1].items() if k != "labels"}).logits[0]
    end_loss = torch.nn.functional.cross_entropy(logits[-2:-1], torch.tensor([tokenizer.eos_token_id]))
    assert sums[1] - answer_sums[1] == pytest.approx(end_loss.item(), rel=1e-4, abs=1e-5)


def test_constrained_choice_picks_each_items_likeliest_allowed_answer(tiny64):
    """Items of tasks with 2 and 3 allowed answers, interleaved: each item's choice is the label whose response
    loss, scored alone, is the lowest; a task without allowed answers is refused."""
    from helpers.evaluation.closed_tasks import allowed_answer_losses, constrained_choice

    model, tokenizer = tiny64
    allowed = {"sentiment": ["negative", "positive"], "colour": ["red", "green", "blue"]}
    rows = [
        {"task": "sentiment", "instruction": "Is this review positive or negative?", "input": "A joy.", "output": ""},
        {"task": "colour", "instruction": "Name the colour of grass.", "input": "", "output": ""},
        {"task": "colour", "instruction": "Name the colour of the sky.", "input": "", "output": ""},
        {"task": "sentiment", "instruction": "Is this review positive or negative?", "input": "Dull.", "output": ""},
    ]
    chosen = constrained_choice(model, tokenizer, Dataset.from_list(rows), allowed)
    shared = allowed_answer_losses(model, tokenizer, Dataset.from_list(rows), allowed)
    expected = []
    for row, item_losses in zip(rows, shared):
        # each (item, answer) scored alone, its whole prompt computed again: the prompt's cache changes nothing
        alone = [
            response_losses(model, tokenizer, Dataset.from_list([{**row, "output": label}]))[0][0]
            for label in allowed[row["task"]]
        ]
        assert item_losses == pytest.approx(alone, rel=1e-9)
        expected.append(allowed[row["task"]][int(np.argmin(alone))])
    assert chosen == expected
    with pytest.raises(ValueError, match="closed tasks"):
        constrained_choice(model, tokenizer, Dataset.from_list([{**rows[0], "task": "qa"}]), allowed)


def test_smollm_finds_real_text_and_right_answers_likelier(smollm):
    """Behaviour of the real weights: a sentence beats its scrambled words, the right answers beat "banana"."""
    model, tokenizer = smollm
    text = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France."
    assert perplexity(model, tokenizer, [text]) < perplexity(
        model, tokenizer, ["tower the lattice Paris is wrought France in"]
    )
    data = Dataset.from_list(ROWS)
    wrong = Dataset.from_list([{**r, "output": "banana " * 3} for r in ROWS])
    assert response_perplexity(model, tokenizer, wrong) > response_perplexity(model, tokenizer, data)


def test_left_padded_batch_generation_equals_one_by_one(smollm):
    model, tokenizer = smollm
    prompts = [format_prompt(r["instruction"], r["input"], "chat", tokenizer) for r in ROWS]
    alone = [generate(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts]
    batched = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=3)
    assert batched == alone
    assert "Paris" in alone[1]
    assert tokenizer.padding_side == "right"  # generation did not change the tokenizer


def test_right_padding_breaks_batched_generation(smollm):
    model, tokenizer = smollm
    prompts = [format_prompt(r["instruction"], r["input"], "chat", tokenizer) for r in ROWS]
    alone = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=1)
    right = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=3, padding_side="right")
    assert right != alone  # the shorter prompts continue after their padding


def test_sampling_is_seeded_and_checks_its_settings(tiny_lm):
    model, tokenizer = tiny_lm
    prompt = [format_prompt("Write a word about the sea.", "", "chat", tokenizer)]
    first = generate(model, tokenizer, prompt * 4, max_new_tokens=10, do_sample=True, temperature=1.3, seed=1)
    assert first == generate(model, tokenizer, prompt * 4, max_new_tokens=10, do_sample=True, temperature=1.3, seed=1)
    assert len(set(first)) > 1  # four draws of a hot distribution differ
    with pytest.raises(ValueError, match="temperature > 0"):
        generate(model, tokenizer, prompt, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="padding_side"):
        generate(model, tokenizer, prompt, padding_side="middle")


def test_answer_instructions_keeps_the_order_and_the_task_budgets(smollm):
    from helpers.data.instructions import MAX_NEW_TOKENS
    from helpers.models.generation import answer_instructions

    model, tokenizer = smollm
    rows = Dataset.from_list([{**ROWS[1], "task": "qa"}, {**ROWS[0], "task": "sentiment"}])
    answers = answer_instructions(model, tokenizer, rows)
    assert len(answers) == 2 and "Paris" in answers[0]
    assert len(tokenizer(answers[1])["input_ids"]) <= MAX_NEW_TOKENS["sentiment"]


def test_answer_instructions_with_shots_answers_the_few_shot_prompts(tiny_lm):
    from helpers.data.instructions import MAX_NEW_TOKENS, few_shot_prompt
    from helpers.models.generation import answer_instructions

    model, tokenizer = tiny_lm
    rows = Dataset.from_list([{**ROWS[0], "task": "sentiment"}, {**ROWS[1], "task": "qa"}])
    shots = {
        "sentiment": [{"instruction": ROWS[0]["instruction"], "input": "A dull, lifeless film.", "output": "negative"}],
        "qa": [{"instruction": "What is the capital of Italy?", "input": "", "output": "Rome"}],
    }
    answers = answer_instructions(model, tokenizer, rows, shots=shots)
    for row, answer in zip(rows, answers):
        prompt = few_shot_prompt(shots[row["task"]], row["instruction"], row["input"], "chat", tokenizer)
        assert answer == generate(model, tokenizer, [prompt], max_new_tokens=MAX_NEW_TOKENS[row["task"]])[0]
    with pytest.raises(ValueError, match="no worked examples for task 'qa'"):
        answer_instructions(model, tokenizer, rows, shots={"sentiment": shots["sentiment"]})


def test_text_losses_is_each_texts_own_mean_loss(tiny64):
    from helpers.evaluation.perplexity import text_losses

    model, tokenizer = tiny64
    texts = [
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
        "Hello there.",
        "Water boils at one hundred degrees Celsius at sea level.",
    ]
    losses = text_losses(model, tokenizer, texts, batch_size=3)
    assert losses.shape == (3,)
    for text, loss in zip(texts, losses):  # batched with padding = each text alone
        assert loss == pytest.approx(float64_loss(model, tokenizer, text), rel=1e-9)
    assert math.exp(losses[0]) == pytest.approx(perplexity(model, tokenizer, texts[:1]), rel=1e-9)
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        text_losses(model, tokenizer, ["Hi"] if len(tokenizer("Hi")["input_ids"]) < 2 else [""])


def test_lm_examples_learn_every_token_and_truncate(tiny_lm):
    from helpers.data.causal_lm import lm_examples

    _, tokenizer = tiny_lm
    long_text = "word " * 300
    examples = lm_examples(["A short sentence.", long_text], tokenizer, max_length=32)
    assert [len(e["input_ids"]) for e in examples] == [len(tokenizer("A short sentence.")["input_ids"]), 32]
    for example in examples:
        assert example["labels"] == example["input_ids"]
        assert example["attention_mask"] == [1] * len(example["input_ids"])


def test_mix_general_text_keeps_the_budget(tiny_lm):
    from helpers.data.causal_lm import lm_examples, mix_general_text

    _, tokenizer = tiny_lm
    task = tokenize_instructions(Dataset.from_list(ROWS * 4), tokenizer)  # 12 examples, prompts masked
    general = lm_examples([f"General paragraph number {i} about the world." for i in range(10)], tokenizer)
    mixed = mix_general_text(task, general, general_share=0.25, seed=1)
    assert len(mixed) == len(task)
    fully_learned = [row for row in mixed if IGNORE_INDEX not in row["labels"]]
    assert len(fully_learned) == 3  # round(0.25 * 12) general paragraphs replace as many task examples
    assert all(
        row["input_ids"] in general_ids for row in fully_learned for general_ids in [[g["input_ids"] for g in general]]
    )
    assert mix_general_text(task, general, 0.25, seed=1)["input_ids"] == mixed["input_ids"]  # seeded
    assert len(mix_general_text(task, general, 0.0)) == len(task)
    with pytest.raises(ValueError, match="general_share"):
        mix_general_text(task, general, 1.0)
    with pytest.raises(ValueError, match="general examples needed"):
        mix_general_text(task, general[:2], 0.5)


def test_train_causal_lm_trains_only_the_unfrozen_weights_and_adds_ewc(tiny_lm, tmp_path):
    from helpers.device import FP32
    from helpers.training.causal_lm import train_causal_lm
    from helpers.training.freezing import freeze_embeddings, unfreeze_last_layers
    from helpers.training.regularization import EWC, EWCTrainer

    model, tokenizer = tiny_lm
    unfreeze_last_layers(model, 1)
    freeze_embeddings(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = tokenize_instructions(Dataset.from_list(ROWS), tokenizer)
    trainer, seconds = train_causal_lm(
        model,
        tokenizer,
        data,
        FP32,
        str(tmp_path),
        learning_rate=1e-3,
        epochs=1,
        batch_size=3,
        warmup=0.0,
        progress=False,
    )
    assert trainer.state.global_step == 1 and seconds > 0
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    last = model.config.num_hidden_layers - 1
    assert f"model.layers.{last}.self_attn.q_proj.weight" in changed
    assert f"model.layers.{last - 1}.self_attn.q_proj.weight" not in changed

    ewc = EWC({n: before[n] for n in trainable}, {n: torch.ones_like(before[n]) for n in trainable}, lam=1.0)
    trainer, _ = train_causal_lm(
        model,
        tokenizer,
        data,
        FP32,
        str(tmp_path),
        learning_rate=1e-3,
        epochs=2,
        batch_size=3,
        warmup=0.0,
        ewc=ewc,
        progress=False,
    )
    assert isinstance(trainer, EWCTrainer)
    penalties = [row["ewc_penalty"] for row in trainer.state.log_history if "ewc_penalty" in row]
    assert penalties and penalties[-1] > 0  # the weights left the anchor after the first run


def test_train_causal_lm_accumulates_groups_by_length_and_evaluates(tiny_lm, tmp_path):
    from helpers.device import FP32
    from helpers.training.causal_lm import train_causal_lm
    from helpers.training.freezing import freeze_embeddings, unfreeze_last_layers

    model, tokenizer = tiny_lm
    unfreeze_last_layers(model, 1)
    freeze_embeddings(model)
    data = tokenize_instructions(Dataset.from_list(ROWS), tokenizer)
    trainer, _ = train_causal_lm(
        model,
        tokenizer,
        data,
        FP32,
        str(tmp_path),
        learning_rate=1e-4,
        epochs=1,
        batch_size=1,
        accumulation=len(ROWS),
        warmup=0.0,
        eval_dataset=data,
        evaluations=1,
        group_by_length=True,
        progress=False,
    )
    assert trainer.state.global_step == 1  # one update for all the examples
    assert trainer.args.train_sampling_strategy == "group_by_length"
    assert any("eval_loss" in row for row in trainer.state.log_history)


def test_scored_logits_give_the_same_loss_and_gradients_from_fewer_logits(tiny64):
    """ScoredLogitsCollator asks the output layer only where a label is learned: same loss, same gradients,
    in the model's own loss and through Trainer.compute_loss with its token count (what train_causal_lm runs).
    transformers computes the cross-entropy in float32 even for a float64 model, hence rel=1e-6."""
    from transformers import Trainer, TrainingArguments

    from helpers.data.causal_lm import ScoredLogitsCollator, accepts_scored_logits

    model, tokenizer = tiny64
    assert accepts_scored_logits(model)
    features = tokenize_instructions(Dataset.from_list(ROWS), tokenizer).to_list()
    full, scored = instruction_collator(tokenizer)(features), ScoredLogitsCollator(tokenizer)(features)
    kept = scored["logits_to_keep"]
    assert 0 < len(kept) < full["input_ids"].shape[1] - 1  # the prompts' positions are dropped
    assert (scored["shift_labels"] == full["labels"][:, 1:][:, kept]).all()
    learned = full["labels"][:, 1:] != IGNORE_INDEX
    assert learned[:, kept].sum() == learned.sum()  # no learned label is lost
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args)
    count = int(learned.sum())
    results = []
    for batch in (full, scored):
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=count)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
        assert model(**batch).loss.item() == pytest.approx(results[0][0], rel=1e-6)
    model.zero_grad()
    (full_loss, full_grads), (scored_loss, scored_grads) = results
    assert scored_loss == pytest.approx(full_loss, rel=1e-6)
    assert len(full_grads) == len(scored_grads)
    largest = max(g.abs().max().item() for g in full_grads)
    assert max((a - b).abs().max().item() for a, b in zip(full_grads, scored_grads)) < 1e-6 * largest


def test_scored_logits_leave_a_fully_learned_batch_alone(tiny_lm):
    from helpers.data.causal_lm import ScoredLogitsCollator

    _, tokenizer = tiny_lm
    features = tokenize_instructions(Dataset.from_list(ROWS), tokenizer, mask_prompt=False).to_list()
    features = [f for f in features if len(f["input_ids"]) == max(len(g["input_ids"]) for g in features)]
    assert set(ScoredLogitsCollator(tokenizer)(features)) == {"input_ids", "attention_mask", "labels"}


def test_train_causal_lm_in_bf16_gives_the_model_back_computing_in_fp32(tiny_lm, tmp_path):
    """accelerate wraps forward in bf16 autocast for training; train_causal_lm removes the wrapper, so a trained
    model is scored in fp32 like the model it started from. The tiny Llama (random weights) keeps the bf16 step
    cheap on a CPU without native bf16; the wrapper does not depend on the size."""
    from helpers.device import Precision
    from helpers.training.causal_lm import train_causal_lm

    model, tokenizer = tiny_lm
    bf16 = Precision(name="bf16", reason="test", autocast_dtype=torch.bfloat16, device="cpu")
    data = tokenize_instructions(Dataset.from_list(ROWS), tokenizer)
    trainer, _ = train_causal_lm(
        model,
        tokenizer,
        data,
        bf16,
        str(tmp_path),
        learning_rate=1e-3,
        epochs=1,
        batch_size=3,
        warmup=0.0,
        progress=False,
    )
    assert trainer.state.global_step == 1 and trainer.model is model
    assert "_original_forward" not in model.__dict__ and "_is_accelerate_prepared" not in model.__dict__
    assert model.forward.__func__ is type(model).forward  # the class's own, its decorators included
    batch = dict(tokenizer(["A joy from start to end."], return_tensors="pt"))
    model.eval()
    with torch.no_grad():
        plain = type(model).forward(model, **batch).logits  # the class's forward: no autocast
        assert plain.dtype == torch.float32
        torch.testing.assert_close(model(**batch).logits, plain, rtol=0, atol=0)
