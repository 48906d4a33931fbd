"""Fashion-MNIST from its IDX files: the embedded default data set.

Where the files come from, in order: the `data.root` config value, the NOISYSTUDENT_DATA
environment variable, the Debian package `dataset-fashion-mnist`
(/usr/share/datasets/fashion-mnist). With `download: true`, torchvision's downloader fetches
them (for users with internet) into `root` or ~/.cache/noisystudent.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .images import ImageSet

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPE = {0x08: np.uint8}


def resolve_root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get("NOISYSTUDENT_DATA") or DEBIAN_ROOT)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic 0x0000 <dtype> <ndim>, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path} cannot be read ({error}); reinstall the data set or fix the file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPE:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int).tolist()
    expected = int(np.prod(dims))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != expected:
        raise UserError(f"{path} is truncated or padded: header says {dims} ({expected} bytes), found {payload.size}")
    return payload.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    # Debian and the original release ship .gz; torchvision's downloader leaves both under raw/.
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _download(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    try:
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except Exception as error:  # network errors come in many types; the message is what helps
        raise UserError(f"downloading Fashion-MNIST into {root} failed: {error}") from None


def load_split(root: Path, split: str) -> ImageSet:
    image_stem, label_stem = FILES[split]
    image_path, label_path = _find(root, image_stem), _find(root, label_stem)
    if image_path is None or label_path is None:
        missing = image_stem if image_path is None else label_stem
        raise UserError(
            f"Fashion-MNIST file {missing}(.gz) not found under {root}. Install the Debian package "
            f"(`sudo apt-get install dataset-fashion-mnist`), point data.root or NOISYSTUDENT_DATA at "
            f"a folder holding the IDX files, or set data.download=true to fetch them")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{image_path} and {label_path} do not match: images {images.shape}, labels {labels.shape}")
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise UserError(f"{label_path} has label {labels.max()}, but Fashion-MNIST has 10 classes")
    ids = [f"{split}-{i:05d}" for i in range(len(images))]
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    ids, FASHION_MNIST_CLASSES)


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """(train, test) image sets, 1 x 28 x 28 uint8."""
    resolved = resolve_root(root)
    if download and _find(resolved, FILES["test"][1]) is None:
        if root is None and resolved == DEBIAN_ROOT:
            resolved = Path.home() / ".cache" / "noisystudent" / "fashion-mnist"
        _download(resolved)
    return load_split(resolved, "train"), load_split(resolved, "test")
