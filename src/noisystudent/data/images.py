"""An image set: uint8 pixels (in memory or memory-mapped), integer labels, stable ids; and the
one decoder every image file goes through (`decode_image`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

# What counts as an image, by file extension: in folders and manifests, and in tar shards' samples.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm")


class BadImage(Exception):
    pass


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


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N, C, H, W] (or rows decoded on demand: data/rows.py)
    labels: torch.Tensor  # int64 [N]; for the unlabeled pool, the hidden truth (never trained on)
    ids: list[str]  # stable per-image ids ("train-00042"), the key of the pseudo-label store
    classes: list[str]
    # what identifies the pixels without reading them (a decode cache's key: every file's id, size
    # and mtime, resolution, channels), or None: fingerprints then hash the pixels themselves
    digest: str | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise ValueError(f"images ({len(self.images)}), labels ({len(self.labels)}) and ids ({len(self.ids)}) differ in length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def subset(self, indices) -> "ImageSet":
        if isinstance(indices, range) and not torch.is_tensor(self.images):  # pixels read from files stay files
            part = slice(indices.start, indices.stop, indices.step)
            return ImageSet(self.images.select(part), self.labels[part], self.ids[part], self.classes,
                            self.digest and f"{self.digest}[{indices.start}:{indices.stop}:{indices.step}]")
        if isinstance(indices, range) and indices.step == 1:  # a view: memory-mapped pixels stay on disk
            part = slice(indices.start, indices.stop)
            return ImageSet(self.images[part], self.labels[part], self.ids[part], self.classes,
                            self.digest and f"{self.digest}[{indices.start}:{indices.stop}]")
        index = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], [self.ids[i] for i in index.tolist()], self.classes)


def pad_to(images: ImageSet, size: int) -> ImageSet:
    """Zero-pad (centered) to size x size; Fashion-MNIST's background is already 0."""
    height, width = images.images.shape[-2:]
    if (height, width) == (size, size):
        return images
    if height > size or width > size:
        raise ValueError(f"images are {height}x{width}, larger than image_size {size}")
    top, left = (size - height) // 2, (size - width) // 2
    padded = F.pad(images.images, (left, size - width - left, top, size - height - top))
    return ImageSet(padded, images.labels, images.ids, images.classes)
