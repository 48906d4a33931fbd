"""Model registry on timm.

Every model is a `Classifier`: it takes float images in [0, 1] (pixel space, so that attacks
and corruptions need not know the normalization), normalizes them, and runs a timm backbone
with `drop_rate` (dropout before the classifier) and linear stochastic depth
(noise/stochastic_depth.py): the model noise of noise/.

Names (each of ours maps onto a timm model, `MODELS[name].timm_name`, which `timm.create_model`
builds; timm names cannot hold '-', and ours are registered with timm when this module is imported):
- `efficientnet-b0` ... `efficientnet-b7`, `efficientnet-l2`: timm's `tf_efficientnet_*`, the
  TF-faithful ports (TF "same" padding), with the official BatchNorm (TF_BATCH_NORM) and the
  official width/depth multipliers, resolutions and dropout (see EFFICIENTNETS);
- `efficientnet-l0`, `-l1`: the paper's, which timm lacks, registered with timm here as
  `noisystudent_efficientnet_l0` / `_l1`;
- small-image ResNets for 28-32 px on CPUs (see SMALL_IMAGE_MODELS), registered with timm here as
  `noisystudent_resnet_*_32`;
- any other timm model name, built by timm with its own defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Mapping

import timm
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.efficientnet import EfficientNet, _gen_efficientnet
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from ..errors import UserError
from ..noise.stochastic_depth import set_linear_stochastic_depth
from .airnet import AirNet

METADATA_KEY = "noisystudent"  # the exported weights' metadata: the ModelSpec as sorted JSON
DEFAULT_SURVIVAL = 0.8  # stochastic depth at the last block, for every model (paper; official rate 0.2)
# The official EfficientNet BatchNorm (tensorflow/tpu models/official/efficientnet/efficientnet_builder.py:
# batch_norm_momentum=0.99, batch_norm_epsilon=1e-3). TF's momentum weighs the running average and
# PyTorch's the new batch, so TF's 0.99 is PyTorch's 0.01; timm's tf_efficientnet_* take TF's eps but
# leave PyTorch's momentum of 0.1, so we pass both.
TF_BATCH_NORM: Mapping[str, float] = {"bn_momentum": 0.01, "bn_eps": 1e-3}


@dataclass(frozen=True)
class RegistryEntry:
    timm_name: str  # what timm.create_model builds
    train_resolution: int
    test_resolution: int
    dropout: float  # the model's own default dropout before the classifier
    width: float | None = None  # EfficientNet compound-scaling multipliers
    depth: float | None = None
    why: str = ""
    timm_kwargs: Mapping[str, float] = field(default_factory=dict)  # passed to timm.create_model
    # the evaluation's center crop keeps S / (S + crop_padding) of the shorter side before resizing
    # to S (official preprocessing.py CROP_PADDING = 32 for ImageNet); 0 = no crop
    crop_padding: int = 0

    def resolutions(self) -> dict:
        """What a model of this entry trains and evaluates at (`data.resolution=model`)."""
        test = self.test_resolution
        return {"train_resolution": self.train_resolution, "resolution": test,
                "crop_fraction": test / (test + self.crop_padding) if self.crop_padding else None}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model from exported weights."""

    name: str
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resolution: int | None = None  # evaluation inputs of another size are resized to this (the test resolution)
    classes: tuple[str, ...] | None = None  # class names, by index: predictions and reports use them
    image_size: int | None = None  # images are decoded to this (shorter side resized, center crop) first
    train_resolution: int | None = None  # training inputs are resized to this; None = `resolution`
    crop_fraction: float | None = None  # evaluation: keep this centered fraction of the image, then resize

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
            optional_int = lambda key: int(fields[key]) if fields.get(key) is not None else None  # noqa: E731
            classes = fields.get("classes")
            spec = cls(name=str(fields["name"]), num_classes=int(fields["num_classes"]),
                       in_chans=int(fields["in_chans"]), mean=tuple(float(v) for v in fields["mean"]),
                       std=tuple(float(v) for v in fields["std"]), resolution=optional_int("resolution"),
                       classes=None if classes is None else tuple(str(c) for c in classes),
                       image_size=optional_int("image_size"), train_resolution=optional_int("train_resolution"),
                       crop_fraction=float(fields["crop_fraction"]) if fields.get("crop_fraction") else None)
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise UserError(f"weights file lacks the model description ({type(error).__name__}: {error}); "
                            f"was it exported by noisystudent?") from None
        if spec.classes is not None and len(spec.classes) != spec.num_classes:
            raise UserError(f"weights file names {len(spec.classes)} classes for a {spec.num_classes}-class model")
        return spec

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes is not None else str(index)


# ---------------------------------------------------------------------------------------------
# Small-image variants. ImageNet stems downsample by 4 before the first stage (7x7/2 conv +
# max-pool), which leaves 8x8 maps from a 32x32 input and wastes the image. Ours keep timm's
# ResNet (BasicBlock, its dropout and stochastic depth) with one 3x3 stride-2 conv as the stem
# and no max-pool: stage 1 sees 16x16, the last stage 2x2. A stride-1 stem would keep the full
# 28-32 px but give every stage 4x the positions, so 4x the FLOPs per image (count_flops): we
# give up that resolution to keep training on CPUs practical. resnet_slim_32 keeps it instead and
# halves every stage's width, which brings its stages' FLOPs back to resnet_small_32's (1.3x in
# all: timm's stem stays 64 wide, now at 32x32); thin convolutions use CPU cores less well, so it
# trains at about 0.6x small's images/s, a little faster than medium. On Fashion-MNIST the
# resolution does not pay for that: 91.06% against small's 91.39% for the same images on true
# labels (benchmarks/results/student_ceiling.json).

SMALL_IMAGE_MODELS: dict[str, RegistryEntry] = {
    "resnet_tiny_32": RegistryEntry("noisystudent_resnet_tiny_32", 32, 32, 0.5,
                                    why="0.3M: tests and the quick demo; ~2000 img/s training on 2 cores"),
    "resnet_small_32": RegistryEntry("noisystudent_resnet_small_32", 32, 32, 0.5,
                                     why="1.2M: the demo's teacher and first student; ~900 img/s"),
    "resnet_slim_32": RegistryEntry("noisystudent_resnet_slim_32", 32, 32, 0.5,
                                    why="0.3M, stride-1 stem: stage 1 sees all 32x32 at 1.3x small's FLOPs; ~550 img/s"),
    "resnet_medium_32": RegistryEntry("noisystudent_resnet_medium_32", 32, 32, 0.5,
                                      why="2.8M: a deeper student for a later round; ~500 img/s"),
    "resnet_wide_32": RegistryEntry("noisystudent_resnet_wide_32", 32, 32, 0.5,
                                    why="4.9M: a wider student, for GPUs or patient CPUs; ~330 img/s"),
    # AirNets (models/airnet.py, after airbench): more accuracy per CPU minute than the ResNets above
    "airnet_small_32": RegistryEntry("noisystudent_airnet_small_32", 32, 32, 0.5,
                                     why="0.3M, widths 32-64-128: the demo's teacher and first student"),
    "airnet_medium_32": RegistryEntry("noisystudent_airnet_medium_32", 32, 32, 0.5,
                                      why="0.7M, widths 48-96-192: the demo's final student"),
    "airnet_wide_32": RegistryEntry("noisystudent_airnet_wide_32", 32, 32, 0.5,
                                    why="1.2M, airbench94's widths 64-128-256: for GPUs"),
}


# ---------------------------------------------------------------------------------------------
# The paper's EfficientNets. B0-B7: (width, depth, resolution, dropout) from the official
# efficientnet_builder.py (tensorflow/tpu); L2 from google-research/noisystudent's builder
# ((4.3, 5.3, 800, 0.5)) with the paper's 475 px train resolution. L0 and L1 from the paper's
# appendix table "Architecture specifications for EfficientNets used in the paper"
# (arXiv:1911.04252v4, Table 7): L0 w=2.8 d=3.7 train 380 / test 500 (140M parameters), L1
# w=3.9 d=3.7 (L0 made wider) 380 / 500 (270M); neither the official code nor timm has them, so
# we register them with timm below, and our tests check the resulting parameter counts against
# the table's.

EFFICIENTNETS: dict[str, tuple[str, float, float, int, int, float]] = {
    # name: (timm name, width, depth, train resolution, test resolution, dropout)
    "efficientnet-b0": ("tf_efficientnet_b0", 1.0, 1.0, 224, 224, 0.2),
    "efficientnet-b1": ("tf_efficientnet_b1", 1.0, 1.1, 240, 240, 0.2),
    "efficientnet-b2": ("tf_efficientnet_b2", 1.1, 1.2, 260, 260, 0.3),
    "efficientnet-b3": ("tf_efficientnet_b3", 1.2, 1.4, 300, 300, 0.3),
    "efficientnet-b4": ("tf_efficientnet_b4", 1.4, 1.8, 380, 380, 0.4),
    "efficientnet-b5": ("tf_efficientnet_b5", 1.6, 2.2, 456, 456, 0.4),
    "efficientnet-b6": ("tf_efficientnet_b6", 1.8, 2.6, 528, 528, 0.5),
    "efficientnet-b7": ("tf_efficientnet_b7", 2.0, 3.1, 600, 600, 0.5),
    "efficientnet-l0": ("noisystudent_efficientnet_l0", 2.8, 3.7, 380, 500, 0.5),
    "efficientnet-l1": ("noisystudent_efficientnet_l1", 3.9, 3.7, 380, 500, 0.5),
    "efficientnet-l2": ("tf_efficientnet_l2", 4.3, 5.3, 475, 800, 0.5),
}

MODELS: dict[str, RegistryEntry] = {
    **SMALL_IMAGE_MODELS,
    **{name: RegistryEntry(timm_name, train, test, dropout, w, d, why="the paper's model family",
                           timm_kwargs=TF_BATCH_NORM, crop_padding=32)
       for name, (timm_name, w, d, train, test, dropout) in EFFICIENTNETS.items()},
}
MODEL_NAMES_HELP = "use a name from `noisystudent models` (small-image ResNets, efficientnet-b0..l2) or any timm model"
OWN_PREFIX = "noisystudent_"  # the models we register with timm

# timm's pretrained-config registry, read by register_model from this module's `default_cfgs`: our
# models have no weights, but without a config timm warns at every build that it is using a default.
# The first convolution and the classifier by name: what starting from other weights adapts
# (another channel count) or replaces (another class count), as timm's own configs name them.
default_cfgs = generate_default_cfgs({
    entry.timm_name: {"input_size": (3, entry.train_resolution, entry.train_resolution),
                      "test_input_size": (3, entry.test_resolution, entry.test_resolution),
                      **({"first_conv": "conv_stem", "classifier": "classifier"} if entry.width is not None
                         else {"first_conv": "conv1", "classifier": "fc"})}
    for entry in MODELS.values() if entry.timm_name.startswith(OWN_PREFIX)})


def _small_resnet(variant: str, pretrained: bool, channels: tuple[int, ...], layers: tuple[int, ...],
                  stem_stride: int = 2, **kwargs) -> ResNet:
    model = build_model_with_cfg(ResNet, variant, pretrained, block=BasicBlock, layers=layers, channels=channels,
                                 **kwargs)
    stem = model.conv1
    model.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, kernel_size=3, stride=stem_stride, padding=1,
                            bias=False, device=stem.weight.device, dtype=stem.weight.dtype)
    model.maxpool = nn.Identity()
    return model


AIRNET_WIDTHS: dict[str, tuple[tuple[int, ...], int]] = {  # timm name: (group widths, stem width)
    "noisystudent_airnet_small_32": ((32, 64, 128), 16),
    "noisystudent_airnet_medium_32": ((48, 96, 192), 24),
    "noisystudent_airnet_wide_32": ((64, 128, 256), 24),
}


def _airnet(variant: str, pretrained: bool, **kwargs) -> AirNet:
    widths, stem_width = AIRNET_WIDTHS[variant]
    return build_model_with_cfg(AirNet, variant, pretrained, widths=widths, stem_width=stem_width, **kwargs)


@register_model
def noisystudent_airnet_small_32(pretrained: bool = False, **kwargs) -> AirNet:
    return _airnet("noisystudent_airnet_small_32", pretrained, **kwargs)


@register_model
def noisystudent_airnet_medium_32(pretrained: bool = False, **kwargs) -> AirNet:
    return _airnet("noisystudent_airnet_medium_32", pretrained, **kwargs)


@register_model
def noisystudent_airnet_wide_32(pretrained: bool = False, **kwargs) -> AirNet:
    return _airnet("noisystudent_airnet_wide_32", pretrained, **kwargs)


@register_model
def noisystudent_resnet_tiny_32(pretrained: bool = False, **kwargs) -> ResNet:
    return _small_resnet("noisystudent_resnet_tiny_32", pretrained, (16, 32, 64, 128), (1, 1, 1, 1), **kwargs)


@register_model
def noisystudent_resnet_small_32(pretrained: bool = False, **kwargs) -> ResNet:
    return _small_resnet("noisystudent_resnet_small_32", pretrained, (32, 64, 128, 256), (1, 1, 1, 1), **kwargs)


@register_model
def noisystudent_resnet_slim_32(pretrained: bool = False, **kwargs) -> ResNet:
    return _small_resnet("noisystudent_resnet_slim_32", pretrained, (16, 32, 64, 128), (1, 1, 1, 1), stem_stride=1,
                         **kwargs)


@register_model
def noisystudent_resnet_medium_32(pretrained: bool = False, **kwargs) -> ResNet:
    return _small_resnet("noisystudent_resnet_medium_32", pretrained, (32, 64, 128, 256), (2, 2, 2, 2), **kwargs)


@register_model
def noisystudent_resnet_wide_32(pretrained: bool = False, **kwargs) -> ResNet:
    return _small_resnet("noisystudent_resnet_wide_32", pretrained, (64, 128, 256, 512), (1, 1, 1, 1), **kwargs)


def _paper_efficientnet(name: str, pretrained: bool, **kwargs) -> EfficientNet:
    """`name` from EFFICIENTNETS, built as timm builds its tf_efficientnet_* (TF "same" padding)."""
    timm_name, width, depth, *_ = EFFICIENTNETS[name]
    # No public route: timm's EfficientNet entrypoints each fix their multipliers, and its public
    # EfficientNet class would need B0's block definitions copied out of this private generator (and
    # decoded by another private module). The generator is the one behind timm's B0-B7 and L2, so
    # L0/L1 come out of the same code and differ from them in width and depth alone.
    return _gen_efficientnet(timm_name, channel_multiplier=width, depth_multiplier=depth, pretrained=pretrained,
                             **{"pad_type": "same", **TF_BATCH_NORM, **kwargs})


@register_model
def noisystudent_efficientnet_l0(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _paper_efficientnet("efficientnet-l0", pretrained, **kwargs)


@register_model
def noisystudent_efficientnet_l1(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _paper_efficientnet("efficientnet-l1", pretrained, **kwargs)


def registry_table() -> str:
    """docs/paper-fidelity.md's model table, generated from the registry (a test keeps the two equal)."""
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


def model_resolutions(name: str) -> dict:
    """build_model's resolution arguments for a registry model at its own resolutions (empty for
    other timm names: they take the images as they come)."""
    return MODELS[name].resolutions() if name in MODELS else {}


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
        return self.backbone(self.prepare(images))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's input: center-cropped (the official evaluation), resized to the model's
        resolution, normalized."""
        spec = self.spec
        if not self.training and spec.crop_fraction:  # the official evaluation: center crop, then resize
            images = center_crop(images, spec.crop_fraction)
        size = (spec.train_resolution or spec.resolution) if self.training else spec.resolution
        if size is not None and images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the penultimate features, the logits) from one pass through the trunk: what the
        feature-space out-of-domain scores read (labels/ood.py). Both come from the backbone's
        timm-style forward_head, the features with pre_logits=True, so the logits are exactly
        forward's: a model whose head does more than its classifier layer after the pooled
        features (AirNet scales its logits, and drops out before the classifier) keeps it."""
        trunk = self.backbone.forward_features(self.prepare(images))
        return self.backbone.forward_head(trunk, pre_logits=True), self.backbone.forward_head(trunk)

    def stem(self) -> nn.Module:
        """The module that outputs the backbone's first feature map as timm's feature_info names it
        (ResNet's and AirNet's act1, after the stem's convolution and activation)."""
        return self.backbone.get_submodule(self.backbone.feature_info[0]["module"])

    def features_logits_and_stem_spread(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features_and_logits from the same pass, and the stem's output's per-channel standard
        deviation over positions ([N, C], float32): how much edge and texture energy each of the
        first filters sees, a low-level statistic that rendered strokes and clothes differ in and
        that the penultimate features, trained to name classes, mostly discard (the
        feature_ensemble out-of-domain score, labels/ood.py). A forward hook reads it, so the
        pass is forward's own."""
        captured = []
        handle = self.stem().register_forward_hook(  # inside the hook: ResNet's in-place ReLU output is not kept
            lambda module, inputs, output: captured.append(output.float().std(dim=(2, 3))))
        try:
            features, logits = self.features_and_logits(images)
        finally:
            handle.remove()
        return features, logits, captured[0]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate features (pooled, before the classifier)."""
        return self.backbone.forward_head(self.backbone.forward_features(self.prepare(images)), pre_logits=True)


def center_crop(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """The centered square of side round(fraction x the shorter side)."""
    height, width = images.shape[-2:]
    side = max(1, round(fraction * min(height, width)))
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top:top + side, left:left + side]


def build_model(name: str, num_classes: int, in_chans: int = 1, dropout: float | None = 0.0,
                survival_prob: float = 1.0, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None, resolution: int | None = None,
                classes: tuple[str, ...] | list[str] | None = None, image_size: int | None = None,
                train_resolution: int | None = None, crop_fraction: float | None = None) -> Classifier:
    """A Classifier by registry name. `dropout=None` takes the model's own default (B0 0.2 ...
    B7 0.5); `survival_prob` is stochastic depth's keep probability at the last block; `classes`,
    `image_size` and the resolutions travel with the exported weights (ModelSpec)."""
    if not is_known_model(name):
        raise UserError(f"unknown model {name!r}; {MODEL_NAMES_HELP}")
    drop_rate = default_dropout(name) if dropout is None else dropout
    noise = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=1.0 - survival_prob)
    entry = MODELS.get(name)
    timm_name, timm_kwargs = (entry.timm_name, entry.timm_kwargs) if entry is not None else (name, {})
    backbone = timm.create_model(timm_name, pretrained=False, **timm_kwargs, **noise)
    if survival_prob < 1.0:
        set_linear_stochastic_depth(backbone, 1.0 - survival_prob)
    # Fashion-MNIST statistics for 1 channel; ImageNet's for RGB photos.
    default_mean, default_std = ((0.286,), (0.353,)) if in_chans == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    spec = ModelSpec(name, num_classes, in_chans, tuple(mean or default_mean * (in_chans // len(default_mean))),
                     tuple(std or default_std * (in_chans // len(default_std))), resolution,
                     None if classes is None else tuple(classes), image_size, train_resolution, crop_fraction)
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
