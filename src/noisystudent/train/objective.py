"""What training minimizes: cross-entropy against soft targets, labeled and pseudo-labeled.

A teacher step's rows are all labeled. A student step's rows are B labeled then U = r x B
pseudo-labeled (on every rank: train/batches.py keeps labeled rows first), and the loss is one
mean over the B + U rows (`joint_mean`), or the official code's mean over the B plus r times
the mean over the U (`official`): the same per-image weights, but a data term (1 + r) times
larger against weight decay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import TrainConfig


def labeled_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_k t_k log p_k (equals F.cross_entropy for one-hot targets)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def joint_loss(logits: torch.Tensor, targets: torch.Tensor, labeled_rows: int, config: TrainConfig) -> torch.Tensor:
    """The step's loss; the first `labeled_rows` rows are labeled, the rest pseudo-labeled."""
    if config.loss_weighting == "official" and labeled_rows < len(logits):
        return (soft_cross_entropy(logits[:labeled_rows], targets[:labeled_rows])
                + config.unlabeled_ratio * soft_cross_entropy(logits[labeled_rows:], targets[labeled_rows:]))
    return soft_cross_entropy(logits, targets)
