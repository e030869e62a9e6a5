"""Frozen sentence embeddings (helpers.models.inference.sentence_embeddings) on the real MiniLM."""

import numpy as np

from helpers.models.inference import sentence_embeddings


def test_sentence_embeddings_are_mean_pooled_normalised_and_padding_free(minilm_shared):
    model, tokenizer = minilm_shared
    texts = [
        "A wonderful, moving film.",
        "The stock market fell sharply today after the announcement.",
        "A wonderful and moving movie.",
        "Short.",
    ]
    batched = sentence_embeddings(model, tokenizer, texts, batch_size=4)
    assert batched.shape == (4, model.config.hidden_size)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    alone = np.vstack([sentence_embeddings(model, tokenizer, [text]) for text in texts])
    assert np.allclose(batched, alone, atol=1e-5)  # padding in a batch changes nothing
    similarity = batched @ batched.T
    assert similarity[0, 2] > similarity[0, 1] + 0.2  # paraphrases are closer than unrelated texts
    # By hand: the mean of the real tokens' last hidden states, normalised.
    import torch

    encoded = tokenizer(texts[0], return_tensors="pt")
    with torch.inference_mode():
        hidden = model.base_model(**encoded).last_hidden_state[0].float()
    expected = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy()
    assert np.allclose(batched[0], expected, atol=1e-5)
