"""Round k's optional fine-tune, `round-k/finetune` (finetune.epochs > 0), FixRes-style: the
round's student on un-augmented labeled images at the test resolution (`finetune.resolution`,
else the model's own), shallow layers frozen; it becomes the round's model. Its training setting
is `Config.finetune_training`, the one function the run and the plan share."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

from ..config import Config
from ..data import ImageSet, hold_out_reference, load_splits
from ..models import load_exported
from ..runs import Stage, stage_dir
from . import evaluation, training
from .context import RunContext
from .cost import CostContext, StageCost
from .inputs import common_inputs


def stage(config: Config, run: Path, round_index: int, student: Stage) -> Stage | None:
    """Inputs: the student's hash, the training data, seed, `finetune`, and the round's student
    weight decay (which the fine-tune trains with). None when there is no fine-tune."""
    if config.finetune.epochs <= 0:
        return None
    return Stage(stage_dir(run, round_index, "finetune"), {
        "upstream": student.inputs_hash, **common_inputs(config), "finetune": asdict(config.finetune),
        "student": {"weight_decay": config.student_for_round(round_index).weight_decay}})


def run(context: RunContext, stages: tuple[Stage, Stage], student_dir: Path) -> dict:
    """Fine-tune the student exported in `student_dir`, then its evaluation. With
    data.resolution=model the inputs are the evaluation's center crop of the labeled images
    decoded at the size that crop needs, so they are real pixels at that resolution, not
    upsampled training images."""
    config, round_index = context.config, stages[0].round_index
    make = lambda: load_exported(student_dir, resolution=config.finetune.resolution,  # noqa: E731
                                 train_at_test_resolution=True)
    per_model = config.data.resolution == "model"
    return training.train_and_evaluate(context, stages, f"fine-tune round {round_index}", make,
                                       config.finetune_training(round_index), "finetune",
                                       freeze_fraction=config.finetune.freeze_fraction,
                                       labeled=(lambda: labeled_for(context, make().spec)) if per_model else None)


def labeled_for(context: RunContext, spec) -> ImageSet:
    """The labeled set stored at the size whose center crop is `spec`'s test resolution, so a
    FixRes fine-tune sees real pixels at that resolution rather than upsampled ones."""
    size = round(spec.resolution / (spec.crop_fraction or 1.0))
    if size == context.labeled.images.shape[-1]:
        return context.labeled
    config = context.config
    data = dataclasses.replace(config.data, image_size=size)
    labeled = load_splits(data, config.seed, cache_dir=config.image_cache())[0]
    return hold_out_reference(labeled, data.reference_fraction, config.seed)[0]


def resolutions(context: CostContext, model: str) -> dict:
    """A fine-tune trains and is evaluated at the test resolution (`finetune.resolution`, else
    the model's own), as `load_exported(..., train_at_test_resolution=True)` rebuilds it."""
    own = context.resolutions(model)
    test = context.config.finetune.resolution or own.get("resolution")
    return {**own, "resolution": test, "train_resolution": test} if test else own


def cost(context: CostContext, finetune: Stage) -> list[StageCost]:
    """The fine-tune's training (no pseudo labels, no noise) and its evaluation, at the test resolution."""
    config, round_index = context.config, finetune.round_index
    model = config.model_for_round(round_index)
    at = resolutions(context, model)
    return [training.cost(context, finetune, model, config.finetune_training(round_index), None, None, at,
                          config.finetune.freeze_fraction),
            evaluation.cost(context, finetune, model, at)]
