"""Training batches: which images step s trains on, their augmentation, and prefetch.

Every random choice of step s is drawn from generators seeded with (seed, s): which labeled
and pseudo-labeled images (consecutive slices of per-epoch permutations), their crops and
flips, their RandAugment ops, signs and cutout centers. A batch is therefore a pure function
of (seed, step), so a resume continues exactly, and batches can be built ahead of time in
worker threads in any order.

Under torchrun the random choices are drawn for the whole global batch (a few numbers per
image), but each rank gathers, decodes and augments only its own rows, rank, rank + W, ...
The union over ranks is the batch one process would build, at 1/W of the pixel work each.
Rows are labeled first: with B and U divisible by W, each rank's first B / W rows are labeled.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ..config import TrainConfig
from ..data import ImageSet, center_boxes, inception_crop, sample_inception, sample_weak, weak_augment
from ..labels import PseudoLabeledSet
from ..models import to_model_input
from ..noise import RandAugment
from .objective import labeled_targets

LABELED_STREAM, UNLABELED_STREAM, STEP_STREAM = 1, 2, 3


def seed_for(seed: int, stream: int, index: int) -> int:
    """Distinct, well-spread seeds per (seed, stream, index); torch wants < 2**63."""
    return (seed * 1_000_003 + stream * 7_919 + index * 104_729) % (2**63 - 1)


def sample_indices(n: int, count: int, step: int, seed: int, stream: int) -> torch.Tensor:
    """Rows for `step`: consecutive slices of per-epoch permutations (each epoch sees every row once)."""
    start = step * count
    rows = []
    while count > 0:
        epoch, offset = divmod(start, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, stream, epoch)))
        take = min(count, n - offset)
        rows.append(order[offset:offset + take])
        start, count = start + take, count - take
    return torch.cat(rows)


def joint_batch_sizes(batch_size: int, unlabeled_ratio: float) -> tuple[int, int]:
    """(B labeled, U unlabeled) per step; U = round(r * B), at least 1."""
    return batch_size, max(1, round(unlabeled_ratio * batch_size))


class BatchBuilder:
    """Builds this rank's rows of step s's batch: (inputs on `device`, targets on `device`).
    `input_size` is what the Inception and center crops resize to (the model's train
    resolution; default the stored size); `crop_fraction` is the center crop's share."""

    def __init__(self, labeled: ImageSet, config: TrainConfig, seed: int, device: torch.device,
                 pseudo: PseudoLabeledSet | None = None, randaugment: RandAugment | None = None,
                 rank: int = 0, world_size: int = 1, input_size: int | None = None, crop_fraction: float | None = None):
        self.labeled, self.config, self.seed, self.device = labeled, config, seed, device
        self.input_size = input_size or labeled.images.shape[-1]
        self.crop_fraction = crop_fraction or 1.0
        self.pseudo, self.randaugment = pseudo, randaugment
        batch, unlabeled = joint_batch_sizes(config.batch_size, config.unlabeled_ratio)
        self.labeled_size, self.unlabeled_size = batch, unlabeled if pseudo is not None else 0
        self.mine = torch.arange(rank, self.labeled_size + self.unlabeled_size, world_size)  # global rows
        self.labeled_rows_per_rank = batch // world_size

    def sample_crops(self, total: int, generator: torch.Generator) -> torch.Tensor:
        height, width = self.labeled.images.shape[-2:]
        if self.config.crop == "inception":
            return sample_inception(total, height, width, generator)
        if self.config.crop == "center":
            return center_boxes(total, height, width, self.crop_fraction)
        return sample_weak(total, generator)

    def build(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed_for(self.seed, STEP_STREAM, step))
        total = self.labeled_size + self.unlabeled_size
        crops = self.sample_crops(total, generator)[self.mine] if self.config.augment else None
        noise = self.randaugment.sample(total, generator).select(self.mine) if self.randaugment else None
        mine_labeled = self.mine[self.mine < self.labeled_size]
        rows = sample_indices(len(self.labeled), self.labeled_size, step, self.seed, LABELED_STREAM)[mine_labeled]
        pixels = [self.labeled.images[rows]]
        targets = [labeled_targets(self.labeled.labels[rows], self.labeled.num_classes, self.config.label_smoothing)]
        if self.pseudo is not None:
            mine_unlabeled = self.mine[self.mine >= self.labeled_size] - self.labeled_size
            drawn = sample_indices(len(self.pseudo), self.unlabeled_size, step, self.seed, UNLABELED_STREAM)
            rows = self.pseudo.rows[drawn[mine_unlabeled]]
            pixels.append(self.pseudo.images[rows])
            targets.append(self.pseudo.targets(rows))
        pixels, targets = torch.cat(pixels), torch.cat(targets)
        if self.device.type == "cuda":  # page-locked, so the copy below overlaps with compute
            pixels, targets = pixels.pin_memory(), targets.pin_memory()
        pixels = pixels.to(self.device, non_blocking=True)
        if crops is not None:
            pixels = (weak_augment(pixels, crops) if self.config.crop == "pad"
                      else inception_crop(pixels, crops, self.input_size))
        if noise is not None:
            pixels = self.randaugment.apply(pixels, noise)
        return to_model_input(pixels, self.device), targets.to(self.device, non_blocking=True)


class Prefetcher:
    """Yields (step, batch) for `steps`, with up to `depth` batches built ahead in worker threads.

    Building is a pure function of the step (BatchBuilder), so threads change when a batch is
    made, never what it holds. Gathering from memory-mapped images, uint8 augmentation and
    pinning release the GIL, so they overlap the model's forward and backward. `depth=0`
    builds each batch on the calling thread, when it is needed.
    """

    def __init__(self, build, steps: range, depth: int):
        self.build, self.steps, self.depth = build, steps, depth

    def __iter__(self) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
        if self.depth == 0:
            for step in self.steps:
                yield step, self.build(step)
            return
        with ThreadPoolExecutor(max_workers=self.depth, thread_name_prefix="batches") as workers:
            pending: dict[int, Future] = {}
            upcoming = iter(self.steps)
            try:
                for step in self.steps:
                    while len(pending) < self.depth + 1 and (ahead := next(upcoming, None)) is not None:
                        pending[ahead] = workers.submit(self.build, ahead)
                    yield step, pending.pop(step).result()
            finally:  # stopped early (an error, a preemption): drop what was not started
                for future in pending.values():
                    future.cancel()
