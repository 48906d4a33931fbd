"""Target kinds: how a pseudo-labeled image's stored prediction becomes the student's target.

`labels.kind` names one. A kind reads the store columns it declares, one shard's selected rows
at a time, and returns sparse targets: class ids [n, k] and probabilities [n, k] (rows need not
sum to 1; they are renormalized). To add one, write a function and register it:

    @register_target_kind("sharpened", columns=("topk_ids", "topk_probs"))
    def sharpened(table, k):
        ids, probs = topk_columns(table, k)
        return ids, probs ** 2  # p^(1/T) at T = 0.5, renormalized by the store

`labels.kind=sharpened` then selects it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..registries import TARGET_KINDS

TargetFunction = Callable[[pa.Table, int], tuple[np.ndarray, np.ndarray]]  # (table, stored k) -> (ids, probs)


@dataclass(frozen=True)
class TargetKind:
    name: str
    columns: tuple[str, ...]  # the store columns it reads
    targets: TargetFunction
    smoothed: bool = False  # its targets get the student's label_smoothing, as labeled ones do




def register_target_kind(name: str, columns: tuple[str, ...],
                         smoothed: bool = False) -> Callable[[TargetFunction], TargetFunction]:
    def register(function: TargetFunction) -> TargetFunction:
        TARGET_KINDS[name] = TargetKind(name, tuple(columns), function, smoothed)
        return function
    return register


def topk_columns(table: pa.Table, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored top-k class ids (int64 [n, k]) and probabilities (float32 [n, k])."""
    def fixed(name: str, dtype) -> np.ndarray:
        return table.column(name).combine_chunks().flatten().to_numpy().reshape(-1, k).astype(dtype)
    return fixed("topk_ids", np.int64), fixed("topk_probs", np.float32)


@register_target_kind("soft", columns=("topk_ids", "topk_probs"))
def soft(table: pa.Table, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's distribution (its top-k, renormalized): the paper's default."""
    return topk_columns(table, k)


@register_target_kind("hard", columns=("argmax",), smoothed=True)
def hard(table: pa.Table, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot on the teacher's argmax, label-smoothed like the labeled images (the official
    main.py: softmax_cross_entropy(..., label_smoothing=FLAGS.label_smoothing) for hard labels,
    none for soft ones)."""
    argmax = table.column("argmax").to_numpy().astype(np.int64)[:, None]
    return argmax, np.ones(argmax.shape, np.float32)
