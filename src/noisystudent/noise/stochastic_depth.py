"""Stochastic depth (the paper's model noise, with dropout): residual blocks skipped at random
in training, with a drop probability linear in block index, from 0 at the first block to exactly
`1 - survival_prob` at the last (paper: survival 0.8 "for the final layer"). Official code and
timm's EfficientNet stop one step short, at rate * (n-1)/n, so we set each block's rate
ourselves, in any timm family.
"""

from __future__ import annotations

import re

from timm.layers import DropPath
from torch import nn

# Stochastic-depth slots by attribute name: timm leaves a slot None (ResNet) or Identity (most
# families) where its rate is 0, e.g. at the first block under linear decay, so looking for DropPath
# alone would skip that block and shift the decay; ViT-like blocks have two, drop_path1 and drop_path2.
_SLOT_NAME = re.compile(r"drop_path\d*")


def _stochastic_depth_slots(module: nn.Module) -> list[str]:
    """Names of `module`'s own stochastic-depth slots: any DropPath, or an empty `drop_path*`."""
    attributes = {**vars(module), **module._modules}  # a None slot is a plain attribute, not a child
    return [name for name, value in attributes.items() if isinstance(value, DropPath)
            or (_SLOT_NAME.fullmatch(name) and (value is None or isinstance(value, nn.Identity)))]


def stochastic_depth_blocks(backbone: nn.Module) -> list[nn.Module]:
    """Residual blocks with a stochastic-depth slot, in forward order (timm registers a model's
    blocks in the order it runs them)."""
    return [module for module in backbone.modules() if _stochastic_depth_slots(module)]


def stochastic_depth_rates(backbone: nn.Module) -> list[float]:
    """Each block's drop probability, in forward order (0 where its slots are empty); a block's
    slots share its rate."""
    return [max(slot.drop_prob if isinstance(slot, DropPath) else 0.0
                for slot in (getattr(block, name) for name in _stochastic_depth_slots(block)))
            for block in stochastic_depth_blocks(backbone)]


def set_linear_stochastic_depth(backbone: nn.Module, last_block_drop: float) -> None:
    """Drop probability i / (n-1) * last_block_drop for block i of n: 0 first, exact at the last.
    Every slot gets its block's DropPath, the first block's too (one of rate 0 is a no-op), so
    that no rate timm chose survives."""
    blocks = stochastic_depth_blocks(backbone)
    for index, block in enumerate(blocks):
        rate = last_block_drop * index / max(1, len(blocks) - 1)
        for name in _stochastic_depth_slots(block):
            setattr(block, name, DropPath(rate))
