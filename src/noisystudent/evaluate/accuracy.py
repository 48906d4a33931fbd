"""Top-k accuracy."""

from __future__ import annotations

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
    return hits.float().mean().item()
