"""What every command that computes does first, in one order: the process's compute settings
(`threads`, `precision`), the device, then the data (the labeled and test sets decoded into
their cache, the unlabeled pool listed) and the out-of-domain reference held out of the labeled
set (data.reference_fraction). `run`, `plan`, `evaluate` and `label` start here."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config
from .data import ImageSet, Pool, hold_out_reference, load_splits
from .models import resolve_device, set_compute


@dataclass(frozen=True)
class Session:
    device: torch.device
    labeled: ImageSet | None  # what models train on (the reference held out); None with test_only
    unlabeled: Pool | None  # None with test_only
    test: ImageSet
    # the held-out out-of-domain reference: never trained on, scored like the pool (labels/ood.py);
    # None with data.reference_fraction = 0 or test_only
    reference: ImageSet | None = None


def start_session(config: Config, device_name: str | None = None, test_only: bool = False) -> Session:
    """`device_name` replaces `config.device` (under torchrun: this rank's device)."""
    set_compute(config.threads, config.precision)
    device = resolve_device(device_name or config.device)
    labeled, unlabeled, test = load_splits(config.data, config.seed, test_only=test_only,
                                           cache_dir=config.image_cache())
    reference = None
    if labeled is not None:
        labeled, reference = hold_out_reference(labeled, config.data.reference_fraction, config.seed)
    return Session(device, labeled, unlabeled, test, reference)
