"""Instruction data and prompt formats for GPT-style fine-tuning.

An instruction example is an Alpaca triple (``instruction``, ``input``,
``output``). :func:`instruction_dataset` builds one from the embedded real
data, with four tasks:

- ``sentiment`` (closed form): a Rotten Tomatoes snippet -> ``positive`` / ``negative``;
- ``topic`` (closed form): a Wikipedia lead paragraph -> one of its 11 topics;
- ``describe`` (free text): a lead paragraph -> the subject's one-line description;
- ``qa`` (free text): a chatterbot question -> its answer.

The held-out examples come from films, articles and questions that the
training examples never show. :func:`format_prompt` renders an example in one
of :data:`PROMPT_STYLES`; the response the model must learn is always
``output`` followed by the end-of-sequence token, so that it learns to stop.
Taught in ``course/04_gpt_instruction_tuning.ipynb``; other wordings of the
closed tasks' instructions (:data:`INSTRUCTION_PARAPHRASES`,
:func:`paraphrase_instructions`) test a tuned model's robustness in
``course/09_evaluation.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from helpers.data.loaders import (
    SENTIMENT_LABELS,
    check_fractions,
    qa_pairs,
    rotten_tomatoes,
    split_dataset,
    subsample,
    wiki_records,
)

PROMPT_STYLES = ("alpaca", "chat", "qa")
CLOSED_TASKS = ("sentiment", "topic")
FREE_TASKS = ("describe", "qa")
TASKS = CLOSED_TASKS + FREE_TASKS
# Generation budget per task: a label is a few tokens; the longest reference answers fit in these.
MAX_NEW_TOKENS = {"sentiment": 4, "topic": 10, "describe": 24, "qa": 40, "general_qa": 16}

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

SENTIMENT_INSTRUCTION = "Is this movie review positive or negative? Answer with one word."
DESCRIBE_INSTRUCTION = "Describe the subject of this paragraph in a few words."


def _first_words(text: str, max_words: int) -> str:
    """The first ``max_words`` words (long paragraphs cost CPU time and add little here)."""
    words = text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def format_prompt(
    instruction: str,
    input: str = "",
    style: str = "chat",
    tokenizer: PreTrainedTokenizerBase | None = None,
    system_prompt: str | None = "",
) -> str:
    """The text the model reads before its response, in one of :data:`PROMPT_STYLES`.

    ``"alpaca"``: the Stanford Alpaca template (the source chapter's);
    ``"chat"``: the model's own chat template (needs ``tokenizer``), ending
    with the assistant header; ``"qa"``: the companion notebook's
    ``"Q: ... A:"`` style. Train and generate with the same style.

    ``system_prompt`` (chat style only): the system message. The default
    ``""`` keeps the template's system block but empties it: SmolLM2's
    template otherwise inserts its default system sentence in front of every
    example, tokens that cost training time on a CPU and teach nothing.
    ``None`` lets the template insert its default.
    """
    if style == "alpaca":
        template = ALPACA_WITH_INPUT if input else ALPACA_NO_INPUT
        return template.format(instruction=instruction, input=input)
    if style == "chat":
        return _chat_prompt([(_user_message(instruction, input), None)], tokenizer, system_prompt)
    if style == "qa":
        question = f"{instruction} {input}" if input else instruction
        return f"Q: {question}\nA: "
    raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")


def _user_message(instruction: str, input: str) -> str:
    return f"{instruction}\n\n{input}" if input else instruction


def _chat_prompt(
    turns: Sequence[tuple[str, str | None]], tokenizer: PreTrainedTokenizerBase | None, system_prompt: str | None
) -> str:
    """The model's chat template over (user message, assistant answer) turns, ending with the assistant header."""
    if tokenizer is None or not tokenizer.chat_template:
        raise ValueError("style 'chat' needs a tokenizer that has a chat template")
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    for user, answer in turns:
        messages.append({"role": "user", "content": user})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def few_shot_prompt(
    shots: Sequence[Mapping[str, str]],
    instruction: str,
    input: str = "",
    style: str = "chat",
    tokenizer: PreTrainedTokenizerBase | None = None,
    system_prompt: str | None = "",
) -> str:
    """:func:`format_prompt` preceded by worked examples: the untuned model's few-shot baseline.

    ``shots`` are instruction examples (``instruction``, ``input``, ``output``),
    e.g. from :func:`few_shot_examples`. ``"chat"``: each shot is a user turn
    and the assistant's answer, then the question (the model's own template
    marks where each answer ends); ``"alpaca"`` and ``"qa"``: each shot is the
    formatted prompt followed by its answer, then the question. Taught in
    ``course/04_gpt_instruction_tuning.ipynb``.
    """
    if style == "chat":
        turns = [(_user_message(shot["instruction"], shot["input"]), shot["output"]) for shot in shots]
        return _chat_prompt(turns + [(_user_message(instruction, input), None)], tokenizer, system_prompt)
    worked = "".join(
        format_prompt(shot["instruction"], shot["input"], style) + shot["output"] + "\n\n" for shot in shots
    )
    return worked + format_prompt(instruction, input, style)


def few_shot_examples(dataset: Dataset, task: str, k: int, seed: int = 42) -> list[dict]:
    """``k`` examples of ``task`` from ``dataset`` (the training split), as many different answers as possible.

    The examples are drawn in a seeded random order, a new answer first while
    one remains, so that a 2-shot sentiment prompt shows one positive and one
    negative review rather than two of the majority class.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rows = [row for row in dataset if row["task"] == task]
    if len(rows) < k:
        raise ValueError(f"{k} examples of task {task!r} asked for, the dataset has {len(rows)}")
    order = np.random.default_rng(seed).permutation(len(rows))
    chosen, answers = [], set()
    for new_answers_only in (True, False):
        for i in order:
            if len(chosen) == k:
                break
            row = rows[int(i)]
            if row in chosen or (new_answers_only and row["output"] in answers):
                continue
            chosen.append(row)
            answers.add(row["output"])
    return chosen


def topic_instruction(topics: Sequence[str]) -> str:
    return f"Which topic is this paragraph about? Choose one of: {', '.join(topics)}. Answer with the topic only."


# Other wordings of the closed tasks' instructions, never seen in training: is a tuned model's answer robust to how
# the question is asked? The last wording of each task also drops "answer with one word / the topic only".
# ``{topics}`` is filled with the topic list, as in :func:`topic_instruction`. Used by ``course/09_evaluation.ipynb``.
INSTRUCTION_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "sentiment": (
        "Does this review express a positive or a negative opinion of the film? Reply with a single word.",
        "Classify the sentiment of the following film review: positive or negative?",
        "Read this review and tell me whether the critic liked the movie.",
    ),
    "topic": (
        "Pick the topic of this paragraph from this list: {topics}. Reply with the topic name only.",
        "What is the following text about? Possible topics: {topics}.",
        "Classify this encyclopedia paragraph into one of these categories: {topics}.",
    ),
}


def paraphrase_instructions(dataset: Dataset, index: int) -> Dataset:
    """The same rows with the instruction of every closed-task row replaced by wording ``index`` of its task.

    The wordings are :data:`INSTRUCTION_PARAPHRASES` (the topic list filled
    in as in :func:`topic_instruction`); inputs and expected outputs are
    unchanged, and so are rows of the free tasks. Used by
    ``course/09_evaluation.ipynb``.
    """
    counts = {len(wordings) for wordings in INSTRUCTION_PARAPHRASES.values()}
    if not 0 <= index < min(counts):
        raise ValueError(f"index must lie in [0, {min(counts) - 1}], got {index}")
    topics = ", ".join(closed_labels()["topic"])
    wordings = {task: INSTRUCTION_PARAPHRASES[task][index].format(topics=topics) for task in INSTRUCTION_PARAPHRASES}
    return dataset.map(lambda row: {"instruction": wordings.get(row["task"], row["instruction"])})


def _sentiment(split: Dataset, n: int | None, seed: int) -> list[dict]:
    names = split.features["label"].names
    rows = subsample(split, n, seed)
    return [
        {"task": "sentiment", "instruction": SENTIMENT_INSTRUCTION, "input": text, "output": names[label]}
        for text, label in zip(rows["text"], rows["label"])
    ]


def _wiki(
    split: Dataset, n_topic: int | None, n_describe: int | None, seed: int, topics: list[str], max_words: int
) -> list[dict]:
    """Topic questions and descriptions on different articles of ``split`` (half each when a count is ``None``)."""
    rows = split.shuffle(seed=seed).to_list()
    half = len(rows) // 2 if n_topic is None else min(n_topic, len(rows))
    describe_rows_source = rows[half:] if n_describe is None else rows[half : half + n_describe]
    topic_rows = [
        {
            "task": "topic",
            "instruction": topic_instruction(topics),
            "input": _first_words(r["text"], max_words),
            "output": r["topic"],
        }
        for r in rows[:half]
    ]
    describe_rows = [
        {
            "task": "describe",
            "instruction": DESCRIBE_INSTRUCTION,
            "input": _first_words(r["text"], max_words),
            "output": r["description"],
        }
        for r in describe_rows_source
    ]
    return topic_rows + describe_rows


def _qa(split: Dataset, n: int | None, seed: int) -> list[dict]:
    rows = subsample(split, n, seed)
    return [
        {"task": "qa", "instruction": q, "input": "", "output": a} for q, a in zip(rows["question"], rows["answer"])
    ]


def instruction_dataset(
    per_task: dict[str, int | None] | None = None,
    seed: int = 42,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    max_words: int = 40,
) -> DatasetDict:
    """Alpaca-style triples from the embedded data, split so that nothing held out is seen in training.

    Returns ``train``, ``validation`` and ``test`` with columns ``task``,
    ``instruction``, ``input``, ``output``. ``per_task`` caps the examples of
    each task in each split, e.g. ``{"train": 100, "validation": 10, "test": 40}``
    (``None``: all), or per task, e.g. ``{"train": {"sentiment": 400,
    "topic": 100, "describe": 16, "qa": 16}, ...}`` (a task left out: all). Sentiment is split by film, Wikipedia by article, the
    question/answer pairs by question. Paragraphs are cut to their first
    ``max_words`` words (every token costs training time on a CPU).
    Deterministic for a ``seed``.
    """
    check_fractions(fractions)
    per_task = {"train": None, "validation": None, "test": None} | dict(per_task or {})
    unknown = set(per_task) - {"train", "validation", "test"}
    if unknown:
        raise ValueError(f"per_task has unknown splits {sorted(unknown)}; use train, validation, test")

    reviews = rotten_tomatoes(seed=seed, fractions=fractions)
    articles = Dataset.from_list(_topic_articles())
    topics = sorted(set(articles["topic"]))
    articles = split_dataset(articles, "topic", fractions, seed)
    # Several answers per question: split the questions, not the pairs.
    pairs = qa_pairs()
    questions = Dataset.from_dict({"question": sorted(set(pairs["question"]))})
    question_split = split_dataset(questions, None, fractions, seed)

    splits = {}
    for name in ("train", "validation", "test"):
        n = per_task[name] if isinstance(per_task[name], dict) else dict.fromkeys(TASKS, per_task[name])
        unknown_tasks = set(n) - set(TASKS)
        if unknown_tasks:
            raise ValueError(f"per_task[{name!r}] has unknown tasks {sorted(unknown_tasks)}; use {list(TASKS)}")
        held = set(question_split[name]["question"])
        rows = (
            _sentiment(reviews[name], n.get("sentiment"), seed)
            + _wiki(articles[name], n.get("topic"), n.get("describe"), seed, topics, max_words)
            + _qa(pairs.select([i for i, q in enumerate(pairs["question"]) if q in held]), n.get("qa"), seed)
        )
        splits[name] = Dataset.from_list(rows).shuffle(seed=seed) if name == "train" else Dataset.from_list(rows)
    return DatasetDict(splits)


def _topic_articles() -> list[dict]:
    return [r for r in wiki_records() if r["topic"] and r["topic"] != "Uncategorized" and r["description"]]


GENERAL_QUESTION_TOPICS = ("trivia", "science", "history", "literature")


def general_questions(n: int | None = None, seed: int = 42, min_words: int = 4) -> Dataset:
    """Factual general-knowledge questions with a short reference answer, as an instruction dataset (task ``general_qa``).

    From the chatterbot corpus's trivia, science, history and literature
    files: questions of at least ``min_words`` words that end with ``?``
    (the corpus also holds chit-chat and split strings). No lesson trains on
    them: they probe what a model knew before it was fine-tuned
    (``course/06_catastrophic_forgetting.ipynb``). ``n``: a seeded random subset.
    """
    pairs = qa_pairs()
    keep = [
        i
        for i, (question, topic) in enumerate(zip(pairs["question"], pairs["topic"]))
        if topic in GENERAL_QUESTION_TOPICS and question.strip().endswith("?") and len(question.split()) >= min_words
    ]
    rows = subsample(pairs.select(keep), n, seed)
    return Dataset.from_dict(
        {
            "task": ["general_qa"] * len(rows),
            "instruction": rows["question"],
            "input": [""] * len(rows),
            "output": rows["answer"],
        }
    )


def closed_labels() -> dict[str, list[str]]:
    """The allowed answers of each closed-form task: ``{"sentiment": [...], "topic": [...]}``."""
    return {"sentiment": list(SENTIMENT_LABELS), "topic": sorted({r["topic"] for r in _topic_articles()})}


__all__ = [
    "ALPACA_NO_INPUT",
    "ALPACA_WITH_INPUT",
    "CLOSED_TASKS",
    "FREE_TASKS",
    "INSTRUCTION_PARAPHRASES",
    "MAX_NEW_TOKENS",
    "PROMPT_STYLES",
    "TASKS",
    "closed_labels",
    "few_shot_examples",
    "few_shot_prompt",
    "format_prompt",
    "general_questions",
    "instruction_dataset",
    "paraphrase_instructions",
    "topic_instruction",
]
