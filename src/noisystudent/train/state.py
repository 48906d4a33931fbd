"""The resumable state of a training stage, and its checkpoints.

`TrainState` is what a resume needs and nothing else: model, optimizer, EMA weights and the
step. Every other random choice in training is a function of (seed, step) (train/batches.py),
so these restore the run exactly. A checkpoint (`checkpoints/last.pt`) is their state dicts,
written atomically; exported weights are models/weights.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from timm.utils.model_ema import ModelEmaV3

from ..config import TrainConfig
from ..errors import UserError
from ..io import atomic_write
from .optim import ema_decay, make_optimizer


def _state_bytes(state) -> int:
    if torch.is_tensor(state):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    ema: torch.nn.Module | None = None, fingerprint: str = "") -> None:
    """Atomically replace `path`. Refuses non-finite weights (they would poison every resume)
    and a disk with less than twice the checkpoint's size free (the old file stays until the new
    one is complete, so both must fit)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "fingerprint": fingerprint}
    if ema is not None:
        state["ema"] = ema.state_dict()
    for name, tensor in state["model"].items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"weights {name} are not finite at step {step}; not writing a checkpoint "
                            f"(the last good one stays in {path.parent})")
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = 2 * _state_bytes(state)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise UserError(f"only {free / 2**20:.0f} MiB free in {path.parent}, a checkpoint needs {needed / 2**20:.0f} "
                        f"MiB (twice its size); free some space and run the same command to resume")
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: torch.nn.Module | None = None, fingerprint: str | None = None) -> int:
    """Restore model, optimizer (and EMA weights) in place; return the step to continue from.
    With `fingerprint`, refuse a checkpoint trained on other data or settings."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise UserError(f"checkpoint {path} cannot be loaded ({error}); delete it to restart this stage") from None
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise UserError(f"checkpoint {path} was trained on different data or settings than this run has now; "
                        f"restore them, or delete {path.parent} to restart this stage")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if "ema" not in state:
            raise UserError(f"checkpoint {path} has no EMA weights but ema_decay is now set; "
                            f"delete it to restart this stage or set ema_decay=0")
        ema.load_state_dict(state["ema"])
    return int(state["step"])


class TrainState:
    """Model, optimizer, EMA and step: one optimizer update at a time, saved and loaded whole."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig):
        self.model, self.config, self.step = model, config, 0
        self.optimizer = make_optimizer(model, config)
        self.ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay > 0 else None

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def backward(self, loss: torch.Tensor) -> None:
        """The gradients of `loss` (under DDP, averaged over the ranks as they are computed)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def update(self) -> None:
        """One optimizer step on the gradients, then the EMA with the official warm-up of its decay."""
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            self.ema.apply_update_(self.model, ema_decay(self.config.ema_decay, self.step))

    @property
    def final_model(self) -> torch.nn.Module:
        """What the stage exports: the EMA weights when there are some."""
        return self.ema.module if self.ema is not None else self.model

    def save(self, path: Path, fingerprint: str) -> None:
        save_checkpoint(path, self.model, self.optimizer, self.step, self.ema.module if self.ema else None, fingerprint)

    def load(self, path: Path, fingerprint: str) -> None:
        self.step = load_checkpoint(path, self.model, self.optimizer, self.ema.module if self.ema else None,
                                    fingerprint)
