"""Data, the first layer: the embedded data sets and splits (:mod:`.loaders`), batching and padding
(:mod:`.batching`), instruction data and prompt formats (:mod:`.instructions`), causal-LM labels and
collation (:mod:`.causal_lm`), EDA text augmentation (:mod:`.augmentation`), skewed sets and random
over/under-sampling (:mod:`.sampling`), preference pairs with a verifiable winner (:mod:`.preferences`).

The lessons import from here (``from helpers.data import rotten_tomatoes, make_loader``); each name is
imported from its module on first use, so ``import helpers.data`` stays light. It imports nothing from
the layers above (models, training, evaluation, deployment): ``tests/test_layers.py`` checks it.
"""

from helpers.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "augmentation": ["augment_dataset"],
        "batching": ["make_loader", "padding_share", "tokenize_for_classification"],
        "causal_lm": [
            "IGNORE_INDEX",
            "instruction_collator",
            "label_share",
            "lm_examples",
            "mix_general_text",
            "tokenize_instruction",
            "tokenize_instructions",
        ],
        "instructions": [
            "CLOSED_TASKS",
            "INSTRUCTION_PARAPHRASES",
            "PROMPT_STYLES",
            "TASKS",
            "closed_labels",
            "few_shot_examples",
            "few_shot_prompt",
            "format_prompt",
            "general_questions",
            "instruction_dataset",
            "paraphrase_instructions",
        ],
        "loaders": [
            "DataFormatError",
            "DatasetNotAvailableError",
            "classification_data",
            "film_leakage",
            "leaked_training_sets",
            "load_user_data",
            "qa_pairs",
            "review_tasks",
            "rotten_tomatoes",
            "rotten_tomatoes_random_split",
            "split_dataset",
            "stratified_subsample",
            "subsample",
            "wiki_records",
            "wiki_text",
            "wiki_topics",
        ],
        "preferences": ["REJECTION_KINDS", "closed_task_pairs", "off_format_answer", "preference_questions"],
        "sampling": ["class_counts", "make_imbalanced", "random_oversample", "random_undersample"],
    },
)
