"""Classification heads that read an encoder's output: the ``[CLS]`` token, or the mean of all tokens.

``transformers``' ``BertForSequenceClassification`` classifies the ``[CLS]``
vector after the *pooler* layer. ``all-MiniLM-L6-v2`` (the embedded
``"minilm"``) was trained by sentence-transformers to represent a sentence by
the **mean** of its tokens' last hidden states instead; its pooler is an
untrained leftover. :class:`BertMeanPoolingForSequenceClassification` is the
head that matches that training: mean over the real (non-padding) tokens,
dropout, one linear layer. Build it with
``helpers.models.load_classifier(name, num_labels, pooling="mean")``.
Compared with the ``[CLS]`` head in ``course/01_strategies.ipynb``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

__all__ = ["MEAN_POOLING_ARCHITECTURE", "mean_pool", "BertMeanPoolingForSequenceClassification"]

MEAN_POOLING_ARCHITECTURE = "BertMeanPoolingForSequenceClassification"


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``hidden_states`` (batch, tokens, dim) over the tokens whose ``attention_mask`` is 1.

    Padding is left out of the mean, so a text gets the same vector alone or
    in a padded batch. Summed in float32 (a bf16 sum over many tokens loses
    precision) and returned in the input's dtype. Without a mask every token
    counts. Used by :func:`helpers.models.inference.sentence_embeddings` and by
    :class:`BertMeanPoolingForSequenceClassification`.
    """
    hidden = hidden_states.float()
    if attention_mask is None:
        return hidden.mean(dim=1).to(hidden_states.dtype)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return mean.to(hidden_states.dtype)


class BertMeanPoolingForSequenceClassification(BertPreTrainedModel):
    """A BERT-style encoder (no pooler), the mean of its last hidden states over real tokens, dropout, a linear layer.

    Same interface as ``BertForSequenceClassification``: ``forward`` takes the
    tokenizer's outputs (and ``labels``) and returns a
    ``SequenceClassifierOutput`` whose ``loss`` (when ``labels`` are given)
    follows ``config.problem_type`` as in ``transformers`` (cross-entropy
    for single-label classification). It works with ``Trainer``, with
    :func:`helpers.training.loops.train_loop` and with the freezing helpers
    (the head is ``classifier``; there is no pooler). Dropout before the
    linear layer is ``config.classifier_dropout``, or
    ``config.hidden_dropout_prob`` when that is ``None``.

    ``save_pretrained`` writes a normal folder whose ``config.json`` names
    this class in ``architectures``; reload it with
    ``load_classifier(folder, num_labels, pooling="mean")`` or
    ``BertMeanPoolingForSequenceClassification.from_pretrained(folder)``.
    ``AutoModelForSequenceClassification`` does not know this class: it would
    build a ``[CLS]`` head instead, which ``load_classifier`` refuses.
    """

    _keys_to_ignore_on_load_unexpected = [r"pooler"]  # the checkpoint's unused [CLS] pooler
    accepts_loss_kwargs = False  # Trainer scales the loss for gradient accumulation itself

    def __init__(self, config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,  # accepted for compatibility; the output is always a SequenceClassifierOutput
    ) -> SequenceClassifierOutput:
        extra = {
            key: value
            for key, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states))
            if value is not None
        }
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **extra,
        )
        pooled = mean_pool(outputs.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
