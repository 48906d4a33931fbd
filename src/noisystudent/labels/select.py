"""Filter by confidence, then balance classes: the paper's data selection.

Paper, section 3: images whose teacher confidence is below 0.3 are dropped; then each class
is brought to the same number of images (130K on ImageNet): classes with too few are filled by
duplicating their images, classes with too many keep their most confident ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def filter_by_confidence(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of images the teacher is confident enough about (>= threshold)."""
    return confidence >= threshold


@dataclass
class Selection:
    rows: np.ndarray  # indices into the store, duplicates included, grouped by class
    per_class: list[dict]  # per class: available, kept, dropped_low_confidence, dropped_over_target, duplicated, selected
    images_per_class: int

    def stats(self, num_pool: int) -> dict:
        kept = sum(c["kept"] for c in self.per_class)
        return {"pool": num_pool, "kept": kept, "kept_fraction": kept / max(num_pool, 1),
                "selected": int(len(self.rows)), "images_per_class": self.images_per_class,
                "per_class": self.per_class}


def balance_classes(argmax: np.ndarray, confidence: np.ndarray, keep: np.ndarray, num_classes: int,
                    images_per_class: int | None) -> Selection:
    """Bring every class to `images_per_class` rows (default: mean kept count per class).

    Too many: keep the most confident. Too few: take every kept image as many whole times as
    fits, then the most confident ones once more for the remainder (deterministic, no RNG).
    A class with no confident image stays empty and is reported as such.
    """
    kept_counts = [int((keep & (argmax == c)).sum()) for c in range(num_classes)]
    target = images_per_class if images_per_class is not None else max(1, round(sum(kept_counts) / num_classes))
    rows, per_class = [], []
    for c in range(num_classes):
        members = np.flatnonzero(keep & (argmax == c))
        by_confidence = members[np.argsort(-confidence[members], kind="stable")]
        available = int((argmax == c).sum())
        if len(by_confidence) >= target:
            chosen = by_confidence[:target]
        elif len(by_confidence) > 0:
            whole, remainder = divmod(target, len(by_confidence))
            chosen = np.concatenate([np.tile(by_confidence, whole), by_confidence[:remainder]])
        else:
            chosen = by_confidence
        rows.append(chosen)
        per_class.append({"class": c, "available": available, "kept": len(by_confidence),
                          "dropped_low_confidence": available - len(by_confidence),
                          "dropped_over_target": max(0, len(by_confidence) - target),
                          "duplicated": max(0, len(chosen) - len(by_confidence)), "selected": len(chosen)})
    return Selection(np.concatenate(rows).astype(np.int64), per_class, target)


def select(argmax: np.ndarray, confidence: np.ndarray, num_classes: int, threshold: float,
           images_per_class: int | None) -> Selection:
    return balance_classes(argmax, confidence, filter_by_confidence(confidence, threshold), num_classes,
                           images_per_class)


def targets_for(probs: np.ndarray, kind: str) -> torch.Tensor:
    """Training targets from stored probabilities: the distribution (soft) or one-hot argmax (hard)."""
    probs = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))
    if kind == "soft":
        return probs
    if kind == "hard":
        return F.one_hot(probs.argmax(dim=1), probs.shape[1]).float()
    raise ValueError(f"label kind must be 'soft' or 'hard', got {kind!r}")
