"""Evaluation: clean accuracy and calibration, corruptions (mCE), perturbations (mFR), FGSM/PGD."""

from .accuracy import topk_accuracy
from .suite import compare_to_baseline, evaluate_model, evaluate_weights, stratified_sample

__all__ = ["compare_to_baseline", "evaluate_model", "evaluate_weights", "stratified_sample", "topk_accuracy"]
