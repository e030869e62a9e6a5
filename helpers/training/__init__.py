"""Training: the explicit loop and step timer (:mod:`.loops`), freezing, parameter groups
and optimizers (:mod:`.freezing`), causal-LM labels, collator and perplexity (:mod:`.causal_lm`),
focal loss and class weights (:mod:`.losses`), ``Trainer`` with a custom loss (:mod:`.trainers`),
one ``Trainer`` run per setting (:mod:`.classifier_runs`),
Elastic Weight Consolidation (:mod:`.regularization`),
a head fitted as a linear probe before fine-tuning (:mod:`.probing`),
learning-rate schedules (:mod:`.schedules`), the LR range test (:mod:`.lr_finder`), gradient
accumulation and activation memory (:mod:`.accumulation`), one explicit-loop run per setting
(:mod:`.loop_runs`), a hyperparameter search with Optuna (:mod:`.search`), one encoder with a
head per task (:mod:`.multitask`), the cached sentiment classifier of the later lessons
(:mod:`.reference`), LoRA with PEFT and supervised fine-tuning with TRL (:mod:`.lora`)."""
