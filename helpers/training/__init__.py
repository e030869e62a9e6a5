"""Training: the explicit loop and step timer (:mod:`.loops`), freezing, parameter groups
and optimizers (:mod:`.freezing`), causal-LM labels, collator and perplexity (:mod:`.causal_lm`)."""
