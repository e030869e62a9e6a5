"""Evaluation: classification and text metrics, baselines (:mod:`.metrics`); how sure a
measured number is (:mod:`.uncertainty`); metrics of imbalanced classes and threshold moving
(:mod:`.imbalance`); a target task against general ability, for forgetting (:mod:`.forgetting`);
calibration and temperature scaling (:mod:`.calibration`); out-of-distribution scores
(:mod:`.ood`); CheckList-style behavioural tests (:mod:`.robustness`)."""
