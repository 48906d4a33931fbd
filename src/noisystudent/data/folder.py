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
sets are decoded into memory here; the unlabeled pool is read a chunk at a time (data/pool.py).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import UserError
from .images import IMAGE_EXTENSIONS, ImageSet

IMAGE_SUFFIXES = {f".{extension}" for extension in IMAGE_EXTENSIONS}


class BadImage(Exception):
    pass


@dataclass
class DecodeReport:
    root: Path
    total: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def check(self, max_bad_fraction: float) -> None:
        check_bad_fraction(self.root, self.bad, self.total, max_bad_fraction)


def check_bad_fraction(where: Path | str, bad: list[tuple[str, str]], total: int, max_bad_fraction: float) -> None:
    """Stop when more than `max_bad_fraction` of `total` images could not be decoded, naming some."""
    if total and len(bad) / total > max_bad_fraction:
        listed = "; ".join(f"{image_id}: {reason}" for image_id, reason in bad[:5])
        raise UserError(f"{len(bad)} of {total} images of {where} could not be decoded (more than "
                        f"data.max_bad_fraction={max_bad_fraction}); fix or remove them, or raise the limit "
                        f"(they are skipped and listed). First: {listed}")


def decode_image(source: str | Path | BinaryIO, size: int, channels: int) -> np.ndarray:
    """uint8 [channels, size, size] from a file path or bytes (io.BytesIO); raises BadImage with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.load()
                if image.mode == "P" and "transparency" in image.info:
                    image = image.convert("RGBA")
                if image.mode in ("RGBA", "LA"):  # composite on white rather than dropping alpha to black
                    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, image.convert("RGBA"))
                image = image.convert("RGB" if channels == 3 else "L")
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(type(error).__name__) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(str(error) or type(error).__name__) from None
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    array = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


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


def decode_all(where: Path | str, items: Iterable[tuple[str, Path | BinaryIO]], size: int, channels: int,
               max_bad_fraction: float, desc: str, total: int | None = None) -> tuple[list[np.ndarray], list[str], DecodeReport]:
    """Decode (id, source) items; the ids of the decoded ones, and a report naming the others."""
    report = DecodeReport(Path(where))
    arrays, ids = [], []
    for image_id, source in tqdm(items, desc=desc, unit="img", disable=None, leave=False, total=total):
        report.total += 1
        try:
            arrays.append(decode_image(source, size, channels))
            ids.append(image_id)
        except BadImage as error:
            report.bad.append((image_id, str(error)))
    report.check(max_bad_fraction)
    return arrays, ids, report


def _stack(arrays: list[np.ndarray], channels: int, size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, channels, size, size, dtype=torch.uint8)


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
                 classes: list[str] | None = None, key: str = "data.labeled") -> tuple[ImageSet, DecodeReport]:
    """A labeled set from an ImageFolder root or a manifest with labels. `classes` is the
    training set's (for a test set); `key` is the config key that named `source`, for messages."""
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
    label_of = {image_id: label for (image_id, _), label in zip(items, labels)}
    if len(label_of) != len(items):
        raise UserError(f"{source} lists the same image more than once; ids must be unique")
    arrays, ids, report = decode_all(root, items, size, channels, max_bad_fraction, f"decode {source.name}")
    index = {name: i for i, name in enumerate(classes)}
    return ImageSet(_stack(arrays, channels, size), torch.tensor([index[label_of[i]] for i in ids], dtype=torch.long),
                    ids, classes), report
