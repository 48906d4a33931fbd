"""RandAugment as in the official TF code the paper trained with, batched on tensors.

The official `distort_image_with_randaugment` (tensorflow/tpu, efficientnet/autoaugment.py)
draws, for each of N layers, one of 16 ops uniformly and ALWAYS applies it at the fixed
magnitude M, with a random sign for the geometric ops. Level M maps to op parameters linearly
with `M / 10` ("_MAX_LEVEL = 10"), and nothing clips M: the paper's M=27 means rotations of
81 degrees, shears of 0.81, enhancement factors of 4.96.

Mapping from (N, M) to each op's parameter, for an S x S image. TF's translate (100 px) and
cutout (40 px) constants are absolute pixels in the official ImageNet path, at every resolution
(`pixels="absolute"`, the default: at M=27 and 475 px, translations of 270 px and a cutout
half-side of 108 px). For small images that would push every translated image out of frame, so
`pixels="relative"` scales both by S / 224 (our 32 px demo):

| op          | parameter at level M                   | sign   |
|-------------|----------------------------------------|--------|
| Rotate      | 30 * M/10 degrees                      | random |
| ShearX/Y    | 0.3 * M/10 (shear factor)              | random |
| TranslateX/Y| 100 * M/10 px (relative: x S/224)     | random |
| Color, Contrast, Brightness, Sharpness | factor 1.8 * M/10 + 0.1 | none |
| Posterize   | keep int(4 * M/10) bits (>= 8 bits is the identity)   |        |
| Solarize    | invert pixels >= int(256 * M/10) (>= 256: identity)    |        |
| SolarizeAdd | add int(110 * M/10) to pixels < 128, clip to 255        |        |
| Cutout      | square of side 2 * int(40 * M/10) (relative: x S/224), fill 128 | |
| AutoContrast, Equalize, Invert | no parameter        |        |

Geometric ops fill with gray 128 and use nearest interpolation, as TF's did. Shears pivot on
the image center (torchvision) rather than TF's top-left corner: same magnitude, content stays
in frame. Posterize above 8 bits is the identity here; TF shifted by a negative amount there,
which is undefined behaviour rather than a design.

How the defaults elsewhere differ: timm's `rand-m9-n2` applies each op with p=0.5, clips M at
10 unless given `mmax` (`rand-m27-mmax27-n2`), and draws magnitude noise; its translate is a
fraction of the image and it has no SolarizeAdd-free op set like TF's. torchvision's
`RandAugment` uses 31 magnitude bins with a different op set (no Cutout/SolarizeAdd, adds
Identity) and a max rotation of 30 degrees at its top bin. We keep TF's semantics (every op
always applied, TF's op set and constants), which neither reproduces.

Images are grouped by (op, sign) so that every op runs once per group on a batched uint8
tensor with torchvision.transforms.v2 functional ops, on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
       "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
FILL = 128
REFERENCE_SIZE = 224  # the resolution TF's translate and cutout constants were chosen at
PIXEL_MODES = ("absolute", "relative")


def op_parameters(magnitude: float, image_size: int, pixels: str = "absolute") -> dict[str, float]:
    """Each op's parameter at this magnitude (before the random sign), as in the table above."""
    if pixels not in PIXEL_MODES:
        raise ValueError(f"pixels must be one of {PIXEL_MODES}, got {pixels!r}")
    level = magnitude / 10.0
    enhance = 1.8 * level + 0.1
    scale = image_size / REFERENCE_SIZE if pixels == "relative" else 1.0
    return {
        "Rotate": 30.0 * level,
        "ShearX": 0.3 * level,
        "ShearY": 0.3 * level,
        "TranslateX": 100.0 * scale * level,
        "TranslateY": 100.0 * scale * level,
        "Color": enhance, "Contrast": enhance, "Brightness": enhance, "Sharpness": enhance,
        "Posterize": int(4 * level),
        "Solarize": int(256 * level),
        "SolarizeAdd": int(110 * level),
        "Cutout": int(40.0 * scale * level),
    }


def _affine(images, *, angle=0.0, translate=(0.0, 0.0), shear=(0.0, 0.0)):
    return TF.affine(images, angle=angle, translate=list(translate), scale=1.0, shear=list(shear),
                     interpolation=InterpolationMode.NEAREST, fill=[float(FILL)] * images.shape[-3])


def _shear_degrees(factor: float) -> float:
    return float(torch.rad2deg(torch.atan(torch.tensor(factor))))


def _cutout(images: torch.Tensor, half_side: int, centers: torch.Tensor) -> torch.Tensor:
    """Gray squares centered at `centers` [n, 2], (y, x) as fractions of the height and width."""
    _, _, height, width = images.shape
    cy = (centers[:, 0] * height).long().view(-1, 1, 1).to(images.device)
    cx = (centers[:, 1] * width).long().view(-1, 1, 1).to(images.device)
    ys = torch.arange(height, device=images.device).view(1, -1, 1)
    xs = torch.arange(width, device=images.device).view(1, 1, -1)
    inside = ((ys - cy).abs() < half_side) & ((xs - cx).abs() < half_side)
    return images.masked_fill(inside.unsqueeze(1), FILL)


def apply_op(name: str, images: torch.Tensor, value: float, centers: torch.Tensor | None = None) -> torch.Tensor:
    """One op on a uint8 batch with a signed parameter `value` (Cutout: and its `centers`)."""
    if name == "AutoContrast":
        return TF.autocontrast(images)
    if name == "Equalize":
        return TF.equalize(images)
    if name == "Invert":
        return TF.invert(images)
    if name == "Rotate":
        return TF.rotate(images, value, interpolation=InterpolationMode.NEAREST, fill=[float(FILL)] * images.shape[-3])
    if name == "ShearX":
        return _affine(images, shear=(_shear_degrees(value), 0.0))
    if name == "ShearY":
        return _affine(images, shear=(0.0, _shear_degrees(value)))
    if name == "TranslateX":
        return _affine(images, translate=(value, 0.0))
    if name == "TranslateY":
        return _affine(images, translate=(0.0, value))
    if name == "Color":
        return TF.adjust_saturation(images, value)
    if name == "Contrast":
        return TF.adjust_contrast(images, value)
    if name == "Brightness":
        return TF.adjust_brightness(images, value)
    if name == "Sharpness":
        return TF.adjust_sharpness(images, value)
    if name == "Posterize":
        return images if value >= 8 else TF.posterize(images, int(value))
    if name == "Solarize":
        return images if value > 255 else TF.solarize(images, int(value))
    if name == "SolarizeAdd":
        added = (images.to(torch.int16) + int(value)).clamp(0, 255).to(torch.uint8)
        return torch.where(images < 128, added, images)
    if name == "Cutout":
        return _cutout(images, int(value), centers) if value > 0 else images
    raise KeyError(f"unknown RandAugment op {name!r}; known: {', '.join(OPS)}")


class RandAugment:
    """N ops per image drawn uniformly from `ops`, each always applied at magnitude M."""

    def __init__(self, layers: int = 2, magnitude: float = 27.0, ops: tuple[str, ...] = OPS,
                 pixels: str = "absolute"):
        unknown = set(ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown RandAugment ops {sorted(unknown)}; known: {', '.join(OPS)}")
        op_parameters(magnitude, REFERENCE_SIZE, pixels)  # checks `pixels`
        self.layers, self.magnitude, self.ops, self.pixels = layers, magnitude, tuple(ops), pixels

    def sample(self, n: int, generator: torch.Generator) -> RandAugmentDraw:
        """Every random choice for `n` images: per layer, each image's op, sign and cutout center."""
        op_index = torch.randint(0, len(self.ops), (self.layers, n), generator=generator)
        sign = torch.randint(0, 2, (self.layers, n), generator=generator) * 2 - 1
        centers = torch.rand(self.layers, n, 2, generator=generator)
        return RandAugmentDraw(op_index, sign, centers)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.sample(len(images), generator))

    def apply(self, images: torch.Tensor, draw: RandAugmentDraw) -> torch.Tensor:
        """`images` (uint8 [n, C, H, W]) transformed as `draw` (n images' choices) says."""
        if images.dtype != torch.uint8:
            raise TypeError(f"RandAugment works on uint8 images (TF semantics), got {images.dtype}")
        parameters = op_parameters(self.magnitude, images.shape[-1], self.pixels)
        out = images.clone()
        for layer in range(self.layers):
            for op_id, op_name in enumerate(self.ops):
                chosen = draw.op_index[layer] == op_id
                signs = (1, -1) if op_name in SIGNED_OPS else (None,)
                for s in signs:
                    mask = chosen if s is None else chosen & (draw.sign[layer] == s)
                    rows = mask.nonzero().flatten()
                    if len(rows) == 0:
                        continue
                    value = parameters.get(op_name, 0.0) * (s or 1)
                    centers = draw.centers[layer, rows]
                    rows = rows.to(images.device)
                    out[rows] = apply_op(op_name, out[rows], value, centers)
        return out


@dataclass(frozen=True)
class RandAugmentDraw:
    """RandAugment's random choices for a batch: op index and sign [layers, n], cutout centers
    [layers, n, 2]. Drawn once for a global batch, indexed by each process's rows."""

    op_index: torch.Tensor
    sign: torch.Tensor
    centers: torch.Tensor

    def select(self, rows: torch.Tensor) -> RandAugmentDraw:
        return RandAugmentDraw(self.op_index[:, rows], self.sign[:, rows], self.centers[:, rows])
