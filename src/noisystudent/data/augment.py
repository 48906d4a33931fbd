"""Weak augmentation (the teacher's and the labeled half of the student's): crop + flip.

Split in two so that a batch's random choices can be drawn for the whole global batch while
each process transforms only its own rows (train/batches.py): `sample_weak` draws the choices
(a few numbers per image, cheap), `weak_augment` applies them to pixels, batched on whatever
device the batch lives on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING = 2


def sample_weak(n: int, generator: torch.Generator, padding: int = PADDING) -> torch.Tensor:
    """Per image: (dy, dx, flip) as int64 [n, 3]; a crop offset after zero padding by `padding`
    px, and a horizontal flip with p=0.5."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = (torch.rand(n, generator=generator) < 0.5).long()
    return torch.stack([dy, dx, flip], dim=1)


def weak_augment(images: torch.Tensor, choices: torch.Tensor, padding: int = PADDING) -> torch.Tensor:
    """Crop and flip each image of `images` [n, C, H, W] as its row of `choices` (sample_weak) says."""
    _, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    out = torch.empty_like(images)
    # Grouping by offset keeps this to at most (2p+1)^2 slicing ops instead of one per image.
    offsets = choices[:, 0] * (2 * padding + 1) + choices[:, 1]
    for offset in offsets.unique().tolist():
        rows = (offsets == offset).nonzero().flatten().to(images.device)
        y, x = divmod(offset, 2 * padding + 1)
        out[rows] = padded[rows, :, y:y + height, x:x + width]
    flip_rows = choices[:, 2].nonzero().flatten().to(images.device)
    out[flip_rows] = out[flip_rows].flip(-1)
    return out
