"""Resumable training checkpoints and exported weights.

A checkpoint (`checkpoints/last.pt`) holds what a resume needs: model and optimizer state and
the step. Every other random choice in training is a function of (seed, step) (see loop.py),
so these three restore the run exactly. Exported weights (`final.safetensors`) carry the
model description in their metadata so any command can rebuild the model from the file alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UserError
from ..io import atomic_write
from ..models import Classifier, ModelSpec, build_model


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


def export_weights(path: Path, model: Classifier) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=model.spec.to_metadata()))


def exported_weights_file(path: str | Path) -> Path:
    """A stage folder's final.safetensors, or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "final.safetensors"
    if not path.is_file():
        raise UserError(f"weights file {path} not found; pass a stage folder (e.g. runs/demo/round-1/student) "
                        f"or its final.safetensors")
    return path


def load_exported(path: str | Path, dropout: float = 0.0, survival_prob: float = 1.0,
                  resolution: int | None = None) -> Classifier:
    """Rebuild a Classifier from `final.safetensors` (noise settings are not part of weights);
    `resolution` replaces the exported input resolution (for a FixRes fine-tune)."""
    path = exported_weights_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            spec = ModelSpec.from_metadata(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{path} is not a readable safetensors file ({error})") from None
    model = build_model(spec.name, spec.num_classes, spec.in_chans, dropout, survival_prob, spec.mean, spec.std,
                        resolution or spec.resolution)
    model.load_state_dict(tensors)
    return model
