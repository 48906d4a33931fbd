"""The unlabeled pool, read in chunks and decoded a batch at a time: never all of it in memory.

A pool is a sequence of (id, source) items in a fixed order; chunk i is items
[i * n, (i + 1) * n), and the label store writes one shard per chunk (labels/store.py). A
source is a file path (folder tree, manifest), image bytes (WebDataset sample) or, for
Fashion-MNIST, a row of an in-memory set. Items are decoded one batch at a time, so labeling
holds one batch of pixels; listing a folder or manifest keeps only paths (about 100 bytes an
image), and WebDataset shards are streamed, so their length is known only at the end.

Decoding is deterministic: the same item decodes to the same pixels, or fails the same way, in
the label stage and later when the selected images are gathered for training.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from ..errors import UserError
from .folder import (IMAGE_SUFFIXES, BadImage, check_bad_fraction, decode_image, image_ids, is_manifest,
                     manifest_items)
from .images import ImageSet
from .shards import DamagedShard, is_local, is_webdataset, shard_urls, webdataset_items

Item = tuple[str, Any]  # (stable id, source)


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [n, C, H, W], the decodable items
    ids: list[str]  # their ids
    bad: list[tuple[str, str]]  # (id, reason) of the undecodable ones
    inputs: int  # items read from the source for this batch (wanted or not; with read-ahead, the
    # count is by the time the batch is complete, and the batches' counts add up to the total)
    encoded: list[bytes] | None = None  # the decodable items' bytes as stored (Pool.encode), when asked for


@dataclass
class Pool:
    """An unlabeled pool: `items()` in a fixed order and `decode(source)` for one of them."""

    where: str  # for messages and the store header: folder, manifest, shard pattern or dataset name
    classes: list[str]
    channels: int
    image_size: int
    max_bad_fraction: float
    size: int | None  # items, when known before reading them (not for WebDataset)
    root: Path | None = None  # folder / manifest: the folder the ids are relative to
    listing: pa.StringArray | None = None  # folder / manifest ids: Arrow strings, no Python object per image
    images: ImageSet | None = None  # an in-memory pool (Fashion-MNIST): its rows are the sources
    pattern: str | None = None  # WebDataset shards
    limit: int | None = None  # read only the first `limit` items
    decode_threads: int = 0  # threads decoding ahead of the caller; 0 = in the caller's thread
    # what messages call the pool and its tolerance: the config keys, or a command's own arguments
    source_key: str = "data.unlabeled"
    tolerance_key: str = "data.max_bad_fraction"

    @functools.cached_property
    def identity(self) -> dict:
        """What a label store records to refuse labels made from another pool: where it is, its
        size and, to tell two pools at the same place apart, a digest of its listed ids and every
        file's size and mtime (as the decoded-image cache's key: images rewritten under the same
        names are another pool); for WebDataset, whose ids are known only once read, of the shard
        files' sizes and mtimes."""
        digest = hashlib.sha256()
        if self.listing is not None:
            for buffer in self.listing.buffers():  # Arrow's offsets and bytes: no Python string per id
                if buffer is not None:
                    digest.update(buffer)
            root = str(self.root)
            for image_id in _strings(self.listing):
                digest.update(_size_and_mtime(os.path.join(root, image_id)).encode())
        elif self.images is not None:
            digest.update("\n".join(self.images.ids).encode())
        else:
            digest.update(json.dumps([_size_and_mtime(url) if is_local(url) else url
                                      for url in shard_urls(self.pattern, self.source_key)]).encode())
        return {"source": self.where, "size": self.size, "limit": self.limit, "image_size": self.image_size,
                "channels": self.channels, "items_sha256": digest.hexdigest()[:16]}

    @property
    def truth(self) -> np.ndarray | None:
        """Hidden labels by store row, when known: only an in-memory pool has them, and it skips
        nothing, so its rows are the store's rows; -1 marks an out-of-domain image (no class).
        None for your own images."""
        return None if self.images is None else self.images.labels.numpy()[:self.limit]

    def items(self) -> Iterator[Item]:
        if self.images is not None:
            items = ((image_id, row) for row, image_id in enumerate(self.images.ids))
        elif self.pattern is not None:  # ids known only once read: checked as they stream by
            def shard_items() -> Iterator[Item]:
                return itertools.islice(webdataset_items(self.pattern), self.limit)
            return _unique_ids(shard_items(), self.where, shard_items)
        else:
            # plain strings, not pathlib: a Path interns every component (sys.intern), so file names
            # would pile up in the interpreter's intern table as the pool streams by
            root = str(self.root)
            items = ((image_id, os.path.join(root, image_id)) for image_id in _strings(self.listing))
        return itertools.islice(items, self.limit)

    def decode(self, source) -> np.ndarray:
        """uint8 [C, H, W] at image_size; raises BadImage."""
        if self.images is not None:
            return self.images.images[source].numpy()
        if isinstance(source, DamagedShard):
            raise BadImage(source.reason)
        return decode_image(source, self.image_size, self.channels)

    def encode(self, source) -> bytes:
        """The item's bytes as stored (a file's, a tar sample's); a row of an in-memory pool as a
        lossless PNG. `decode_image` of them gives the pixels `decode(source)` gives; raises BadImage."""
        if self.images is not None:
            row = self.images.images[source].numpy()
            buffer = io.BytesIO()
            Image.fromarray(row[0] if self.channels == 1 else row.transpose(1, 2, 0)).save(buffer, "PNG", compress_level=1)
            return buffer.getvalue()
        if isinstance(source, DamagedShard):
            raise BadImage(source.reason)
        if isinstance(source, io.BytesIO):
            return source.getvalue()
        try:
            with open(source, "rb") as handle:
                return handle.read()
        except OSError as error:
            raise BadImage(str(error) or type(error).__name__) from None

    def decode_encoded(self, data: bytes) -> np.ndarray:
        """uint8 [C, H, W] at image_size from bytes `encode` gave; raises BadImage."""
        return decode_image(io.BytesIO(data), self.image_size, self.channels)

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, Iterator[Item]]]:
        """(index, items) per chunk of `chunk_size` items. Read a chunk's items before asking for
        the next chunk; what is left unread is skipped (for WebDataset: read past, not decoded)."""
        iterator = self.items()
        for index in itertools.count():
            first = next(iterator, None)
            if first is None:
                return
            chunk = itertools.chain([first], itertools.islice(iterator, chunk_size - 1))
            yield index, chunk
            for _ in chunk:  # drain the rest of this chunk so the next one starts at its own first item
                pass

    def batches(self, items: Iterable[Item], batch_size: int, wanted: Container[str] | None = None,
                encoded: bool = False) -> Iterator[Batch]:
        """Decode `items` (those whose id is in `wanted`, if given) into batches of `batch_size`;
        with `encoded`, each batch also carries its items' bytes as stored, and the pixels are
        decoded from those very bytes."""
        source = _Counted(items)
        arrays, ids, bad, kept, reported = [], [], [], [], 0
        for image_id, decoded in self._decoded(source, wanted, ahead=batch_size, encoded=encoded):
            if isinstance(decoded, BadImage):
                bad.append((image_id, str(decoded)))
            else:
                arrays.append(decoded[0])
                kept.append(decoded[1])
                ids.append(image_id)
            if len(arrays) == batch_size:
                yield Batch(self.stacked(arrays), ids, bad, source.read - reported, kept if encoded else None)
                arrays, ids, bad, kept, reported = [], [], [], [], source.read
        if arrays or bad or source.read > reported:
            yield Batch(self.stacked(arrays), ids, bad, source.read - reported, kept if encoded else None)

    def _decoded(self, items: Iterable[Item], wanted: Container[str] | None, ahead: int,
                 encoded: bool) -> Iterator[tuple[str, tuple[np.ndarray, bytes | None] | BadImage]]:
        """(id, (pixels, bytes if `encoded`) or the BadImage) per wanted item, in order. With `decode_threads`, up to
        `ahead` items are decoded in threads while the caller works on earlier ones (Pillow
        releases the GIL while it decodes and resizes): decoding overlaps inference and uses
        the spare cores."""
        wanted_items = (item for item in items if wanted is None or item[0] in wanted)
        threads = self.decode_threads if self.images is None else 0  # rows of a tensor need no decoding
        if not threads:
            for image_id, source in wanted_items:
                yield image_id, self._attempt(source, encoded)
            return
        executor, pending = ThreadPoolExecutor(threads, thread_name_prefix="decode"), deque()
        try:
            for image_id, source in wanted_items:
                pending.append((image_id, executor.submit(self._attempt, source, encoded)))
                if len(pending) > ahead:
                    image_id, future = pending.popleft()
                    yield image_id, future.result()
            while pending:
                image_id, future = pending.popleft()
                yield image_id, future.result()
        finally:
            executor.shutdown(cancel_futures=True)

    def _attempt(self, source, encoded: bool) -> tuple[np.ndarray, bytes | None] | BadImage:
        try:
            if not encoded:
                return self.decode(source), None
            data = self.encode(source)
            return self.decode_encoded(data), data
        except BadImage as error:
            return error

    def stacked(self, arrays: list[np.ndarray]) -> torch.Tensor:
        shape = (0, self.channels, self.image_size, self.image_size)
        return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(shape, dtype=torch.uint8)

    def check_bad_fraction(self, bad: list[tuple[str, str]], inputs: int) -> None:
        check_bad_fraction(self.where, bad, inputs, self.max_bad_fraction, self.tolerance_key)


def _unique_ids(items: Iterator[Item], where: str, again: Callable[[], Iterator[Item]]) -> Iterator[Item]:
    """`items`, then, after the last one, refuse an id that came twice (two shards made from the same
    images): its labels would be stored twice and weigh twice in the selection. Ids are remembered as
    8-byte hashes, not strings (a pool may hold 300M images); only when two hashes agree is the pool
    read `again` to find the id, or to find that the hashes merely collided."""
    blocks, block = [], []
    for item in items:
        block.append(hash(item[0]))
        if len(block) == 1 << 16:
            blocks.append(np.array(block, np.int64))
            block = []
        yield item
    values, counts = np.unique(np.concatenate([*blocks, np.array(block, np.int64)]), return_counts=True)
    suspects = set(values[counts > 1].tolist())
    if not suspects:
        return
    seen = set()
    for image_id, _ in again():
        if hash(image_id) in suspects:
            if image_id in seen:
                raise UserError(f"{where} holds the sample {image_id!r} more than once (are two shards copies of "
                                f"each other?); every image needs its own key: remove the repeated shards or "
                                f"samples")
            seen.add(image_id)


def _size_and_mtime(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:  # a listed file that is gone: it fails to decode when read, and is counted then
        return "missing\n"
    return f"{stat.st_size}\0{stat.st_mtime_ns}\n"


class _Counted:
    """An iterator that counts the items taken from it."""

    def __init__(self, items: Iterable[Item]):
        self.items, self.read = iter(items), 0

    def __iter__(self) -> "_Counted":
        return self

    def __next__(self) -> Item:
        item = next(self.items)
        self.read += 1
        return item


def _string_array(strings: Iterable[str], block: int = 1 << 16) -> pa.StringArray:
    """Arrow strings built a block at a time: a listing of millions never exists as Python objects."""
    iterator, parts = iter(strings), []
    while block_strings := list(itertools.islice(iterator, block)):
        parts.append(pa.array(block_strings, pa.string()))
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def _strings(array: pa.StringArray, block: int = 4096) -> Iterator[str]:
    for start in range(0, len(array), block):
        yield from array.slice(start, block).to_pylist()


def memory_pool(images: ImageSet, name: str) -> Pool:
    """A pool over an in-memory set (Fashion-MNIST's unlabeled split)."""
    return Pool(name, images.classes, images.channels, images.images.shape[-1], 0.0, len(images), images=images)


def open_pool(source: str | Path, image_size: int, channels: int, max_bad_fraction: float, classes: list[str],
              limit: int | None = None, decode_threads: int = 0, source_key: str = "data.unlabeled",
              tolerance_key: str = "data.max_bad_fraction") -> Pool:
    """The unlabeled pool from a folder tree, a manifest or WebDataset tar shards; lists, decodes nothing.
    Messages name the source and the tolerance by `source_key` and `tolerance_key`."""
    text = str(source)
    common = dict(classes=classes, channels=channels, image_size=image_size, max_bad_fraction=max_bad_fraction,
                  limit=limit, decode_threads=decode_threads, source_key=source_key, tolerance_key=tolerance_key)
    if is_webdataset(text):
        shard_urls(text, source_key)  # a missing shard stops the run before any stage, not after the teacher trained
        return Pool(text, size=None, pattern=text, **common)
    if is_manifest(Path(text)):
        root, items, _ = manifest_items(Path(text))
        listing = _string_array(image_id for image_id, _ in items)
    else:
        root = Path(text)
        if not root.is_dir():
            raise UserError(f"{source_key}: folder {root} not found" if not root.exists() else
                            f"{source_key}: {root} is a file; give a folder of images, a .csv / .jsonl manifest or "
                            f"tar shards (pool-{{0000..0099}}.tar)")
        listing = _string_array(image_ids(root))
        if not len(listing):
            raise UserError(f"{source_key}: {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if pc.count_distinct(listing).as_py() != len(listing):
        raise UserError(f"{source} lists the same image more than once; every image needs its own path")
    size = len(listing) if limit is None else min(limit, len(listing))
    return Pool(text, size=size, root=root, listing=listing, **common)
