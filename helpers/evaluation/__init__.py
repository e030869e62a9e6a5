"""Evaluation: classification and text metrics, baselines (:mod:`.metrics`); how sure a
measured number is (:mod:`.uncertainty`)."""
