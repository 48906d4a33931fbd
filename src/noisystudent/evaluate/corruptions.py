"""Common corruptions, ImageNet-C protocol (Hendrycks & Dietterich, ICLR 2019).

The 15 benchmark corruptions at 5 severities, from the maintained `imagecorruptions-imaug`
package (the original `imagecorruptions` 1.1.2 is broken on numpy 2). Grayscale images are
replicated to RGB for the corruption and converted back (ITU-R 601 luma), which is also much
faster for glass blur. The package refuses images under 32x32 px: such a corruption is reported
as unavailable with the reason, never skipped silently.

Corrupted sets are generated once per (images, corruption, severity, seed), cached under a
content hash, and reused, so every model (teacher, students, baseline) sees the same images.

    CE_c = sum_s E(model, c, s) / sum_s E(baseline, c, s),   mCE = mean_c CE_c
    relative CE_c = sum_s (E(model, c, s) - E(model, clean)) / sum_s (E(base, c, s) - E(base, clean))
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..config import CORRUPTION_NAMES as CORRUPTIONS
from ..io import atomic_write

SEVERITIES = (1, 2, 3, 4, 5)

# AlexNet's ImageNet-C top-1 error per corruption (mean over severities): the published
# normalizer for ImageNet mCE (Hendrycks & Dietterich 2019; their ImageNet-C evaluation code).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
LUMA = np.array([0.299, 0.587, 0.114])


class CorruptionUnavailable(Exception):
    pass


def corrupt_images(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> the same images corrupted (C is 1 or 3)."""
    import inspect

    from imagecorruptions import corrupt, corruptions

    # Most corruptions draw from numpy's global generator (seeded below); glass blur (numba)
    # and impulse noise (skimage) take their own seed, which we derive per image.
    takes_seed = "seed" in inspect.signature(getattr(corruptions, name)).parameters
    n, channels, height, width = images.shape
    if min(height, width) < 32:
        raise CorruptionUnavailable(f"imagecorruptions needs images of at least 32x32 px, these are {height}x{width}")
    state = np.random.get_state()
    np.random.seed(seed)  # the package draws from numpy's global generator
    try:
        out = np.empty((n, height, width, channels), dtype=np.uint8)
        for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
            rgb = np.repeat(image, 3, axis=2) if channels == 1 else image
            extra = {"seed": seed * 100_003 + i} if takes_seed else {}
            corrupted = np.asarray(corrupt(rgb, corruption_name=name, severity=severity, **extra), dtype=np.float64)
            corrupted = corrupted[:height, :width]
            if channels == 1:
                corrupted = (corrupted[..., :3] @ LUMA)[..., None] if corrupted.ndim == 3 else corrupted[..., None]
            out[i] = np.clip(np.rint(corrupted), 0, 255).astype(np.uint8)
    except AttributeError as error:  # the package's way of refusing an image
        raise CorruptionUnavailable(str(error)) from None
    finally:
        np.random.set_state(state)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class CorruptionCache:
    """Corrupted copies of one image set, on disk under a hash of its pixels and the seed."""

    def __init__(self, root: Path, images: torch.Tensor, seed: int):
        digest = hashlib.sha256(images.numpy().tobytes())
        digest.update(f"{tuple(images.shape)}|seed={seed}|imagecorruptions-imaug".encode())
        self.folder = Path(root) / digest.hexdigest()[:16]
        self.images, self.seed = images, seed

    def get(self, name: str, severity: int) -> torch.Tensor:
        path = self.folder / f"{name}-{severity}.npy"
        if path.is_file():
            return torch.from_numpy(np.load(path))
        corrupted = corrupt_images(self.images, name, severity, self.seed + 1000 * CORRUPTIONS.index(name) + severity)
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), corrupted.numpy()))
        return corrupted


def corruption_errors(error_of, cache: CorruptionCache, names=CORRUPTIONS, severities=SEVERITIES) -> dict:
    """{corruption: [top-1 error per severity]} or {corruption: {"unavailable": reason}}."""
    results = {}
    for name in names:
        try:
            results[name] = [error_of(cache.get(name, severity)) for severity in severities]
        except CorruptionUnavailable as reason:
            results[name] = {"unavailable": str(reason)}
    return results


def _available(errors: dict) -> dict[str, list[float]]:
    return {name: values for name, values in errors.items() if isinstance(values, list)}


def mean_corruption_error(errors: dict, baseline: dict) -> dict:
    """CE per corruption and mCE (in %, as published). Values are per-severity lists or a
    per-corruption mean error (as ALEXNET_ERRORS); only corruptions both sides have count."""
    ce = {}
    for name, values in _available(errors).items():
        base = baseline.get(name)
        if base is None or isinstance(base, dict):
            continue
        ce[name] = 100 * float(np.sum(values) / np.sum(base)) if isinstance(base, list) else \
            100 * float(np.mean(values) / base)
    return {"ce": ce, "mce": float(np.mean(list(ce.values()))) if ce else None}


def relative_mean_corruption_error(errors: dict, clean_error: float, baseline: dict, baseline_clean_error: float) -> dict:
    rce = {}
    for name, values in _available(errors).items():
        base = baseline.get(name)
        if not isinstance(base, list):
            continue
        denominator = float(np.sum(np.asarray(base) - baseline_clean_error))
        if denominator > 0:
            rce[name] = 100 * float(np.sum(np.asarray(values) - clean_error)) / denominator
    return {"relative_ce": rce, "relative_mce": float(np.mean(list(rce.values()))) if rce else None}
