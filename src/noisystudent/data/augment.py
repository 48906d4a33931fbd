"""Training crops and flips: a 2 px pad-crop for small images (`train.crop=pad`), the official
Inception random-resized crop for large ones (`train.crop=inception`).

Split in two so that a batch's random choices can be drawn for the whole global batch while
each process transforms only its own rows (train/batches.py): `sample_weak` draws the choices
(a few numbers per image, cheap), `weak_augment` applies them to pixels, batched on whatever
device the batch lives on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

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


# The official ImageNet training crop (noisystudent preprocessing.py `_random_crop`, after
# Inception): tf.image.sample_distorted_bounding_box with area (0.08, 1), aspect ratio
# (3/4, 4/3), min_object_covered 0.1 of the whole image and 10 attempts; when none fits, the
# evaluation's center crop (a fraction S / (S + 32) of the shorter side). Then a flip.
CROP_AREA, CROP_ASPECT, CROP_MIN_COVERED, CROP_ATTEMPTS, CROP_PADDING = (0.08, 1.0), (3 / 4, 4 / 3), 0.1, 10, 32


def sample_inception(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Per image: (top, left, crop height, crop width, flip) as int64 [n, 5]."""
    area = (torch.rand(n, CROP_ATTEMPTS, generator=generator) * (CROP_AREA[1] - CROP_AREA[0]) + CROP_AREA[0])
    aspect = torch.rand(n, CROP_ATTEMPTS, generator=generator) * (CROP_ASPECT[1] - CROP_ASPECT[0]) + CROP_ASPECT[0]
    crop_h = (area * height * width / aspect).sqrt().round()
    crop_w = (area * height * width * aspect).sqrt().round()
    fits = (crop_h >= 1) & (crop_h <= height) & (crop_w >= 1) & (crop_w <= width) & (
        crop_h * crop_w >= CROP_MIN_COVERED * height * width)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    crop_h, crop_w = crop_h[rows, first.clamp(min=0)], crop_w[rows, first.clamp(min=0)]
    side = round(min(height, width) * min(height, width) / (min(height, width) + CROP_PADDING))  # the fallback
    crop_h = torch.where(first >= 0, crop_h, torch.full((n,), float(side)))
    crop_w = torch.where(first >= 0, crop_w, torch.full((n,), float(side)))
    top = (torch.rand(n, generator=generator) * (height - crop_h + 1)).floor().clamp(max=height - crop_h)
    left = (torch.rand(n, generator=generator) * (width - crop_w + 1)).floor().clamp(max=width - crop_w)
    top = torch.where(first >= 0, top, ((height - crop_h) / 2).floor())
    left = torch.where(first >= 0, left, ((width - crop_w) / 2).floor())
    flip = (torch.rand(n, generator=generator) < 0.5).float()
    return torch.stack([top, left, crop_h, crop_w, flip], dim=1).long()


def inception_crop(images: torch.Tensor, choices: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's crop (a row of sample_inception) resized to size x size, then flipped where
    chosen; uint8 in, uint8 out. Bilinear, batched with roi_align on the images' device (the
    official resize is bicubic, per image)."""
    boxes = choices[:, :4].to(images.device, torch.float32)
    rois = torch.stack([torch.arange(len(images), device=images.device, dtype=torch.float32), boxes[:, 1],
                        boxes[:, 0], boxes[:, 1] + boxes[:, 3], boxes[:, 0] + boxes[:, 2]], dim=1)
    # sampling_ratio 0: ceil(crop / size) points per output pixel, so shrinking averages (no aliasing)
    # and an uncropped image at its own size comes back unchanged
    out = roi_align(images.float(), rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0,
                    aligned=True)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    flip_rows = choices[:, 4].nonzero().flatten().to(images.device)
    out[flip_rows] = out[flip_rows].flip(-1)
    return out


def center_boxes(n: int, height: int, width: int, fraction: float) -> torch.Tensor:
    """The evaluation's crop as inception_crop choices: the centered square of side
    round(fraction x the shorter side), never flipped (a FixRes fine-tune's unaugmented input)."""
    side = max(1, round(fraction * min(height, width)))
    box = [(height - side) // 2, (width - side) // 2, side, side, 0]
    return torch.tensor([box] * n, dtype=torch.long)
