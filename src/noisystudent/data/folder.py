"""Your own images from folders or manifests: listing, safe paths, robust decoding.

    data.labeled    ImageFolder layout (one subfolder per class, its name is the class), or a
                    manifest: a .csv with a header `path,label` or a .jsonl of {"path", "label"}
    data.unlabeled  any folder tree of images, recursive; a manifest (label column optional);
                    or WebDataset tar shards (data/shards.py)
    data.test       like data.labeled, with the labeled set's classes

Ids are paths relative to the folder (or as written in the manifest), so they survive reruns.
Manifest paths are relative to the manifest's own folder, the dataset root; a path that leaves
it (`..`, an absolute path elsewhere, a symlink out) is refused with the path named.

Images are decoded fully inside the error handling (a truncated JPEG opens fine and only fails
on load), converted to RGB or grayscale (CMYK, palette with transparency, RGBA included),
resized on the shorter side and center-cropped to `image_size`. Undecodable files are skipped,
counted and listed; more than `max_bad_fraction` of them stops the run. The labeled and test
sets are decoded once into memory-mapped files under `data.cache_dir` (decode_set; at 224 px RGB
that is 150 KB an image on disk, nothing in memory but the pages a step reads); the unlabeled
pool is read a chunk at a time (data/pool.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..io import atomic_write, read_json, write_json
from .images import IMAGE_EXTENSIONS, BadImage, ImageSet, decode_image  # noqa: F401 (decode_image: re-exported)
from .rows import FileImages

IMAGE_SUFFIXES = {f".{extension}" for extension in IMAGE_EXTENSIONS}


@dataclass
class DecodeReport:
    root: Path
    total: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def check(self, max_bad_fraction: float) -> None:
        check_bad_fraction(self.root, self.bad, self.total, max_bad_fraction)


def check_bad_fraction(where: Path | str, bad: list[tuple[str, str]], total: int, max_bad_fraction: float,
                       tolerance_key: str = "data.max_bad_fraction") -> None:
    """Stop when more than `max_bad_fraction` of `total` images could not be decoded, naming some (and
    the tolerance by `tolerance_key`)."""
    if total and len(bad) / total > max_bad_fraction:
        listed = "; ".join(f"{image_id}: {reason}" for image_id, reason in bad[:5])
        raise UserError(f"{len(bad)} of {total} images of {where} could not be decoded (more than "
                        f"{tolerance_key}={max_bad_fraction}); fix or remove them, or raise the limit "
                        f"(they are skipped and listed). First: {listed}")


def inside(root: Path, path: Path) -> bool:
    """True when `path` (symlinks resolved) stays within `root`."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def image_ids(root: Path) -> Iterator[str]:
    """Ids of the image files under root: paths relative to it, '/'-separated, recursive, sorted
    by path parts, streamed (a directory at a time). Refuses symlinks that lead outside root."""
    if not root.is_dir():
        raise UserError(f"image folder {root} not found (check data.labeled / data.unlabeled / data.test)")

    def walk(folder: str, prefix: str) -> Iterator[str]:
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda entry: entry.name)
        for entry in ordered:
            if entry.is_dir(follow_symlinks=False):
                yield from walk(entry.path, f"{prefix}{entry.name}/")
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                if entry.is_symlink() and not inside(root, Path(entry.path)):
                    raise UserError(f"{entry.path} is a link to outside {root}; copy the file in or remove the link")
                yield prefix + entry.name

    yield from walk(str(root), "")


CACHE_FORMAT = 1  # bump when decoding changes what a cached image holds


def _listing_key(items: list[tuple[str, Path]], labels: list[str], size: int, channels: int) -> str:
    """What a decoded set depends on: each file's id, label, size and modification time, and the
    resolution and channels decoded to."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, size, channels]).encode())
    for (image_id, file), label in zip(items, labels):
        try:
            stat = os.stat(file)
            digest.update(f"{image_id}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError as error:  # listed but unreadable: decoding will report it
            digest.update(f"{image_id}\0{label}\0{type(error).__name__}\n".encode())
    return digest.hexdigest()[:16]


def decode_set(where: Path, items: list[tuple[str, Path]], labels: list[str], size: int, channels: int,
               max_bad_fraction: float, cache_dir: Path | None = None, storage: str = "cache",
               threads: int = 2) -> tuple[torch.Tensor | FileImages, list[str], list[str], DecodeReport, str | None]:
    """Decode (id, file) items: (uint8 [n, C, size, size], their ids, their labels, a report naming
    the undecodable ones, a digest of the inputs or None). With `cache_dir`, pixels go to a
    memory-mapped file there, reused as long as no file, label, resolution or channel count
    changed, so a labeled set of any size costs disk, not memory, and is decoded once across runs
    and resumes; the digest then names it (what training fingerprints instead of its pixels).
    With `storage="files"` every image is decoded once to check it, kept nowhere, and decoded
    again whenever a batch needs it (FileImages): no disk, one decode per image per epoch."""
    digest = f"{where.name or 'images'}-{_listing_key(items, labels, size, channels)}"  # the same in both storages
    if storage == "files":
        index = _decode_each(lambda array: None, where, items, labels, size, channels, f"check {where.name}")
        report = DecodeReport(where, index["total"], [tuple(entry) for entry in index["bad"]])
        report.check(max_bad_fraction)
        file_of = dict(items)
        files = FileImages([str(file_of[image_id]) for image_id in index["ids"]], size, channels, threads)
        return files, index["ids"], index["labels"], report, digest
    if cache_dir is not None:
        base = Path(cache_dir) / digest
        pixels_path, index_path = base.with_suffix(".npy"), base.with_suffix(".json")
        if not (pixels_path.is_file() and index_path.is_file()):
            atomic_write(pixels_path, lambda tmp: _decode_to_file(tmp, where, items, labels, size, channels,
                                                                  f"decode {where.name}", index_path))
        index = read_json(index_path)
        report = DecodeReport(where, index["total"], [tuple(entry) for entry in index["bad"]])
        report.check(max_bad_fraction)
        # copy-on-write: torch wants a writable array; nothing writes to it, so pages stay shared
        pixels = np.load(pixels_path, mmap_mode="c")[:len(index["ids"])]
        return torch.from_numpy(pixels), index["ids"], index["labels"], report, digest
    pixels, decoded = np.empty((len(items), channels, size, size), np.uint8), 0

    def put(array: np.ndarray) -> None:
        nonlocal decoded
        pixels[decoded] = array
        decoded += 1
    index = _decode_each(put, where, items, labels, size, channels, f"decode {where.name}")
    report = DecodeReport(where, index["total"], [tuple(entry) for entry in index["bad"]])
    report.check(max_bad_fraction)
    return torch.from_numpy(pixels[:decoded]), index["ids"], index["labels"], report, None


def _decode_to_file(path: Path, where: Path, items: list[tuple[str, Path]], labels: list[str], size: int,
                    channels: int, desc: str, index_path: Path) -> None:
    """An .npy of room for every item, filled in order with ordinary writes (pages written through
    a memory map would count as this process's memory until written back), then the index."""
    np.lib.format.open_memmap(path, "w+", np.uint8, (len(items), channels, size, size))  # header, sparse body
    offset = np.load(path, mmap_mode="r").offset
    with open(path, "r+b") as handle:
        handle.seek(offset)
        index = _decode_each(lambda array: handle.write(array.tobytes()), where, items, labels, size, channels, desc)
    write_json(index_path, index)


def _decode_each(put, where: Path, items: list[tuple[str, Path]], labels: list[str], size: int, channels: int,
                 desc: str) -> dict:
    """`put` each decodable item's pixels, in order; return the index (ids, labels, bad, total)."""
    index = {"source": str(where), "total": len(items), "ids": [], "labels": [], "bad": []}
    for (image_id, file), label in tqdm(zip(items, labels), desc=desc, unit="img", disable=None, leave=False,
                                        total=len(items)):
        try:
            put(decode_image(file, size, channels))
            index["ids"].append(image_id)
            index["labels"].append(label)
        except BadImage as error:
            index["bad"].append((image_id, str(error)))
    return index


def is_manifest(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".jsonl")


def read_manifest(path: Path) -> list[tuple[str, str | None]]:
    """(path as written, label or None) per entry of a .csv (header path[,label]) or .jsonl manifest."""
    if not path.is_file():
        raise UserError(f"manifest {path} not found")
    entries = []
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise UserError(f"{path}: a CSV manifest needs a header row with a 'path' column (and 'label')")
            rows = ((reader.line_num, row) for row in reader)
        else:
            rows = ((number, _json_line(path, number, line)) for number, line in enumerate(handle, 1) if line.strip())
        for number, row in rows:
            if not row.get("path"):
                raise UserError(f"{path} line {number}: no 'path'")
            label = row.get("label")
            entries.append((str(row["path"]), None if label in (None, "") else str(label)))
    return entries


def _json_line(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path} line {number}: not JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{path} line {number}: expected an object like {{\"path\": ..., \"label\": ...}}")
    return row


def manifest_items(path: Path) -> tuple[Path, list[tuple[str, Path]], list[str | None]]:
    """(dataset root, (id, file) items, labels) of a manifest; refuses entries outside the root."""
    root = path.parent
    items, labels = [], []
    for written, label in read_manifest(path):
        file = Path(written) if Path(written).is_absolute() else root / written
        if not inside(root, file):
            raise UserError(f"{path}: entry {written!r} points outside the dataset root {root}; "
                            f"manifests may only name files under their own folder")
        items.append((written, file))
        labels.append(label)
    return root, items, labels


def load_labeled(source: str | Path, size: int, channels: int, max_bad_fraction: float,
                 classes: list[str] | None = None, key: str = "data.labeled",
                 cache_dir: Path | None = None, storage: str = "cache", threads: int = 2) -> tuple[ImageSet, DecodeReport]:
    """A labeled set from an ImageFolder root or a manifest with labels. `classes` is the
    training set's (for a test set); `key` is the config key that named `source`, for messages;
    with `cache_dir` the pixels are memory-mapped from a cache there (decode_set)."""
    source = Path(source)
    if is_manifest(source):
        root, items, labels = manifest_items(source)
        if any(label is None for label in labels):
            raise UserError(f"{source} ({key}): every entry of a labeled manifest needs a label")
        found = sorted(set(labels))
    else:
        root = source
        if not root.is_dir():
            raise UserError(f"{key}: folder {root} not found" if not root.exists() else
                            f"{key}: {root} is a file; give a folder with one subfolder per class, or a .csv / "
                            f".jsonl manifest")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not found:
            raise UserError(f"{key}: {root} has no class subfolders; it needs one subfolder of images per class "
                            f"(or pass a .csv / .jsonl manifest)")
        items, labels = [], []
        for name in found:
            for image_id in image_ids(root / name):
                items.append((f"{name}/{image_id}", root / name / image_id))
                labels.append(name)
        empty = sorted(set(found) - set(labels))
        if empty and classes is None:  # a test set may lack a class; a training class needs examples
            raise UserError(f"{key}: class folder {root / empty[0]} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder "
                            f"({len(empty)} empty: {', '.join(empty[:5])})")
    if classes is None and len(found) < 2:
        raise UserError(f"{key}: {source} has {len(found)} class ({', '.join(found)}); classification needs at "
                        f"least 2 classes")
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{key}: {source} has classes {unknown} that the labeled set (data.labeled) does not have")
    if len({image_id for image_id, _ in items}) != len(items):
        raise UserError(f"{source} lists the same image more than once; ids must be unique")
    pixels, ids, decoded_labels, report, digest = decode_set(root if not is_manifest(source) else source, items,
                                                             labels, size, channels, max_bad_fraction, cache_dir,
                                                             storage, threads)
    index = {name: i for i, name in enumerate(classes)}
    return ImageSet(pixels, torch.tensor([index[label] for label in decoded_labels], dtype=torch.long),
                    ids, classes, digest), report
