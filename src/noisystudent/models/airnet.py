"""AirNet: a small convnet that learns fast per CPU minute on 28-32 px images, after airbench.

airbench (Keller Jordan, arXiv 2404.00498, `KellerJordan/cifar10-airbench`) reaches 94% on
CIFAR-10 in seconds on a GPU with a VGG-like net of three conv groups, each a convolution at the
group's input resolution, a 2x2 max-pool, BatchNorm and GELU, then another convolution; a global
max-pool; and logits scaled down before the softmax. We keep that shape and make each group's
second convolution a residual branch, so that stochastic depth (the paper's model noise, set by
noise/stochastic_depth.py on every `drop_path` slot) has a block to skip; without it a plain
stack could only take dropout.

Why it is fast here: the convolution before each pool sees 32, 16 and 8 px with few channels,
so most FLOPs go to wide convolutions on small maps, which oneDNN runs near peak on one core;
timm's ResNets (resnet_small_32) spend theirs in a 64-wide stem and thin stages. On Fashion-MNIST
with true labels, airnet_small_32 reaches 93% test top-1 in a few CPU minutes
(benchmarks/results/speed_to_accuracy.json).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

# airbench multiplies its logits by 1/9: with its BatchNorm'd, max-pooled features the raw logits
# start large, and a cooler softmax early on trains faster (its ablation: ~0.5 point at equal time).
LOGIT_SCALE = 1 / 9


def _conv(in_chs: int, out_chs: int) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)


class ConvGroup(nn.Module):
    """conv -> max-pool /2 -> BN -> GELU, then x + drop_path(GELU(BN(conv(x))))."""

    def __init__(self, in_chs: int, out_chs: int, drop_path_rate: float = 0.0):
        super().__init__()
        self.conv1, self.bn1 = _conv(in_chs, out_chs), nn.BatchNorm2d(out_chs)
        self.conv2, self.bn2 = _conv(out_chs, out_chs), nn.BatchNorm2d(out_chs)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        return x + self.drop_path(F.gelu(self.bn2(self.conv2(x))))


class AirNet(nn.Module):
    """A timm-style classifier (forward_features / forward_head / reset_classifier), so that timm's
    create_model, our noise and our weight loading treat it as any timm model. The first
    convolution and the classifier are `conv1` and `fc`, as in timm's ResNets."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), stem_width: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0, **_):
        super().__init__()
        self.num_classes, self.drop_rate, self.num_features = num_classes, drop_rate, widths[-1]
        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, padding=1, bias=True)
        self.act1 = nn.GELU()  # a module (no weights), so that a hook sees the stem's output (feature_info)
        # timm's convention: linear in depth up to drop_path_rate (build_model resets it to ours)
        rates = [drop_path_rate * i / max(1, len(widths) - 1) for i in range(len(widths))]
        chans = (stem_width, *widths)
        self.groups = nn.Sequential(*(ConvGroup(chans[i], chans[i + 1], rates[i]) for i in range(len(widths))))
        self.fc = nn.Linear(self.num_features, num_classes, bias=False) if num_classes else nn.Identity()
        # timm's description of the feature maps by depth (as its ResNets have): the stem's output,
        # then each group's; the feature_ensemble out-of-domain score reads the first (labels/ood.py)
        self.feature_info = [dict(num_chs=stem_width, reduction=1, module="act1"),
                             *(dict(num_chs=width, reduction=2 ** (i + 1), module=f"groups.{i}")
                               for i, width in enumerate(widths))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.groups(self.act1(self.conv1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        if pre_logits:
            return x
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.fc(x) * LOGIT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, bias=False) if num_classes else nn.Identity()
