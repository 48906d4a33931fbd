"""Evaluation: clean accuracy (robustness suites build on the same predictions)."""

from .accuracy import evaluate_accuracy, topk_accuracy

__all__ = ["evaluate_accuracy", "topk_accuracy"]
