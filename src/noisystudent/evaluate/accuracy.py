"""Top-k accuracy on a labeled image set."""

from __future__ import annotations

import torch

from ..data import ImageSet
from ..models import predict_logits


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
    return hits.float().mean().item()


def evaluate_accuracy(model: torch.nn.Module, test: ImageSet, device: torch.device, batch_size: int = 1024) -> dict:
    """{'top1', 'top5', 'n'} as fractions in [0, 1]."""
    logits = predict_logits(model, test.images, batch_size, device, desc="evaluate")
    return {"top1": topk_accuracy(logits, test.labels, 1), "top5": topk_accuracy(logits, test.labels, 5),
            "n": len(test)}
