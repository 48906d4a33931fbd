"""What every command that computes does first, in one order: the process's compute settings
(`threads`, `precision`), the device, then the data (the labeled and test sets decoded into
their cache, the unlabeled pool listed). `run`, `plan`, `evaluate` and `label` start here."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config
from .data import ImageSet, Pool, load_splits
from .models import resolve_device, set_compute


@dataclass(frozen=True)
class Session:
    device: torch.device
    labeled: ImageSet | None  # None with test_only
    unlabeled: Pool | None  # None with test_only
    test: ImageSet


def start_session(config: Config, device_name: str | None = None, test_only: bool = False) -> Session:
    """`device_name` replaces `config.device` (under torchrun: this rank's device)."""
    set_compute(config.threads, config.precision)
    device = resolve_device(device_name or config.device)
    labeled, unlabeled, test = load_splits(config.data, config.seed, test_only=test_only,
                                           cache_dir=config.image_cache())
    return Session(device, labeled, unlabeled, test)
