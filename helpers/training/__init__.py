"""Training, the third layer: the explicit loop and step timer (:mod:`.loops`), freezing, parameter groups
and optimizers (:mod:`.freezing`), causal-LM fine-tuning (:mod:`.causal_lm`), focal loss and class weights
(:mod:`.losses`), ``Trainer`` with a custom loss (:mod:`.trainers`), one ``Trainer`` run per setting
(:mod:`.classifier_runs`), one explicit-loop run per setting of a sweep (:mod:`.sweeps`), Elastic Weight
Consolidation (:mod:`.regularization`), a head fitted as a linear probe before fine-tuning
(:mod:`.probing`), learning-rate schedules (:mod:`.schedules`), the LR range test (:mod:`.lr_finder`),
gradient accumulation and activation memory (:mod:`.accumulation`), a hyperparameter search with Optuna
(:mod:`.search`), one encoder with a head per task (:mod:`.multitask`), the cached sentiment classifier of
the later lessons and lesson 04's instruction-tuned model (:mod:`.reference`), LoRA with PEFT and supervised fine-tuning with TRL (:mod:`.lora`),
full, partial and LoRA fine-tuning measured alike (:mod:`.adaptation`), DPO written out, trained by the
course loop, and TRL's ``DPOConfig`` for this machine (:mod:`.preference`), data-parallel training on several
processes, by hand, with DDP and with Accelerate, its costs and memory, and the guard against Trainer's silent one-process-each mode
(:mod:`.distributed`), and exercise 16's TF-IDF classifier (:mod:`.bow_classifier`).

The lessons import from here (``from helpers.training import train_loop``); each name is imported from
its module on first use. It imports nothing from evaluation or deployment (``tests/test_layers.py``).
"""

from helpers.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "accumulation": [
            "accumulation_check",
            "relative_difference",
            "saved_activation_bytes",
            "unequal_accumulation_gradients",
        ],
        "adaptation": [
            "AdaptationMethod",
            "StopAfterSteps",
            "adapt_causal_lm",
            "adapt_classifier",
            "prepare_model",
            "qlora_training_step",
            "quantized_weight_bytes",
        ],
        "bow_classifier": ["train_bow_classifier"],
        "causal_lm": ["train_causal_lm"],
        "classifier_runs": ["predict_probabilities", "restore_best_weights", "train_classifier"],
        "freezing": [
            "freeze_backbone",
            "freeze_embeddings",
            "model_parts",
            "optimizer_for",
            "parameter_groups",
            "trainable_summary",
            "training_state_bytes",
            "unfreeze_all",
            "unfreeze_last_layers",
        ],
        "loops": ["evaluate", "time_training_steps", "train_loop"],
        "lora": [
            "LoRALinear",
            "load_adapter",
            "merge_lora",
            "prompt_completion_dataset",
            "save_adapter",
            "sft_config_for",
            "unwrap_peft",
        ],
        "losses": ["balanced_class_weights", "focal_loss"],
        "lr_finder": ["lr_range_test"],
        "multitask": [
            "MultiTaskLoader",
            "MultiTaskModel",
            "alone_and_together",
            "build_multitask_model",
            "fit_heads_by_linear_probe",
            "predict_task",
            "task_counts",
            "task_loaders",
            "task_sampling_probabilities",
            "task_schedule",
            "train_multitask",
        ],
        "distributed": [
            "SHARDINGS",
            "EquivalenceSetup",
            "accelerate_run",
            "all_reduce_gradients",
            "bus_bandwidth_from",
            "check_trainer_is_distributed",
            "data_parallel_step_times",
            "disable_dropout",
            "equivalence_runs",
            "free_port",
            "max_weight_difference",
            "projected_step_seconds",
            "ring_all_reduce_seconds",
            "run_on_processes",
            "shard_indices",
            "sharded_state_per_rank",
            "step_costs",
            "token_averaging_runs",
            "train_with_accelerate",
            "training_state_per_rank",
            "update_difference",
        ],
        "preference": [
            "DPOLoss",
            "DPOObjective",
            "chosen_nll",
            "completion_logprobs",
            "dpo_config_for",
            "dpo_loss",
            "grpo_config_for",
            "on_policy_pairs",
            "preference_batches",
            "preferred_answer",
            "prompt_completion_ids",
            "reference_logprobs",
            "simpo_config_for",
            "train_dpo",
            "trl_pair_loss",
        ],
        "probing": ["fit_head_by_linear_probe", "head_inputs"],
        "reference": ["instruction_model", "sentiment_classifier"],
        "regularization": ["EWC", "DecoupledEWCCallback"],
        "schedules": ["SCHEDULES", "schedule_curve", "warmup_steps_for"],
        "search": ["DEFAULT_SPACE", "search_hyperparameters"],
        "sweeps": ["train_and_evaluate"],
        "trainers": ["LossTrainer", "StepTimer"],
    },
)
