"""Calibration and per-class views of clean predictions."""

from __future__ import annotations

import torch


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum_b |B|/N * |accuracy(B) - confidence(B)|."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
    return ece.item()


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true class, predicted class] counts."""
    return torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    totals = confusion.sum(dim=1)
    return [(confusion[c, c] / totals[c]).item() if totals[c] > 0 else None for c in range(len(confusion))]
