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
