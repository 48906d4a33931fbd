"""Optimizer, learning-rate schedule and EMA decay, as the official code has them where it matters."""

from __future__ import annotations

import math

import torch
from timm.optim import RMSpropTF

from ..config import TrainConfig

NORM_LAYERS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
               torch.nn.GroupNorm, torch.nn.LayerNorm)


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float, schedule: str = "cosine",
                  steps_per_epoch: int = 1, decay_epochs: float = 2.4) -> float:
    """Linear warm-up to `peak`, then cosine decay to 0 at `total_steps`, or the official
    staircase: x0.97 every `decay_epochs` epochs counted from step 0, warm-up included
    (official utils.build_learning_rate: exponential_decay of the global step, then the warm-up
    replaces it for the first steps)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "exponential":
        return peak * 0.97 ** (step // max(1, round(decay_epochs * steps_per_epoch)))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # the official code decays every variable but BatchNorm's (main.py: 'batch_normalization' not in name)
    norms = set() if config.weight_decay_norms else {
        id(p) for module in model.modules() if isinstance(module, NORM_LAYERS) for p in module.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    parameters = [{"params": [p for p in trainable if id(p) not in norms], "weight_decay": config.weight_decay},
                  {"params": [p for p in trainable if id(p) in norms], "weight_decay": 0.0}]
    if config.optimizer == "rmsprop":
        # TF's RMSProp (decay 0.9, eps 1e-3 inside the square root, mean square started at 1),
        # which torch.optim.RMSprop is not: its eps outside the root and mean square from 0 make
        # the first steps up to ~30x larger at the paper's lr. timm's RMSpropTF is TF's.
        return RMSpropTF(parameters, lr=config.lr, alpha=0.9, eps=1e-3, momentum=config.momentum)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def ema_decay(decay: float, updates: int) -> float:
    """The official EMA's decay after `updates` optimizer steps (tf.train.ExponentialMovingAverage
    with num_updates): min(decay, (1 + s) / (10 + s)), so early averages forget the random init."""
    return min(decay, (1 + updates) / (10 + updates))
