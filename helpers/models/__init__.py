"""Models, the second layer: loading the embedded models by name or a Hub id (:mod:`.loading`), the
mean-pooling classification head (:mod:`.heads`), text generation (:mod:`.generation`) and inference
(logits, pipelines, chat replies, sentence embeddings: :mod:`.inference`).

The lessons import from here (``from helpers.models import load_classifier``); each name is imported
from its module on first use. It imports only from the data layer and the foundation
(``tests/test_layers.py``).
"""

from helpers.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "generation": ["answer_instructions", "generate"],
        "heads": ["mean_pool"],
        "inference": ["chat_reply", "predict_logits", "sentence_embeddings", "text_classification_pipeline"],
        "loading": [
            "ModelNotAvailableError",
            "count_parameters",
            "load_causal_lm",
            "load_classifier",
            "load_encoder",
            "load_tokenizer",
        ],
    },
)
