"""The selection as the student's training data, read lazily.

The selected images are gathered from the pool once, at training resolution, into `images.npy`
in the selection folder (uint8 [U, C, H, W], in store-row order: the order of
`read_selection`), and memory-mapped while the student trains: a step reads only its batch's
rows, so neither the pool nor the selection has to fit in RAM (the OS page cache keeps what
does). At 64 px RGB that is 12 KB an image on disk. Targets stay sparse, top-k class ids and
probabilities (12k bytes an image), and become dense one batch at a time.

Gathering walks the pool chunk by chunk beside the store's shards (shard s = chunk s) and
decodes only the selected items, so it costs a fraction of labeling; a pool that changed since
it was labeled (an item gone, or no longer decodable) is refused with the id named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ..data import Pool
from ..errors import UserError
from ..io import atomic_write
from ..train import PseudoLabeledSet
from .selection import SELECTION_FILE, read_selection
from .store import LabelStore

IMAGES = "images.npy"


def gather_selected_images(pool: Pool, store: LabelStore, selection_dir: Path, batch_size: int = 256) -> None:
    """Write the pixels of the rows selected in `selection_dir` to its images.npy (atomically)."""
    rows, _ = read_selection(selection_dir / SELECTION_FILE)
    manifest = store.manifest
    if manifest["pool"] != pool.identity:
        raise UserError(f"label store {store.root} was made from another pool ({manifest['pool']}, now "
                        f"{pool.identity}); relabel with the current data")
    plan = list(store.rows_by_shard(rows))
    paths = store.shard_paths()
    shape = (len(rows), pool.channels, pool.image_size, pool.image_size)

    def write(tmp: Path) -> None:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        progress = tqdm(total=len(rows), desc="gather selected images", unit="img", disable=None, leave=False)
        pending = iter(plan)
        shard, positions, local = next(pending, (None, None, None))
        for index, items in pool.chunks(manifest["shard_size"]):
            if shard is None:
                break
            if index != shard:
                continue
            wanted = pq.read_table(paths[shard], columns=["id"]).column("id").take(pa.array(local)).to_pylist()
            cursor, found = int(positions[0]), []
            for batch in pool.batches(items, batch_size, wanted=set(wanted)):
                if batch.bad:
                    image_id, reason = batch.bad[0]
                    raise UserError(f"{pool.where}: {image_id} was labeled but no longer decodes ({reason}); "
                                    f"the pool changed since labeling: use a new run name")
                images[cursor:cursor + len(batch.ids)] = batch.images.numpy()
                cursor += len(batch.ids)
                found += batch.ids
                progress.update(len(batch.ids))
            if found != wanted:
                missing = next(image_id for image_id in wanted if image_id not in set(found))
                raise UserError(f"{pool.where}: {missing} was labeled (store shard {shard}) but is no longer in the "
                                f"pool; the pool changed since labeling: use a new run name")
            shard, positions, local = next(pending, (None, None, None))
        progress.close()
        if shard is not None:
            raise UserError(f"{pool.where} ends before store shard {shard}; the pool changed since labeling: "
                            f"use a new run name")
        images.flush()
        del images

    atomic_write(selection_dir / IMAGES, write)


def load_pseudo_labeled(store: LabelStore, selection_dir: Path, kind: str, num_classes: int) -> PseudoLabeledSet:
    """The student's pseudo-labeled set: memory-mapped pixels, sparse targets, multiplicities."""
    rows, copies = read_selection(selection_dir / SELECTION_FILE)
    # copy-on-write: torch wants a writable array; nothing writes to it, so pages stay shared
    images = torch.from_numpy(np.load(selection_dir / IMAGES, mmap_mode="c"))
    if len(images) != len(rows):
        raise UserError(f"{selection_dir / IMAGES} holds {len(images)} images for {len(rows)} selected; "
                        f"delete {selection_dir} to select again")
    class_ids, probs = store.topk(rows, kind)
    return PseudoLabeledSet(images, torch.from_numpy(class_ids), torch.from_numpy(probs), num_classes,
                            torch.from_numpy(copies.astype(np.int64)))
