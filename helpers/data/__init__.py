"""Data: the embedded data sets and splits (:mod:`.loaders`), batching and padding
(:mod:`.batching`), instruction data and prompt formats (:mod:`.instructions`),
EDA text augmentation (:mod:`.augmentation`), skewed sets and random over/under-sampling
(:mod:`.sampling`). :func:`.loaders.review_tasks` gives sentiment and subjectivity on one split by
film (multi-task lesson)."""
