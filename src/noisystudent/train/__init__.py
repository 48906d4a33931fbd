"""Training: the joint labeled / pseudo-labeled loop, checkpoints, exported weights."""

from .checkpoint import load_checkpoint, save_checkpoint
from .loop import (
    Preempted, PseudoLabeledSet, build_batch, dense_targets, freeze_shallow_layers, joint_batch_sizes, learning_rate,
    sample_indices, soft_cross_entropy, steps_for, train_model,
)

__all__ = ["load_checkpoint", "save_checkpoint",
           "Preempted", "PseudoLabeledSet", "build_batch", "dense_targets", "freeze_shallow_layers",
           "joint_batch_sizes", "learning_rate", "sample_indices", "soft_cross_entropy", "steps_for", "train_model"]
