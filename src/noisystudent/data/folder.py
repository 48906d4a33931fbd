"""Your own images from folders, decoded into memory.

    data.labeled    ImageFolder layout: one subfolder per class (its name is the class)
    data.unlabeled  any folder tree of images, recursive; ids are paths relative to it
    data.test       ImageFolder layout with the labeled set's classes

Images are decoded fully inside the error handling (a truncated JPEG opens fine and only fails
on load), converted to RGB or grayscale (CMYK, palette with transparency, RGBA included),
resized on the shorter side and center-cropped to `image_size`. Undecodable files are skipped,
counted and listed; more than `max_bad_fraction` of them stops the run. This holds the pool in
memory (uint8: 30 KB an image at 100 px RGB), which fits pools up to a few hundred thousand
images; a streaming, sharded source is the way past that.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import UserError
from .images import ImageSet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
UNLABELED = -1


class BadImage(Exception):
    pass


@dataclass
class DecodeReport:
    root: Path
    total: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def check(self, max_bad_fraction: float) -> None:
        if self.total and len(self.bad) / self.total > max_bad_fraction:
            listed = "; ".join(f"{path}: {reason}" for path, reason in self.bad[:5])
            raise UserError(f"{len(self.bad)} of {self.total} images under {self.root} could not be decoded "
                            f"(more than data.max_bad_fraction={max_bad_fraction}); first: {listed}")


def decode_image(path: Path, size: int, channels: int) -> np.ndarray:
    """uint8 [channels, size, size]; raises BadImage with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
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


def list_images(root: Path) -> list[Path]:
    """Image files under root, recursive, sorted; refuses symlinks that lead outside root."""
    if not root.is_dir():
        raise UserError(f"image folder {root} not found (check data.labeled / data.unlabeled / data.test)")
    paths = []
    for folder, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not inside(root, path):
                raise UserError(f"{path} is a link to outside {root}; copy the file in or remove the link")
            paths.append(path)
    return sorted(paths)


def decode_all(root: Path, paths: list[Path], size: int, channels: int, max_bad_fraction: float,
               desc: str) -> tuple[list[np.ndarray], list[int], DecodeReport]:
    report = DecodeReport(root, total=len(paths))
    arrays, kept = [], []
    for index, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=None, leave=False)):
        try:
            arrays.append(decode_image(path, size, channels))
            kept.append(index)
        except BadImage as error:
            report.bad.append((str(path.relative_to(root)), str(error)))
    report.check(max_bad_fraction)
    return arrays, kept, report


def _stack(arrays: list[np.ndarray], channels: int, size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, channels, size, size, dtype=torch.uint8)


def load_labeled_folder(root: str | Path, size: int, channels: int, max_bad_fraction: float,
                        classes: list[str] | None = None) -> tuple[ImageSet, DecodeReport]:
    root = Path(root)
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not found:
        raise UserError(f"{root} has no class subfolders; a labeled folder needs one subfolder per class")
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{root} has classes {unknown} that the labeled set does not have")
    paths, labels = [], []
    for label, name in enumerate(classes):
        if (root / name).is_dir():
            for path in list_images(root / name):
                paths.append(path)
                labels.append(label)
    arrays, kept, report = decode_all(root, paths, size, channels, max_bad_fraction, f"decode {root.name}")
    ids = [str(paths[i].relative_to(root)) for i in kept]
    return ImageSet(_stack(arrays, channels, size), torch.tensor([labels[i] for i in kept], dtype=torch.long),
                    ids, classes), report


def load_unlabeled_folder(root: str | Path, size: int, channels: int, max_bad_fraction: float,
                          classes: list[str]) -> tuple[ImageSet, DecodeReport]:
    root = Path(root)
    paths = list_images(root)
    if not paths:
        raise UserError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    arrays, kept, report = decode_all(root, paths, size, channels, max_bad_fraction, f"decode {root.name}")
    return ImageSet(_stack(arrays, channels, size), torch.full((len(kept),), UNLABELED, dtype=torch.long),
                    [str(paths[i].relative_to(root)) for i in kept], classes), report
