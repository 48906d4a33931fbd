"""Student noise: RandAugment on inputs (here); dropout and stochastic depth live in the models."""

from .randaugment import OPS, RandAugment, op_parameters

__all__ = ["OPS", "RandAugment", "op_parameters"]
