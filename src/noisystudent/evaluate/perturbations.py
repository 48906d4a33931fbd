"""Perturbation stability, ImageNet-P protocol (Hendrycks & Dietterich, ICLR 2019).

Each test image becomes a sequence of `frames` images under a gradually growing perturbation
(geometric, brightness, blur) or independent draws of the same noise. The flip probability
counts how often the top-1 prediction changes: for noise sequences each frame is compared
with the first, for the others each frame with the previous one. mFR is the mean over
perturbations of FP(model) / FP(baseline), in %.

Sequences are made here with torchvision ops (ImageNet-P ships pre-rendered videos at 224 px;
the same kinds of motion at our sizes): translate 1 px a frame, rotate 1 degree, tilt (shear)
1 degree, scale +2 %, brightness +3 %, motion and zoom blur growing a step a frame; gaussian
(sigma 0.04), shot (Poisson, 60 photons at full scale) and speckle (sigma 0.1) noise fresh in
every frame. Snow needs the package's 224 px snow layers and is left out. Top-5 distance is
not computed: with 10 classes a top-5 ranking is half the label set and says little.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

NOISE_PERTURBATIONS = ("gaussian_noise", "shot_noise", "speckle_noise")
PERTURBATIONS = ("translate", "rotate", "tilt", "scale", "brightness", "motion_blur", "zoom_blur") + NOISE_PERTURBATIONS


def _frame(images: torch.Tensor, name: str, step: int, generator: torch.Generator) -> torch.Tensor:
    """Frame `step` (0 = the first) of a perturbation, float [0, 1]."""
    x = images.float() / 255
    if name == "translate":
        return TF.affine(x, angle=0.0, translate=[float(step), 0.0], scale=1.0, shear=[0.0, 0.0])
    if name == "rotate":
        return TF.rotate(x, float(step), interpolation=InterpolationMode.BILINEAR)
    if name == "tilt":
        return TF.affine(x, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=[float(step), float(step) / 2],
                         interpolation=InterpolationMode.BILINEAR)
    if name == "scale":
        return TF.affine(x, angle=0.0, translate=[0.0, 0.0], scale=1.0 + 0.02 * step, shear=[0.0, 0.0],
                         interpolation=InterpolationMode.BILINEAR)
    if name == "brightness":
        return (x + 0.03 * step).clamp(0, 1)
    if name == "motion_blur":
        return torch.stack([x.roll(shift, dims=-1) for shift in range(step + 1)]).mean(0)
    if name == "zoom_blur":
        size = x.shape[-1]
        zooms = [TF.center_crop(TF.resize(x, [round(size * (1 + 0.02 * k))] * 2, antialias=True), [size, size])
                 for k in range(step + 1)]
        return torch.stack(zooms).mean(0)
    if name == "gaussian_noise":
        return (x + 0.04 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    if name == "shot_noise":
        return (torch.poisson(x * 60, generator=generator) / 60).clamp(0, 1)
    if name == "speckle_noise":
        return (x + x * 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    raise KeyError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")


def perturbation_predictions(predict, images: torch.Tensor, name: str, frames: int, seed: int) -> torch.Tensor:
    """Top-1 predictions [frames, N]; `predict` maps float [0,1] images to labels."""
    generator = torch.Generator().manual_seed(seed + PERTURBATIONS.index(name))
    return torch.stack([predict(_frame(images, name, step, generator)) for step in range(frames)])


def flip_probability(predictions: torch.Tensor, compare_to_first: bool) -> float:
    reference = predictions[:1] if compare_to_first else predictions[:-1]
    return (predictions[1:] != reference).float().mean().item()


def perturbation_flip_probabilities(predict, images: torch.Tensor, frames: int, seed: int) -> dict[str, float]:
    return {name: flip_probability(perturbation_predictions(predict, images, name, frames, seed),
                                   compare_to_first=name in NOISE_PERTURBATIONS)
            for name in PERTURBATIONS}


def mean_flip_rate(flip_probabilities: dict[str, float], baseline: dict[str, float]) -> dict:
    """FR per perturbation and mFR, in %, relative to the baseline's flip probabilities."""
    rates = {name: 100 * fp / baseline[name] for name, fp in flip_probabilities.items()
             if baseline.get(name, 0) > 0}
    return {"fr": rates, "mfr": float(np.mean(list(rates.values()))) if rates else None}
