"""Round k's student, `round-k/student`: a noised, equal-or-larger model on joint batches of the
labeled images and the selected pseudo-labeled ones (its targets written into its folder)."""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import Config
from ..labels import LabelStore, load_pseudo_labeled
from ..noise import student_noise
from ..runs import Stage, stage_dir
from . import evaluation, training
from .context import RunContext
from .cost import CostContext, StageCost
from .inputs import common_inputs


def stage(config: Config, run: Path, round_index: int, selection: Stage) -> Stage:
    """Inputs: the selection's hash, the training data, seed, the student's model and init, the
    round's `student` training, `noise`, and `labels.kind` (the targets it trains on)."""
    return Stage(stage_dir(run, round_index, "student"), {
        "upstream": selection.inputs_hash, **common_inputs(config),
        "models": {"student": config.model_for_round(round_index), "init": config.init_for_round(round_index)},
        "student": config.student_for_round(round_index).inputs(), "noise": asdict(config.noise),
        "labels": {"kind": config.labels.kind}})


def run(context: RunContext, stages: tuple[Stage, Stage], store: LabelStore, selection_dir: Path,
        teacher: Path) -> dict:
    """Train (or resume) the round's student on the selection in `selection_dir` of `store`
    (`teacher`: the folder of the model that labeled it, for init `teacher`), then its evaluation."""
    config, round_index = context.config, stages[0].round_index
    noise = student_noise(config.noise)
    make = lambda: training.build(context, round_index, teacher, **noise.model_kwargs)  # noqa: E731
    train = config.student_for_round(round_index)
    pseudo = None
    if not stages[0].is_done():
        # built before anything is recorded, so weights refused (a bad init) leave the stage
        # unstarted and open to the fix; from the seed, as train_and_evaluate would build it
        torch.manual_seed(config.seed)
        model = make()
        make = lambda: model  # noqa: E731
        load = functools.partial(load_pseudo_labeled, store, selection_dir, config.labels.kind,
                                 context.labeled.num_classes, train.label_smoothing,
                                 max(1, config.data.decode_threads), stages[0].path)
        if context.distributed.is_main:
            stages[0].begin()  # its inputs are on record before its targets are written into its folder
            pseudo = load()
        context.distributed.barrier()
        if pseudo is None:  # the other ranks map the targets rank 0 wrote
            pseudo = load()
    return training.train_and_evaluate(context, stages, f"student round {round_index}", make, train, "student",
                                       pseudo, noise.randaugment)


def cost(context: CostContext, student: Stage) -> list[StageCost]:
    """The student's training (on the selection's expected size) and its evaluation."""
    config, round_index = context.config, student.round_index
    model = config.model_for_round(round_index)
    at = context.resolutions(model)
    selected = context.selected if context.selected is not None else len(context.labeled)
    return [training.cost(context, student, model, config.student_for_round(round_index), selected,
                          student_noise(config.noise), at, note=context.selection_note),
            evaluation.cost(context, student, model, at)]
