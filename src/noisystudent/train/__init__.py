"""Training: the loop (loop.py) and its parts: batches, objective, optimizer, resumable state."""

from .batches import BatchBuilder, Prefetcher, joint_batch_sizes, sample_indices
from .loop import Preempted, freeze_shallow_layers, steps_for, train_model
from .objective import joint_loss, soft_cross_entropy
from .optim import ema_decay, learning_rate, make_optimizer
from .state import TrainState, load_checkpoint, save_checkpoint

__all__ = ["BatchBuilder", "Prefetcher", "joint_batch_sizes", "sample_indices", "Preempted", "freeze_shallow_layers",
           "steps_for", "train_model", "joint_loss", "soft_cross_entropy", "ema_decay", "learning_rate",
           "make_optimizer", "TrainState", "load_checkpoint", "save_checkpoint"]
