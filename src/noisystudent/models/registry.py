"""Model registry on timm.

Every model is a `Classifier`: it takes float images in [0, 1] (pixel space, so that attacks
and corruptions need not know the normalization), normalizes them, and runs a timm backbone
created with `drop_rate` (dropout before the classifier) and `drop_path_rate` (stochastic
depth, timm's linear decay: 0 at the first block, the full rate at the last).

Small-image variants. ImageNet stems downsample by 4 before the first stage (7x7/2 conv +
max-pool), which leaves 8x8 feature maps from a 32x32 input and wastes the image. Ours keep
timm's ResNet (BasicBlock, its stochastic depth and dropout) and swap the stem for one 3x3
stride-2 conv without the max-pool: stage 1 sees 16x16, the last stage 2x2. Measured on 2 CPU
cores at 32x32 (DESIGN.md), this stem trains 2-4x faster than a stride-1 stem at a small cost in
accuracy on 28 px data. Why each exists:

- resnet_tiny_32   (16-32-64-128 ch, 1 block/stage, 0.3M): tests and the quick demo.
- resnet_small_32  (32-64-128-256 ch, 1 block/stage, 1.2M): the demo's teacher, ~900 img/s.
- resnet_medium_32 (32-64-128-256 ch, 2 blocks/stage, 2.8M): a deeper student for a later round.
- resnet_wide_32   (64-128-256-512 ch, 1 block/stage, 4.9M): a wider student, for GPUs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import timm
import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from ..errors import UserError


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model from exported weights."""

    name: str
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_metadata(self) -> dict[str, str]:
        return {key: str(value) if not isinstance(value, tuple) else ",".join(map(str, value))
                for key, value in asdict(self).items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "ModelSpec":
        try:
            return cls(name=metadata["name"], num_classes=int(metadata["num_classes"]),
                       in_chans=int(metadata["in_chans"]),
                       mean=tuple(float(v) for v in metadata["mean"].split(",")),
                       std=tuple(float(v) for v in metadata["std"].split(",")))
        except (KeyError, ValueError) as error:
            raise UserError(f"weights file lacks the model description ({error}); was it exported by noisystudent?") from None


def _small_resnet(channels: tuple[int, ...], layers: tuple[int, ...]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_chans: int, drop_rate: float, drop_path_rate: float) -> nn.Module:
        model = ResNet(BasicBlock, layers, num_classes=num_classes, in_chans=in_chans, channels=channels,
                       drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        stem_channels = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_chans, stem_channels, kernel_size=3, stride=2, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model
    return build


SMALL_IMAGE_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet_tiny_32": _small_resnet((16, 32, 64, 128), (1, 1, 1, 1)),
    "resnet_small_32": _small_resnet((32, 64, 128, 256), (1, 1, 1, 1)),
    "resnet_medium_32": _small_resnet((32, 64, 128, 256), (2, 2, 2, 2)),
    "resnet_wide_32": _small_resnet((64, 128, 256, 512), (1, 1, 1, 1)),
}
MODEL_NAMES_HELP = (f"use one of {', '.join(SMALL_IMAGE_MODELS)} or any timm model name "
                    f"(`noisystudent models` lists them)")


def is_known_model(name: str) -> bool:
    return name in SMALL_IMAGE_MODELS or timm.is_model(name)


class Classifier(nn.Module):
    """Normalization + backbone; input is float [0, 1] of shape [N, C, H, W]."""

    def __init__(self, spec: ModelSpec, backbone: nn.Module):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)


def build_model(name: str, num_classes: int, in_chans: int = 1, dropout: float = 0.0,
                survival_prob: float = 1.0, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None) -> Classifier:
    """A Classifier by registry name. `survival_prob` is stochastic depth's keep probability at
    the last block (paper 0.8), i.e. drop_path_rate = 1 - survival_prob."""
    if not is_known_model(name):
        raise UserError(f"unknown model {name!r}; {MODEL_NAMES_HELP}")
    noise = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=dropout, drop_path_rate=1.0 - survival_prob)
    if name in SMALL_IMAGE_MODELS:
        backbone = SMALL_IMAGE_MODELS[name](**noise)
    else:
        backbone = timm.create_model(name, pretrained=False, **noise)
    # Fashion-MNIST statistics by default; ImageNet's would be the choice for RGB photos.
    spec = ModelSpec(name, num_classes, in_chans, tuple(mean or (0.286,) * in_chans), tuple(std or (0.353,) * in_chans))
    return Classifier(spec, backbone)


def count_parameters(name: str, num_classes: int, in_chans: int) -> int:
    """Parameters of a model, built on the meta device so that even huge ones cost nothing."""
    with torch.device("meta"):
        model = build_model(name, num_classes, in_chans)
    return sum(p.numel() for p in model.parameters())


def check_student_size(teacher: str, student: str, num_classes: int, in_chans: int, allow_smaller: bool) -> None:
    """The paper's student is equal or larger than its teacher; refuse a smaller one."""
    teacher_params = count_parameters(teacher, num_classes, in_chans)
    student_params = count_parameters(student, num_classes, in_chans)
    if student_params < teacher_params and not allow_smaller:
        raise UserError(
            f"student {student} ({student_params:,} parameters) is smaller than teacher {teacher} "
            f"({teacher_params:,}); Noisy Student needs an equal-or-larger student. Choose a larger model "
            f"in `models`, or set allow_smaller_student=true to run the ablation anyway")
