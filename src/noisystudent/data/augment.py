"""Weak augmentation (the teacher's and the labeled half of the student's): crop + flip.

Batched on whatever device the batch lives on, so it never waits on data-loader workers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weak_augment(images: torch.Tensor, generator: torch.Generator, padding: int = 2) -> torch.Tensor:
    """Random crop after zero padding by `padding` px, and horizontal flip with p=0.5."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    flip = (torch.rand(n, generator=generator) < 0.5).tolist()
    out = torch.empty_like(images)
    # Grouping by offset keeps this to at most (2p+1)^2 slicing ops instead of one per image.
    offsets = torch.tensor(dy) * (2 * padding + 1) + torch.tensor(dx)
    for offset in offsets.unique().tolist():
        rows = (offsets == offset).nonzero().flatten().to(images.device)
        y, x = divmod(offset, 2 * padding + 1)
        out[rows] = padded[rows, :, y:y + height, x:x + width]
    flip_rows = torch.tensor(flip).nonzero().flatten().to(images.device)
    out[flip_rows] = out[flip_rows].flip(-1)
    return out
