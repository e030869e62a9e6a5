"""Evaluation, the fourth layer: classification and text metrics, baselines (:mod:`.metrics`); how sure a
measured number is (:mod:`.uncertainty`); perplexity and per-text losses of a causal LM
(:mod:`.perplexity`); metrics of imbalanced classes and threshold moving (:mod:`.imbalance`); a target task
against general ability, for forgetting (:mod:`.forgetting`); the comparison table of full, partial and
LoRA fine-tuning (:mod:`.adaptation`); calibration and temperature scaling (:mod:`.calibration`);
out-of-distribution scores (:mod:`.ood`); CheckList-style behavioural tests (:mod:`.robustness`); closed
tasks of instruction tuning (:mod:`.closed_tasks`); what preference tuning changed (:mod:`.preferences`); comparisons said in French, one vocabulary
(:mod:`.reporting`).

The lessons import from here (``from helpers.evaluation import bootstrap_interval``); each name is
imported from its module on first use. It imports nothing from deployment (``tests/test_layers.py``).
"""

from helpers.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "adaptation": ["adaptation_table"],
        "calibration": [
            "ece_interval",
            "expected_calibration_error",
            "fit_temperature",
            "negative_log_likelihood",
            "reliability_table",
            "softmax",
        ],
        "closed_tasks": ["clear_gain", "closed_task_table", "constrained_choice", "item_scores", "majority_answers"],
        "forgetting": ["answer_choice_correct", "encoder_probe_correct", "forgetting_table", "measure_abilities"],
        "imbalance": ["choose_threshold", "imbalance_table", "predict_with_threshold"],
        "metrics": [
            "classification_metrics",
            "exact_match",
            "fit_majority_baseline",
            "fit_tfidf_logreg",
            "highest_loss_examples",
            "instruction_scores",
            "named_label",
            "normalize_answer",
            "trainer_classification_metrics",
        ],
        "ood": [
            "energy_score",
            "fpr_at_tpr",
            "knn_score",
            "mahalanobis_score",
            "max_softmax_probability",
            "ood_auroc",
            "paired_ood_auroc",
        ],
        "reporting": [
            "TABLE_COLUMNS",
            "VERDICT_WORDS",
            "describe",
            "difference_text",
            "in_french",
            "verdict_for",
            "versus",
        ],
        "perplexity": ["response_losses", "response_perplexity", "text_losses"],
        "preferences": ["answer_table", "pair_scores", "preference_measures"],
        "robustness": ["run_checklist", "worst_failures"],
        "uncertainty": [
            "Interval",
            "PairedComparison",
            "bootstrap_interval",
            "bootstrap_metric",
            "holm_adjust",
            "holm_table",
            "holm_verdicts",
            "resamples_for_holm",
            "independent_difference",
            "mcnemar",
            "paired_bootstrap",
            "paired_bootstrap_by_group",
            "paired_bootstrap_metric",
            "paired_seeds",
            "seeds_interval",
        ],
    },
)
