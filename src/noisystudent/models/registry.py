"""Model registry on timm.

Every model is a `Classifier`: it takes float images in [0, 1] (pixel space, so that attacks
and corruptions need not know the normalization), normalizes them, and runs a timm backbone
with `drop_rate` (dropout before the classifier) and stochastic depth whose drop probability
grows linearly with block index from 0 at the first block to `1 - survival_prob` at the last
(the paper: "survival probability 0.8 for the final layer"; official code and timm's
EfficientNet stop one step short, at rate * (n-1)/n, so we set each block's rate ourselves).

Names:
- `efficientnet-b0` ... `efficientnet-b7`, `efficientnet-l0`, `-l1`, `-l2`: the paper's family,
  built with timm's EfficientNet generator in its TF-faithful form (TF "same" padding, BN eps
  1e-3), with the official width/depth multipliers, resolutions and dropout (see EFFICIENTNETS).
- small-image ResNets for 28-32 px on CPUs (see SMALL_IMAGE_MODELS);
- any other timm model name, built by timm with its own defaults.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.efficientnet import _gen_efficientnet
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from ..errors import UserError

Builder = Callable[..., nn.Module]  # (num_classes, in_chans, drop_rate, drop_path_rate) -> nn.Module
METADATA_KEY = "noisystudent"  # the exported weights' metadata: the ModelSpec as sorted JSON
DEFAULT_SURVIVAL = 0.8  # stochastic depth at the last block, for every model (paper; official rate 0.2)


@dataclass(frozen=True)
class RegistryEntry:
    build: Builder
    train_resolution: int
    test_resolution: int
    dropout: float  # the model's own default dropout before the classifier
    width: float | None = None  # EfficientNet compound-scaling multipliers
    depth: float | None = None
    why: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model from exported weights."""

    name: str
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resolution: int | None = None  # inputs of another size are resized to this (FixRes fine-tuned models)

    def to_metadata(self) -> dict[str, str]:
        """One key holding sorted JSON: safetensors writes a metadata map of several keys in
        arbitrary order, so two exports of the same weights would differ in bytes (and hash)."""
        fields = {key: list(value) if isinstance(value, tuple) else value
                  for key, value in asdict(self).items() if value is not None}
        return {METADATA_KEY: json.dumps(fields, sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "ModelSpec":
        try:
            if METADATA_KEY in metadata:
                fields = json.loads(metadata[METADATA_KEY])
            else:  # exported before 0.2: one metadata key per field, tuples comma-joined
                fields = {key: metadata[key] for key in ("name", "num_classes", "in_chans", "mean", "std",
                                                         "resolution") if key in metadata}
                fields["mean"], fields["std"] = (fields[k].split(",") for k in ("mean", "std"))
            return cls(name=str(fields["name"]), num_classes=int(fields["num_classes"]),
                       in_chans=int(fields["in_chans"]), mean=tuple(float(v) for v in fields["mean"]),
                       std=tuple(float(v) for v in fields["std"]),
                       resolution=int(fields["resolution"]) if fields.get("resolution") is not None else None)
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise UserError(f"weights file lacks the model description ({type(error).__name__}: {error}); "
                            f"was it exported by noisystudent?") from None


# ---------------------------------------------------------------------------------------------
# Small-image variants. ImageNet stems downsample by 4 before the first stage (7x7/2 conv +
# max-pool), which leaves 8x8 maps from a 32x32 input and wastes the image. Ours keep timm's
# ResNet (BasicBlock, its dropout and stochastic depth) with one 3x3 stride-2 conv as the stem
# and no max-pool: stage 1 sees 16x16, the last stage 2x2. On 2 CPU cores this trains 2-4x
# faster than a stride-1 stem (DESIGN.md) at a small cost in accuracy on 28 px images.

def _small_resnet(channels: tuple[int, ...], layers: tuple[int, ...]) -> Builder:
    def build(num_classes: int, in_chans: int, drop_rate: float, drop_path_rate: float) -> nn.Module:
        model = ResNet(BasicBlock, layers, num_classes=num_classes, in_chans=in_chans, channels=channels,
                       drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, kernel_size=3, stride=2, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model
    return build


SMALL_IMAGE_MODELS: dict[str, RegistryEntry] = {
    "resnet_tiny_32": RegistryEntry(_small_resnet((16, 32, 64, 128), (1, 1, 1, 1)), 32, 32, 0.5,
                                    why="0.3M: tests and the quick demo; ~2000 img/s training on 2 cores"),
    "resnet_small_32": RegistryEntry(_small_resnet((32, 64, 128, 256), (1, 1, 1, 1)), 32, 32, 0.5,
                                     why="1.2M: the demo's teacher and first student; ~900 img/s"),
    "resnet_medium_32": RegistryEntry(_small_resnet((32, 64, 128, 256), (2, 2, 2, 2)), 32, 32, 0.5,
                                      why="2.8M: a deeper student for a later round; ~500 img/s"),
    "resnet_wide_32": RegistryEntry(_small_resnet((64, 128, 256, 512), (1, 1, 1, 1)), 32, 32, 0.5,
                                    why="4.9M: a wider student, for GPUs or patient CPUs; ~330 img/s"),
}


# ---------------------------------------------------------------------------------------------
# The paper's EfficientNets. B0-B7: (width, depth, resolution, dropout) from the official
# efficientnet_builder.py (tensorflow/tpu); L2 from google-research/noisystudent's builder
# ((4.3, 5.3, 800, 0.5)) with the paper's 475 px train resolution. L0 and L1 from the paper's
# appendix table "Architecture specifications for EfficientNets used in the paper"
# (arXiv:1911.04252v4, Table 7): L0 w=2.8 d=3.7 train 380 / test 500 (140M parameters), L1
# w=3.9 d=3.7 (L0 made wider) 380 / 500 (270M); the official code has no entry for them, and
# our tests check the resulting parameter counts against the table's.

def _efficientnet(variant: str, width: float, depth: float) -> Builder:
    def build(num_classes: int, in_chans: int, drop_rate: float, drop_path_rate: float) -> nn.Module:
        # timm looks up pretrained configs by variant name; L0/L1 have none, which is expected.
        logging.getLogger("timm.models._builder").setLevel(logging.ERROR)
        return _gen_efficientnet(variant, channel_multiplier=width, depth_multiplier=depth, pretrained=False,
                                 bn_eps=1e-3, pad_type="same", num_classes=num_classes, in_chans=in_chans,
                                 drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    return build


EFFICIENTNETS: dict[str, tuple[float, float, int, int, float]] = {
    # name: (width, depth, train resolution, test resolution, dropout)
    "efficientnet-b0": (1.0, 1.0, 224, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 600, 0.5),
    "efficientnet-l0": (2.8, 3.7, 380, 500, 0.5),
    "efficientnet-l1": (3.9, 3.7, 380, 500, 0.5),
    "efficientnet-l2": (4.3, 5.3, 475, 800, 0.5),
}

MODELS: dict[str, RegistryEntry] = {
    **SMALL_IMAGE_MODELS,
    **{name: RegistryEntry(_efficientnet("tf_" + name.replace("-", "_"), w, d), train, test, dropout, w, d,
                           why="the paper's model family")
       for name, (w, d, train, test, dropout) in EFFICIENTNETS.items()},
}
MODEL_NAMES_HELP = "use a name from `noisystudent models` (small-image ResNets, efficientnet-b0..l2) or any timm model"


def registry_table() -> str:
    """The README's model table, generated from the registry (a test keeps README in sync)."""
    rows = ["| model | parameters (1000 classes, RGB) | width x depth | train / test px | dropout | drop-path at last block |",
            "|---|---|---|---|---|---|"]
    for name, entry in MODELS.items():
        params = count_parameters(name, 1000, 3) / 1e6
        scaling = f"{entry.width} x {entry.depth}" if entry.width is not None else "-"
        rows.append(f"| `{name}` | {params:.1f}M | {scaling} | {entry.train_resolution} / {entry.test_resolution} | "
                    f"{entry.dropout} | {1 - DEFAULT_SURVIVAL:.1f} (survival {DEFAULT_SURVIVAL}) |")
    return "\n".join(rows)


def is_known_model(name: str) -> bool:
    return name in MODELS or timm.is_model(name)


def default_dropout(name: str) -> float:
    return MODELS[name].dropout if name in MODELS else 0.0


class Classifier(nn.Module):
    """Normalization + backbone; input is float [0, 1] of shape [N, C, H, W]."""

    def __init__(self, spec: ModelSpec, backbone: nn.Module):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.spec.resolution
        if size is not None and images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.backbone((images - self.mean) / self.std)


def stochastic_depth_blocks(backbone: nn.Module) -> list[nn.Module]:
    """Residual blocks with a stochastic-depth slot, in forward order. timm leaves the slot None
    or Identity where the rate is 0 (its first block under linear decay), so we look for the
    attribute, not for a DropPath, or the first block would be skipped and the decay shifted."""
    return [m for m in backbone.modules() if hasattr(m, "drop_path")]


def stochastic_depth_rates(backbone: nn.Module) -> list[float]:
    """Each block's drop probability, in forward order (0 where the slot is empty)."""
    return [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in stochastic_depth_blocks(backbone)]


def set_linear_stochastic_depth(backbone: nn.Module, last_block_drop: float) -> None:
    """Drop probability i / (n-1) * last_block_drop for block i of n: 0 first, exact at the last."""
    blocks = stochastic_depth_blocks(backbone)
    for index, block in enumerate(blocks):
        rate = last_block_drop * index / max(1, len(blocks) - 1)
        if rate > 0:
            block.drop_path = DropPath(rate)


def build_model(name: str, num_classes: int, in_chans: int = 1, dropout: float | None = 0.0,
                survival_prob: float = 1.0, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None, resolution: int | None = None) -> Classifier:
    """A Classifier by registry name. `dropout=None` takes the model's own default (B0 0.2 ...
    B7 0.5); `survival_prob` is stochastic depth's keep probability at the last block."""
    if not is_known_model(name):
        raise UserError(f"unknown model {name!r}; {MODEL_NAMES_HELP}")
    drop_rate = default_dropout(name) if dropout is None else dropout
    noise = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=1.0 - survival_prob)
    if name in MODELS:
        backbone = MODELS[name].build(**noise)
    else:
        backbone = timm.create_model(name, pretrained=False, **noise)
    if survival_prob < 1.0:
        set_linear_stochastic_depth(backbone, 1.0 - survival_prob)
    # Fashion-MNIST statistics for 1 channel; ImageNet's for RGB photos.
    default_mean, default_std = ((0.286,), (0.353,)) if in_chans == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    spec = ModelSpec(name, num_classes, in_chans, tuple(mean or default_mean * (in_chans // len(default_mean))),
                     tuple(std or default_std * (in_chans // len(default_std))), resolution)
    return Classifier(spec, backbone)


def count_parameters(name: str, num_classes: int, in_chans: int) -> int:
    """Parameters of a model, built on the meta device so that even huge ones cost nothing."""
    with torch.device("meta"):
        model = build_model(name, num_classes, in_chans)
    return sum(p.numel() for p in model.parameters())


def count_flops(name: str, num_classes: int, in_chans: int, resolution: int) -> int:
    """FLOPs of one forward pass at `resolution`, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(name, num_classes, in_chans).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, in_chans, resolution, resolution))
    return counter.get_total_flops()


def check_student_size(teacher: str, student: str, num_classes: int, in_chans: int, allow_smaller: bool,
                       resolution: int | None = None) -> None:
    """The paper's student is equal or larger than its teacher: parameters, and FLOPs at
    `resolution` when given. Refuse a smaller student unless allowed."""
    sizes = {role: {"parameters": count_parameters(name, num_classes, in_chans)}
             for role, name in (("teacher", teacher), ("student", student))}
    if resolution is not None:
        for role, name in (("teacher", teacher), ("student", student)):
            sizes[role]["FLOPs"] = count_flops(name, num_classes, in_chans, resolution)
    smaller = [measure for measure in sizes["student"] if sizes["student"][measure] < sizes["teacher"][measure]]
    if smaller and not allow_smaller:
        describe = lambda role: ", ".join(f"{v:,} {k}" for k, v in sizes[role].items())  # noqa: E731
        raise UserError(
            f"student {student} ({describe('student')}) is smaller than teacher {teacher} ({describe('teacher')}) "
            f"in {' and '.join(smaller)}; Noisy Student needs an equal-or-larger student. Choose a larger model in "
            f"`models`, or set allow_smaller_student=true to run the ablation anyway")
