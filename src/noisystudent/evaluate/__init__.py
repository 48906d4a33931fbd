"""Evaluation: clean accuracy and calibration, corruptions (mCE), perturbations (mFR), FGSM/PGD."""

from .accuracy import topk_accuracy
from .suite import (SUITES, SuiteContext, compare_to_baseline, evaluate_model, evaluate_weights, register_suite,
                    stratified_sample)

__all__ = ["SUITES", "SuiteContext", "compare_to_baseline", "evaluate_model", "evaluate_weights", "register_suite",
           "stratified_sample", "topk_accuracy"]
