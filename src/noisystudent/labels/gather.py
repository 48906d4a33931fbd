"""The selection as the student's training data, read lazily.

The selected images are gathered from the pool once, in store-row order (the order of
`read_selection`), into the selection folder, in one of two storages (`selection.storage`):

    pixels   images.npy, uint8 [U, C, H, W] decoded at training resolution and memory-mapped: a
             step reads only its batch's rows, nothing is decoded while the student trains. At
             64 px RGB that is 12 KB an image; at the paper's 475 px, 677 KB (88 TB for its 130M).
    encoded  encoded.bin, the bytes the pool stores each image in (a JPEG's, a tar sample's; an
             in-memory pool's rows as lossless PNG), decoded by rows whenever a batch needs them
             (data/rows.py): about the pool's own size per image (ImageNet's JPEGs average
             110 KB), at the cost of one decode per image per epoch, in threads.

Both decode with the same function from the same bytes, so they give the same pixels, and name
them by the same digest (selection_digest): switching storage resumes a student. Targets stay
sparse, top-k class ids and probabilities, memory-mapped from the student's folder, and become
dense one batch at a time.

Gathering walks the pool chunk by chunk beside the store's shards (shard s = chunk s) and
decodes only the selected items, so it costs a fraction of labeling; a pool that changed since
it was labeled (an item gone, or no longer decodable) is refused with the id named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ..data import Batch, Pool
from ..data.rows import ENCODED, OFFSETS, EncodedImages, write_encoded
from ..errors import UserError
from ..io import atomic_write
from .selection import SELECTION_FILE, read_selection
from .store import LabelStore

IMAGES = "images.npy"
STORAGES = ("pixels", "encoded")


@dataclass
class PseudoLabeledSet:
    """The selection the student trains on: each selected image once, with the number of times
    it enters the set (duplicates of short classes) kept as a count, not as copies of pixels.
    Targets are sparse (top-k) and made dense per batch; `images` may be memory-mapped, so a
    step reads only its own rows."""

    images: torch.Tensor | EncodedImages  # uint8 [U, C, H, W]
    class_ids: torch.Tensor  # int [U, k]: each image's target classes
    probs: torch.Tensor  # float32 [U, k]: their probabilities, summing to 1 (k = 1, p = 1: a hard label)
    num_classes: int
    copies: torch.Tensor | None = None  # int64 [U]; None = each image once
    smoothing: float = 0.0  # label smoothing of the dense targets (hard labels: the official code's 0.1)
    # what names the images and targets without reading them (selection_digest and the target
    # kind), or None: fingerprints then hash the tensors themselves
    digest: str | None = None

    def __post_init__(self):
        if not (len(self.images) == len(self.class_ids) == len(self.probs)) or self.class_ids.shape != self.probs.shape:
            raise ValueError(f"images {tuple(self.images.shape)}, class_ids {tuple(self.class_ids.shape)} and probs "
                             f"{tuple(self.probs.shape)} must have one row per image and the same k")
        unique = torch.arange(len(self.images))
        self.rows = unique if self.copies is None else unique.repeat_interleave(self.copies)  # set row -> image

    def __len__(self) -> int:
        return len(self.rows)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Dense targets [n, num_classes] of image indices `images`."""
        targets = dense_targets(self.class_ids[images], self.probs[images], self.num_classes)
        return targets * (1.0 - self.smoothing) + self.smoothing / self.num_classes if self.smoothing else targets


def dense_targets(class_ids: torch.Tensor, probs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[n, num_classes] with probs[i, j] at class_ids[i, j], zero elsewhere."""
    return torch.zeros(len(probs), num_classes).scatter_(1, class_ids.long(), probs.float())


def gather_selected_images(pool: Pool, store: LabelStore, selection_dir: Path, batch_size: int = 256,
                           storage: str = "pixels") -> None:
    """Write the images of the rows selected in `selection_dir` there (atomically), in store-row
    order: decoded at training resolution into images.npy (`storage="pixels"`), or as the bytes
    the pool stores them in, encoded.bin (`"encoded"`); the other storage's files are removed."""
    if storage not in STORAGES:
        raise ValueError(f"storage {storage!r}: one of {', '.join(STORAGES)}")
    rows, _ = read_selection(selection_dir / SELECTION_FILE)
    batches = _selected_batches(pool, store, rows, batch_size, encoded=storage == "encoded")
    if storage == "encoded":
        write_encoded(selection_dir, (data for batch in batches for data in batch.encoded))
    else:
        shape = (len(rows), pool.channels, pool.image_size, pool.image_size)

        def write(tmp: Path) -> None:
            images, cursor = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape), 0
            for batch in batches:
                images[cursor:cursor + len(batch.ids)] = batch.images.numpy()
                cursor += len(batch.ids)
            images.flush()
            del images

        atomic_write(selection_dir / IMAGES, write)
    for stale in (ENCODED, OFFSETS) if storage == "pixels" else (IMAGES,):
        (selection_dir / stale).unlink(missing_ok=True)


def _selected_batches(pool: Pool, store: LabelStore, rows: np.ndarray, batch_size: int, encoded: bool) -> Iterator[Batch]:
    """The selected rows' images, decoded (and with `encoded`, their bytes), in store-row order.
    Walks the pool chunk by chunk beside the store's shards and decodes only the selected items;
    a pool that changed since it was labeled is refused with the id named."""
    manifest = store.manifest
    if manifest["pool"] != pool.identity:
        raise UserError(f"label store {store.root} was made from another pool ({manifest['pool']}, now "
                        f"{pool.identity}); relabel with the current data")
    plan = iter(store.rows_by_shard(rows))
    paths = store.shard_paths()
    progress = tqdm(total=len(rows), desc="gather selected images", unit="img", disable=None, leave=False)
    shard, _, local = next(plan, (None, None, None))
    for index, items in pool.chunks(manifest["shard_size"]):
        if shard is None:
            break
        if index != shard:
            continue
        wanted = pq.read_table(paths[shard], columns=["id"]).column("id").take(pa.array(local)).to_pylist()
        found = []
        for batch in pool.batches(items, batch_size, wanted=set(wanted), encoded=encoded):
            if batch.bad:
                image_id, reason = batch.bad[0]
                raise UserError(f"{pool.where}: {image_id} was labeled but no longer decodes ({reason}); "
                                f"the pool changed since labeling: use a new run name")
            found += batch.ids
            progress.update(len(batch.ids))
            yield batch
        if found != wanted:
            missing = next(image_id for image_id in wanted if image_id not in set(found))
            raise UserError(f"{pool.where}: {missing} was labeled (store shard {shard}) but is no longer in the "
                            f"pool; the pool changed since labeling: use a new run name")
        shard, _, local = next(plan, (None, None, None))
    progress.close()
    if shard is not None:
        raise UserError(f"{pool.where} ends before store shard {shard}; the pool changed since labeling: "
                        f"use a new run name")


def selection_digest(store: LabelStore, selection_dir: Path) -> str:
    """What names a selection's images without reading them: the pool it came from (its identity,
    the digest of its listed ids) and the selected rows with their copies. The same for both
    storages, so switching `selection.storage` resumes a student."""
    digest = hashlib.sha256(json.dumps(store.manifest["pool"], sort_keys=True).encode())
    with open(selection_dir / SELECTION_FILE, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return f"selection-{digest.hexdigest()[:16]}"


def load_pseudo_labeled(store: LabelStore, selection_dir: Path, kind: str, num_classes: int,
                        label_smoothing: float = 0.0, threads: int = 2,
                        targets_dir: Path | None = None) -> PseudoLabeledSet:
    """The student's pseudo-labeled set: its images memory-mapped (images.npy) or decoded by rows
    in `threads` threads (encoded.bin), sparse targets (memory-mapped from `targets_dir`, the
    student's folder, when given: LabelStore.topk), multiplicities; `label_smoothing` applies
    when the target kind is a smoothed one (hard labels)."""
    from .targets import TARGET_KINDS

    rows, copies = read_selection(selection_dir / SELECTION_FILE)
    if (selection_dir / OFFSETS).is_file():
        pool = store.manifest["pool"]
        images = EncodedImages(selection_dir, pool["image_size"], pool["channels"], threads)
    else:
        # copy-on-write: torch wants a writable array; nothing writes to it, so pages stay shared
        images = torch.from_numpy(np.load(selection_dir / IMAGES, mmap_mode="c"))
    if len(images) != len(rows):
        raise UserError(f"{selection_dir} holds {len(images)} images for {len(rows)} selected; "
                        f"delete {selection_dir} to select again")
    class_ids, probs = store.topk(rows, kind, targets_dir)
    return PseudoLabeledSet(images, torch.from_numpy(class_ids), torch.from_numpy(probs), num_classes,
                            torch.from_numpy(copies.astype(np.int64)),
                            label_smoothing if TARGET_KINDS[kind].smoothed else 0.0,
                            f"{selection_digest(store, selection_dir)}-{kind}")
