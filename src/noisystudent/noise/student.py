"""The config's noise section as what the student is built and trained with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .randaugment import RandAugment

if TYPE_CHECKING:  # the config reads this package's registries: a runtime import would be a cycle
    from ..config import NoiseConfig


@dataclass(frozen=True)
class StudentNoise:
    dropout: float | None  # before the classifier; None = the model's own default
    survival_prob: float  # stochastic depth's keep probability at the last block
    randaugment: RandAugment | None  # input noise on every student image; None = off

    @property
    def model_kwargs(self) -> dict:
        """The model noise, as build_model takes it."""
        return {"dropout": self.dropout, "survival_prob": self.survival_prob}


def student_noise(config: NoiseConfig) -> StudentNoise:
    randaugment = None
    if config.randaugment and config.randaugment_layers > 0:
        randaugment = RandAugment(config.randaugment_layers, config.randaugment_magnitude,
                                  pixels=config.randaugment_pixels)
    return StudentNoise(config.dropout, config.survival_prob, randaugment)
