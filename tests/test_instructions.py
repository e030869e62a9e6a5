import pytest

from helpers.data.instructions import (
    CLOSED_TASKS,
    PROMPT_STYLES,
    TASKS,
    closed_labels,
    few_shot_examples,
    few_shot_prompt,
    format_prompt,
    instruction_dataset,
)
from helpers.data.loaders import qa_pairs, rotten_tomatoes
from helpers.models.loading import load_tokenizer

SIZES = {"train": 30, "validation": 5, "test": 10}


@pytest.fixture(scope="module")
def data():
    return instruction_dataset(SIZES, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m")


def test_every_task_in_every_split_with_the_requested_sizes(data):
    for name, size in SIZES.items():
        tasks = data[name]["task"]
        assert sorted(set(tasks)) == sorted(TASKS)
        assert all(tasks.count(task) == size for task in TASKS)
        assert data[name].column_names == ["task", "instruction", "input", "output"]
        assert all(output.strip() for output in data[name]["output"])


def test_held_out_inputs_are_never_seen_in_training(data):
    seen = {(r["instruction"], r["input"]) for r in data["train"]}
    for name in ("validation", "test"):
        assert not seen & {(r["instruction"], r["input"]) for r in data[name]}
    # Reviews come from films absent from training, questions from questions absent from training.
    reviews = rotten_tomatoes(seed=0)
    film = {r["text"]: r["movie"] for name in ("train", "test") for r in reviews[name]}
    train_films = {film[r["input"]] for r in data["train"] if r["task"] == "sentiment"}
    assert not train_films & {film[r["input"]] for r in data["test"] if r["task"] == "sentiment"}
    train_questions = {r["instruction"] for r in data["train"] if r["task"] == "qa"}
    assert not train_questions & {r["instruction"] for r in data["test"] if r["task"] == "qa"}
    assert {r["instruction"] for r in data["test"] if r["task"] == "qa"} <= set(qa_pairs()["question"])


def test_the_dataset_is_deterministic_for_a_seed():
    assert instruction_dataset(SIZES, seed=0)["test"].to_list() == instruction_dataset(SIZES, seed=0)["test"].to_list()
    assert instruction_dataset(SIZES, seed=1)["train"]["input"] != instruction_dataset(SIZES, seed=0)["train"]["input"]


def test_closed_tasks_have_their_label_sets(data):
    answers = closed_labels()
    assert answers["sentiment"] == ["negative", "positive"]
    assert set(CLOSED_TASKS) == set(answers) and len(answers["topic"]) == 11 and "Uncategorized" not in answers["topic"]
    for row in data["test"]:
        if row["task"] in answers:
            assert row["output"] in answers[row["task"]]
    topic_row = next(r for r in data["test"] if r["task"] == "topic")
    assert topic_row["output"] in topic_row["instruction"]  # the choices are listed in the instruction


def test_prompt_styles(tokenizer):
    alpaca = format_prompt("Name a colour.", "", "alpaca")
    assert alpaca.endswith("### Instruction:\nName a colour.\n\n### Response:\n") and "### Input" not in alpaca
    assert "### Input:\nred or blue\n\n### Response:\n" in format_prompt("Pick one.", "red or blue", "alpaca")
    chat = format_prompt("Name a colour.", "", "chat", tokenizer)
    assert chat.endswith("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n")
    assert format_prompt("How are you?", "", "qa") == "Q: How are you?\nA: "
    assert set(PROMPT_STYLES) == {"alpaca", "chat", "qa"}
    with pytest.raises(ValueError, match="chat template"):
        format_prompt("x", "", "chat")
    with pytest.raises(ValueError, match="style must be one of"):
        format_prompt("x", "", "llama")


def test_bad_split_names_are_refused():
    with pytest.raises(ValueError, match="unknown splits"):
        instruction_dataset({"training": 3})


def test_chat_prompt_has_an_empty_system_block_unless_asked(tokenizer):
    default = format_prompt("Name a colour.", "", "chat", tokenizer)
    assert default.startswith("<|im_start|>system\n<|im_end|>\n")
    template_default = format_prompt("Name a colour.", "", "chat", tokenizer, system_prompt=None)
    assert "SmolLM" in template_default and "SmolLM" not in default
    assert len(tokenizer(template_default)["input_ids"]) > len(tokenizer(default)["input_ids"])
    assert "<|im_start|>system\nBe brief.<|im_end|>" in format_prompt(
        "x", "", "chat", tokenizer, system_prompt="Be brief."
    )


def test_sizes_can_be_given_per_task():
    sizes = {"train": {"sentiment": 5, "topic": 3, "describe": 1, "qa": 2}, "validation": 1, "test": {"topic": 2}}
    data = instruction_dataset(sizes, seed=0)
    assert {task: data["train"]["task"].count(task) for task in TASKS} == sizes["train"]
    assert all(data["validation"]["task"].count(task) == 1 for task in TASKS)
    assert data["test"]["task"].count("topic") == 2 and data["test"]["task"].count("sentiment") > 2  # left out: all
    same = instruction_dataset({"train": dict.fromkeys(TASKS, 30), "validation": 5, "test": 10}, seed=0)
    assert same["train"].to_list() == instruction_dataset(SIZES, seed=0)["train"].to_list()
    with pytest.raises(ValueError, match="unknown tasks"):
        instruction_dataset({"train": {"sentiments": 3}})


def test_paraphrased_instructions_change_only_the_closed_tasks_wording(data):
    from helpers.data.instructions import INSTRUCTION_PARAPHRASES, paraphrase_instructions, topic_instruction

    test = data["test"]
    topics = closed_labels()["topic"]
    seen = {(row["task"], row["instruction"]) for row in test}
    for index in range(len(INSTRUCTION_PARAPHRASES["sentiment"])):
        rephrased = paraphrase_instructions(test, index)
        assert rephrased["input"] == test["input"] and rephrased["output"] == test["output"]
        assert rephrased["task"] == test["task"]
        for old, new in zip(test, rephrased):
            if old["task"] in CLOSED_TASKS:
                assert new["instruction"] != old["instruction"] and (old["task"], new["instruction"]) not in seen
                if old["task"] == "topic":
                    assert ", ".join(topics) in new["instruction"] and "{" not in new["instruction"]
            else:
                assert new["instruction"] == old["instruction"]
    assert topic_instruction(topics) in set(test["instruction"])  # the wording trained on is not a paraphrase
    with pytest.raises(ValueError, match="index"):
        paraphrase_instructions(test, len(INSTRUCTION_PARAPHRASES["topic"]))


def test_few_shot_examples_show_every_answer_before_repeating_one(data):
    two = few_shot_examples(data["train"], "sentiment", 2, seed=0)
    assert sorted(row["output"] for row in two) == ["negative", "positive"]
    topics = [r for r in data["train"] if r["task"] == "topic"]
    distinct = len({r["output"] for r in topics})
    many = few_shot_examples(data["train"], "topic", distinct + 2, seed=0)
    assert len({r["output"] for r in many}) == distinct  # every answer, then repeats
    assert len({(r["instruction"], r["input"]) for r in many}) == distinct + 2  # no example twice
    assert all(r["task"] == "topic" for r in many)
    assert few_shot_examples(data["train"], "topic", 3, seed=0) == few_shot_examples(data["train"], "topic", 3, seed=0)
    with pytest.raises(ValueError, match="examples of task"):
        few_shot_examples(data["train"], "sentiment", 31)


def test_few_shot_prompt_puts_the_worked_examples_before_the_question(data, tokenizer):
    shots = few_shot_examples(data["train"], "sentiment", 2, seed=0)
    question = next(r for r in data["test"] if r["task"] == "sentiment")
    for style in PROMPT_STYLES:
        alone = format_prompt(question["instruction"], question["input"], style, tokenizer)
        assert few_shot_prompt([], question["instruction"], question["input"], style, tokenizer) == alone
        prompt = few_shot_prompt(shots, question["instruction"], question["input"], style, tokenizer)
        assert prompt.endswith(alone if style != "chat" else "<|im_start|>assistant\n")
        positions = [prompt.index(shot["input"]) for shot in shots] + [prompt.index(question["input"])]
        assert positions == sorted(positions)
        for shot, start, end in zip(shots, positions, positions[1:]):  # each example followed by its own answer
            assert shot["output"] in prompt[start + len(shot["input"]) : end]
    chat = few_shot_prompt(shots, question["instruction"], question["input"], "chat", tokenizer)
    # The model's template closes each answer: the model sees where an answer ends.
    assert all(f"<|im_start|>assistant\n{shot['output']}<|im_end|>" in chat for shot in shots)
    assert chat.count("<|im_start|>user") == 3 and chat.count("<|im_start|>system") == 1
