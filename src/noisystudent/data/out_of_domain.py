"""Out-of-domain images for a mixed demo pool: rendered characters or drawn strokes.

The paper's pool (JFT) is mostly out of ImageNet's domain, which is why it filters by
confidence and why soft labels help there. To study that on Fashion-MNIST, `data.ood_fraction`
mixes into its unlabeled pool images from another distribution that can be made on any machine
without a download: 28 x 28 grayscale renderings of one to three characters (letters, digits,
punctuation) in Pillow's built-in font, at random sizes, positions and rotations, bright on
black like Fashion-MNIST (`characters`), or pen strokes like MNIST's handwriting (`strokes`):
one to three smooth curves of random width (`data.ood_source`). They have no class (hidden label
-1), so the pool's accuracy and the selection's stats can count what the teacher does with them.
"""

from __future__ import annotations

import string

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .images import ImageSet

OOD_LABEL = -1  # the hidden label of an out-of-domain image: no class
CHARACTERS = string.ascii_letters + string.digits + "#%&?@*+=<>{}$"


def rendered_characters(count: int, seed: int, size: int = 28) -> torch.Tensor:
    """uint8 [count, 1, size, size]: each image one to three characters (seeded)."""
    rng = np.random.default_rng(seed)
    fonts = {points: ImageFont.load_default(size=points) for points in range(10, 25, 2)}
    images = np.zeros((count, 1, size, size), np.uint8)
    for i in range(count):
        canvas = Image.new("L", (2 * size, 2 * size))
        draw = ImageDraw.Draw(canvas)
        text = "".join(rng.choice(list(CHARACTERS), size=rng.integers(1, 4)))
        font = fonts[int(rng.choice(list(fonts)))]
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = size - (left + right) // 2 + int(rng.integers(-3, 4))  # centered, jittered
        y = size - (top + bottom) // 2 + int(rng.integers(-3, 4))
        draw.text((x, y), text, fill=int(rng.integers(150, 256)), font=font)
        canvas = canvas.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR, center=(size, size))
        images[i, 0] = np.asarray(canvas.crop((size // 2, size // 2, size // 2 + size, size // 2 + size)))
    return torch.from_numpy(images)


def drawn_strokes(count: int, seed: int, size: int = 28) -> torch.Tensor:
    """uint8 [count, 1, size, size]: each image one to three pen strokes, each a smooth curve through
    four random points (seeded), a handwriting-like source with no glyph shapes."""
    rng = np.random.default_rng(seed)
    scale = 4  # drawn at 4x and downsampled: anti-aliased edges like a scanned pen's
    images = np.zeros((count, 1, size, size), np.uint8)
    t = np.linspace(0, 1, 24)[:, None]
    for i in range(count):
        canvas = Image.new("L", (scale * size, scale * size))
        draw = ImageDraw.Draw(canvas)
        width = int(rng.integers(6, 12))  # 1.5 to 3 px, MNIST's pen
        for _ in range(int(rng.integers(1, 4))):
            p0, p1, p2, p3 = rng.uniform(4, size - 4, size=(4, 2)) * scale
            curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3  # cubic Bezier
            draw.line([tuple(point) for point in curve], fill=int(rng.integers(180, 256)), width=width, joint="curve")
        images[i, 0] = np.asarray(canvas.resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    return torch.from_numpy(images)


OOD_SOURCES = {"characters": rendered_characters, "strokes": drawn_strokes}


def out_of_domain_images(source: str, count: int, seed: int, size: int) -> torch.Tensor:
    """uint8 [count, 1, size, size] of `source`, drawn at 28 px and zero-padded to `size` as
    Fashion-MNIST's images are."""
    images = OOD_SOURCES[source](count, seed)
    pad = (size - images.shape[-1]) // 2
    return torch.nn.functional.pad(images, (pad, size - images.shape[-1] - pad, pad, size - images.shape[-1] - pad))


def mix_out_of_domain(pool: ImageSet, fraction: float, seed: int, source: str = "characters") -> ImageSet:
    """`pool` plus out-of-domain images (`source`, one of OOD_SOURCES) making up `fraction` of
    the result, appended with ids `ood-NNNNNN` and label -1, then shuffled in (seeded) so that
    every shard holds some."""
    count = round(fraction / (1 - fraction) * len(pool))
    if count == 0:
        return pool
    images = torch.cat([pool.images, out_of_domain_images(source, count, seed, pool.images.shape[-1])])
    labels = torch.cat([pool.labels, torch.full((count,), OOD_LABEL, dtype=pool.labels.dtype)])
    ids = pool.ids + [f"ood-{i:06d}" for i in range(count)]
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    return ImageSet(images[order], labels[order], [ids[i] for i in order.tolist()], pool.classes)
