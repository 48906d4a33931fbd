"""The labeled / unlabeled split of a training set."""

from __future__ import annotations

import torch

from ..errors import UserError
from .images import ImageSet


def split_labeled_unlabeled(train: ImageSet, labels_per_class: int, seed: int,
                            unlabeled_limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """`labels_per_class` images of each class (seeded) are labeled; the rest form the pool.

    The pool keeps its true labels only so that pseudo-label accuracy can be measured; no stage
    trains on them.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    labeled = []
    for cls in range(train.num_classes):
        members = order[train.labels[order] == cls]
        if len(members) < labels_per_class:
            raise UserError(f"class {train.classes[cls]!r} has {len(members)} images, fewer than "
                            f"data.labels_per_class={labels_per_class}")
        labeled.append(members[:labels_per_class])
    labeled_index = torch.cat(labeled).sort().values
    is_labeled = torch.zeros(len(train), dtype=torch.bool)
    is_labeled[labeled_index] = True
    pool = order[~is_labeled[order]]  # seeded order, so a limit takes a random subset
    if unlabeled_limit is not None:
        pool = pool[:unlabeled_limit]
    return train.subset(labeled_index), train.subset(pool.sort().values)


def hold_out_reference(labeled: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """(what models train on, the reference): `fraction` of each class's labeled images (seeded,
    at least one, and never a class's last one) held out of all training, the in-domain images
    no model has seen that out-of-domain scores are read against (labels/ood.py). fraction 0:
    (labeled, None)."""
    if fraction == 0:
        return labeled, None
    generator = torch.Generator().manual_seed(seed + 1)  # not the labeled split's draw
    held = []
    for cls in range(labeled.num_classes):
        members = (labeled.labels == cls).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held.append(members[:min(len(members) - 1, max(1, round(fraction * len(members))))])
    held_index = torch.cat(held).sort().values
    is_held = torch.zeros(len(labeled), dtype=torch.bool)
    is_held[held_index] = True
    return labeled.subset((~is_held).nonzero().flatten()), labeled.subset(held_index)
