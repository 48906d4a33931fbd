"""Round 0's teacher, `round-0/teacher`: cross-entropy on the labeled images with weak
augmentation; noised only with noise.teacher (as every official run trains it). It labels
un-noised either way."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..config import Config
from ..noise import student_noise
from ..runs import Stage, teacher_dir
from . import evaluation, training
from .context import RunContext
from .cost import CostContext, StageCost
from .inputs import common_inputs


def stage(config: Config, run: Path) -> Stage:
    """Inputs: the training data, seed, the teacher's model and init, `teacher`, and `noise` when
    `noise.teacher` is on."""
    return Stage(teacher_dir(run), {**common_inputs(config), "models": {"teacher": config.model_for_round(0),
                                                                        "init": config.init_for_round(0)},
                                    "teacher": config.teacher.inputs(),
                                    "noise": asdict(config.noise) if config.noise.teacher else {"teacher": False}})


def run(context: RunContext, stages: tuple[Stage, Stage]) -> dict:
    """Train (or resume) the teacher, then its evaluation: the baseline of every robustness ratio."""
    config = context.config
    noise = student_noise(config.noise) if config.noise.teacher else None
    make = lambda: training.build(context, 0, **(noise.model_kwargs if noise else {}))  # noqa: E731
    return training.train_and_evaluate(context, stages, "teacher round 0", make, config.teacher, "teacher",
                                       randaugment=noise.randaugment if noise else None)


def cost(context: CostContext, teacher: Stage) -> list[StageCost]:
    """The teacher's training and its evaluation."""
    config = context.config
    model = config.model_for_round(0)
    at = context.resolutions(model)
    noise = student_noise(config.noise) if config.noise.teacher else None
    return [training.cost(context, teacher, model, config.teacher, None, noise, at),
            evaluation.cost(context, teacher, model, at)]
