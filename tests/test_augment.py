"""Training crops: the small-image pad-crop and the official Inception random-resized crop."""

import math
import random

import pytest
import torch

from noisystudent.config import TrainConfig
from noisystudent.data import ImageSet, inception_crop, sample_inception
from noisystudent.data.augment import CROP_ASPECT, CROP_ATTEMPTS, CROP_MIN_COVERED, CROP_PADDING
from noisystudent.train import BatchBuilder
from noisystudent.train import batches as batches_module


def reference_crop(height: int, width: int, rng: random.Random) -> tuple[float, bool]:
    """The official crop's area fraction, one image at a time, written from the TF semantics
    (sample_distorted_bounding_box: area and aspect uniform, a crop that does not fit or covers
    less than min_object_covered is another attempt; after max_attempts, the center crop)."""
    for _ in range(CROP_ATTEMPTS):
        area, aspect = rng.uniform(0.08, 1.0), rng.uniform(*CROP_ASPECT)
        h, w = round(math.sqrt(area * height * width / aspect)), round(math.sqrt(area * height * width * aspect))
        if 1 <= h <= height and 1 <= w <= width and h * w >= CROP_MIN_COVERED * height * width:
            return h * w / (height * width), False
    side = round(min(height, width) ** 2 / (min(height, width) + CROP_PADDING))
    return side * side / (height * width), True


def test_inception_crops_follow_the_official_distribution():
    """Seeded and large: every crop in frame, aspect within 3/4..4/3, covering >= 10% of the
    image; the mean area and the fallback rate match a one-image-at-a-time reference."""
    n, size = 100_000, 64
    crops = sample_inception(n, size, size, torch.Generator().manual_seed(0)).double()
    top, left, h, w, flip = crops.unbind(1)
    assert torch.all(top >= 0) and torch.all(left >= 0) and torch.all(top + h <= size) and torch.all(left + w <= size)
    area = h * w / size**2
    assert torch.all(area >= CROP_MIN_COVERED - 1e-9) and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() >= CROP_ASPECT[0] * 0.9 and ratio.max() <= CROP_ASPECT[1] * 1.1  # rounding at 64 px
    rng = random.Random(1)
    reference = [reference_crop(size, size, rng) for _ in range(n)]
    reference_area = sum(a for a, _ in reference) / n
    assert area.mean().item() == pytest.approx(reference_area, abs=0.005)  # std of the mean ~0.0008
    assert abs(flip.mean().item() - 0.5) < 0.01


def test_inception_crop_resizes_each_crop_and_flips():
    x = torch.arange(16, dtype=torch.uint8).repeat(16, 1).view(1, 1, 16, 16) * 10  # column c has value 10c
    whole = torch.tensor([[0, 0, 16, 16, 0]])
    assert torch.equal(inception_crop(x, whole, 16), x), "the whole image at its own size is unchanged"
    left_half = inception_crop(x, torch.tensor([[0, 0, 16, 8, 0]]), 8)
    assert torch.equal(left_half, x[..., :8][..., ::1].reshape(1, 1, 16, 8)[:, :, ::2]), "columns 0-7, rows halved"
    flipped = inception_crop(x, torch.tensor([[0, 0, 16, 16, 1]]), 16)
    assert torch.equal(flipped, x.flip(-1))
    upscaled = inception_crop(x, torch.tensor([[4, 4, 8, 8, 0]]), 16)  # columns 4-11 (pixel edges 4..12), 2x
    sampled_at = 4 + (torch.arange(16) + 0.5) / 2 - 0.5  # output pixel centers, in input pixel-center units
    assert torch.equal(upscaled[0, 0], torch.round(10 * sampled_at).to(torch.uint8).expand(16, 16)), "bilinear"


def test_a_training_batch_takes_inception_crops_when_configured():
    generator = torch.Generator().manual_seed(0)
    labeled = ImageSet(torch.randint(0, 256, (20, 3, 48, 48), dtype=torch.uint8, generator=generator),
                       torch.arange(20) % 2, [str(i) for i in range(20)], ["a", "b"])
    pad = BatchBuilder(labeled, TrainConfig(batch_size=8, crop="pad", label_smoothing=0), 0, torch.device("cpu"))
    inception = BatchBuilder(labeled, TrainConfig(batch_size=8, crop="inception", label_smoothing=0), 0,
                             torch.device("cpu"))
    (padded, targets), (cropped, same_targets) = pad.build(3), inception.build(3)
    assert cropped.shape == padded.shape == (8, 3, 48, 48) and torch.equal(targets, same_targets)
    assert not torch.equal(cropped, padded)
    assert torch.equal(inception.build(3)[0], cropped), "a function of (seed, step)"


def test_crops_resize_to_the_models_train_resolution_and_the_center_crop_is_the_evaluations():
    generator = torch.Generator().manual_seed(1)
    labeled = ImageSet(torch.randint(0, 256, (12, 1, 32, 32), dtype=torch.uint8, generator=generator),
                       torch.arange(12) % 2, [str(i) for i in range(12)], ["a", "b"])
    center = BatchBuilder(labeled, TrainConfig(batch_size=4, crop="center", label_smoothing=0), 0, torch.device("cpu"),
                          input_size=16, crop_fraction=0.5)
    inputs, _ = center.build(0)
    rows = batches_module.sample_indices(12, 4, 0, 0, batches_module.LABELED_STREAM)
    assert torch.equal(inputs, labeled.images[rows][..., 8:24, 8:24].float() / 255), "the center half, unchanged"
    inception = BatchBuilder(labeled, TrainConfig(batch_size=4, crop="inception"), 0, torch.device("cpu"), input_size=20)
    assert inception.build(0)[0].shape == (4, 1, 20, 20)
