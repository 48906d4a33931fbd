"""Image sets too large to keep decoded: pixels decoded by rows whenever a batch asks for them.

To a training step they look like a uint8 [n, C, size, size] tensor (`shape`, `len`, indexing
by a tensor, list or slice of rows), but they hold only where each image's bytes are:

    FileImages     the files themselves (a labeled or test folder, `data.storage=files`)
    EncodedImages  one packed file of the images' encoded bytes and an offsets array (the
                   student's selection, `selection.storage=encoded`: labels/gather.py)

Decoding is data/folder.py's `decode_image`, the one the cached and gathered pixels came from,
so every storage gives the same pixels; rows are decoded in `threads` threads (Pillow releases
the GIL while it decodes and resizes).
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_write
from .images import BadImage, decode_image


class DecodedRows:
    """Rows decoded on demand; subclasses say where row i's bytes are (`source`) and what to do
    when they no longer decode (`damaged`)."""

    dtype, ndim = torch.uint8, 4

    def __init__(self, count: int, size: int, channels: int, threads: int):
        self.count, self.size, self.channels, self.threads = count, size, channels, max(1, threads)
        # one pool for every batch (its threads start on first use and end with this object);
        # thread-safe, so prefetching threads can share it
        self.workers = ThreadPoolExecutor(self.threads, thread_name_prefix="decode-rows")

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.count, self.channels, self.size, self.size))

    def __len__(self) -> int:
        return self.count

    def source(self, row: int) -> str | BinaryIO:
        raise NotImplementedError

    def damaged(self, row: int, error: BadImage) -> UserError:
        raise NotImplementedError

    def __getitem__(self, rows) -> torch.Tensor:
        """The decoded rows (an index tensor, a list or a slice) as a uint8 tensor."""
        indices = range(self.count)[rows] if isinstance(rows, slice) else torch.as_tensor(rows).reshape(-1).tolist()
        out = np.empty((len(indices), self.channels, self.size, self.size), np.uint8)

        def decode(position: int) -> None:
            try:
                out[position] = decode_image(self.source(indices[position]), self.size, self.channels)
            except BadImage as error:
                raise self.damaged(indices[position], error) from None
        list(self.workers.map(decode, range(len(indices))))
        return torch.from_numpy(out)


class FileImages(DecodedRows):
    """A labeled or test set read from its files (`data.storage=files`): each image was checked
    when the set was listed, so one that fails now changed during the run."""

    def __init__(self, files: list[str], size: int, channels: int, threads: int = 2):
        super().__init__(len(files), size, channels, threads)
        self.files = files

    def source(self, row: int) -> str:
        return self.files[row]

    def damaged(self, row: int, error: BadImage) -> UserError:
        return UserError(f"{self.files[row]} no longer decodes ({error}); it changed during the run: restore it, "
                         f"or start a new run name")

    def select(self, indices) -> "FileImages":
        indices = range(len(self.files))[indices] if isinstance(indices, slice) else indices
        return FileImages([self.files[int(i)] for i in indices], self.size, self.channels, self.threads)


ENCODED, OFFSETS = "encoded.bin", "encoded-offsets.npy"


class EncodedImages(DecodedRows):
    """Images stored as their encoded bytes, back to back in `folder/encoded.bin`; row i is bytes
    offsets[i]:offsets[i + 1] (`folder/encoded-offsets.npy`, int64 [n + 1]). Both are memory-mapped:
    a batch reads only its rows' bytes."""

    def __init__(self, folder: Path, size: int, channels: int, threads: int = 2):
        self.folder = Path(folder)
        self.offsets = np.load(self.folder / OFFSETS, mmap_mode="r")
        stored = (self.folder / ENCODED).stat().st_size
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or int(self.offsets[-1]) != stored:
            raise UserError(f"{self.folder / ENCODED} ({stored} bytes) does not match {self.folder / OFFSETS} "
                            f"(ends at {int(self.offsets[-1]) if len(self.offsets) else 'nothing'}); the selection "
                            f"is damaged: delete {self.folder} to gather it again")
        # np.memmap refuses an empty file; an empty selection has no rows to read anyway
        self.encoded = np.memmap(self.folder / ENCODED, np.uint8, "r") if stored else np.empty(0, np.uint8)
        super().__init__(len(self.offsets) - 1, size, channels, threads)

    def source(self, row: int) -> BinaryIO:
        return io.BytesIO(self.encoded[int(self.offsets[row]):int(self.offsets[row + 1])].tobytes())

    def damaged(self, row: int, error: BadImage) -> UserError:
        return UserError(f"{self.folder / ENCODED}: image {row} no longer decodes ({error}), though it did when it "
                         f"was gathered; the file is damaged: delete {self.folder} to gather the selection again")


def write_encoded(folder: Path, encoded_items) -> None:
    """Write `encoded_items` (an iterable of bytes, in row order) as `folder/encoded.bin` and its
    offsets, each atomically, the offsets last (an EncodedImages checks that they agree)."""
    offsets = [0]

    def write_bytes(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            for data in encoded_items:
                handle.write(data)
                offsets.append(offsets[-1] + len(data))

    def write_offsets(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: given a path, np.save would append ".npy"
            np.save(handle, np.asarray(offsets, np.int64))

    atomic_write(folder / ENCODED, write_bytes)
    atomic_write(folder / OFFSETS, write_offsets)
