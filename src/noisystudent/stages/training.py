"""What the three training stages (teacher, student, fine-tune) share: training a model and
marking the stage done, then its evaluation stage; building a round's model; and the cost model
of a training stage (what it pays once plus its steps times a step, both probed)."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import INIT_FROM_TEACHER, TrainConfig
from ..data import ImageSet
from ..labels import PseudoLabeledSet
from ..models import build_model, load_initial_weights, model_resolutions
from ..noise import RandAugment
from ..runs import Stage
from ..train import joint_batch_sizes, steps_for, train_model
from . import evaluation
from .context import RunContext
from .cost import CostContext, StageCost


def train_and_evaluate(context: RunContext, stages: tuple[Stage, Stage], desc: str, make_model: Callable[[], torch.nn.Module],
          train: TrainConfig, config_key: str, pseudo: PseudoLabeledSet | None = None,
          randaugment: RandAugment | None = None, freeze_fraction: float = 0.0,
          labeled: Callable[[], ImageSet] | None = None) -> dict:
    """Train (or resume) the model `make_model` builds and mark the stage done; then its
    evaluation stage. `stages` is (training, evaluation); `labeled` gives the labeled set
    when it is not the run's (a FixRes fine-tune's, at its resolution)."""
    stage, evaluated = stages
    if not stage.is_done():
        started = time.perf_counter()
        if context.distributed.is_main:
            stage.begin()
        torch.manual_seed(context.config.seed)  # the initial weights, too, are a function of the seed
        train_model(make_model(), labeled() if labeled else context.labeled, train, stage.path, context.config.seed,
                    context.device, pseudo=pseudo, randaugment=randaugment, freeze_fraction=freeze_fraction,
                    desc=desc, distributed=context.distributed, config_key=config_key)
        if context.distributed.is_main:
            stage.mark_done(train_seconds=round(time.perf_counter() - started, 1))
        context.record_time(stage, "train", started)
        context.distributed.barrier()
    return evaluation.run(context, evaluated, desc)


def build(context: RunContext, round_index: int, teacher: Path | None = None, **noise) -> torch.nn.Module:
    """Round `round_index`'s model for this run's data, from its `init` weights when given (the
    round's `teacher` folder for init `teacher`); its classes (by name) and image size travel
    with its weights."""
    config, labeled = context.config, context.labeled
    name = config.model_for_round(round_index)
    resolutions = model_resolutions(name) if config.data.resolution == "model" else {}
    model = build_model(name, labeled.num_classes, labeled.channels, classes=labeled.classes,
                        image_size=config.data.image_size, **resolutions, **noise)
    init = config.init_for_round(round_index)
    if init == INIT_FROM_TEACHER:
        init = str(teacher)
    if init is not None:
        load_initial_weights(model, init)
    return model


def cost(context: CostContext, stage: Stage, model: str, train: TrainConfig, pseudo_size: int | None, noise,
         at: dict, freeze_fraction: float = 0.0, note: str = "") -> StageCost:
    """A training stage of `model` at the resolutions `at` (build_model's keywords)."""
    config, device = context.config, context.device
    parameters, flops = context.model_facts(model, at)
    steps, _ = steps_for(train, len(context.labeled), pseudo_size)
    batch, unlabeled = joint_batch_sizes(train.batch_size, train.unlabeled_ratio)
    per_step = batch + (unlabeled if pseudo_size is not None else 0)
    probed = context.measured(
        ("train", model, json.dumps(train.inputs(), sort_keys=True), pseudo_size is not None, noise is not None,
         json.dumps(at, sort_keys=True), freeze_fraction),
        lambda: probe_training(model, train, context.shapes, context.classes, noise, pseudo_size is not None,
                               device, context.probe_steps, context.folder, at, freeze_fraction))
    once_seconds, step_seconds = probed if probed is not None else (None, None)
    if step_seconds is not None and pseudo_size is not None and context.selected_decode_seconds:
        # encoded selected images are decoded per step in data.decode_threads threads: after
        # the step's compute on CPU, beside it when batches are prefetched (train.prefetch)
        decoding = unlabeled * context.selected_decode_seconds / max(1, config.data.decode_threads)
        prefetch = train.prefetch if train.prefetch is not None else (2 if device.type == "cuda" else 0)
        step_seconds = step_seconds + decoding if prefetch == 0 else max(step_seconds, decoding)
    # checkpoint (model, optimizer state, EMA) and the exported weights
    disk = parameters * 4 * (2 + (train.ema_decay > 0) + (train.momentum > 0 or train.optimizer == "rmsprop")) + \
        parameters * 4
    return context.priced(StageCost(context.name(stage), model, steps * per_step, steps, parameters, flops, disk,
                                    None if step_seconds is None else once_seconds + steps * step_seconds, note))


def probe_training(model_name: str, train: TrainConfig, shapes: tuple[int, int, int], classes: int, noise,
                   with_pseudo: bool, device: torch.device, steps: int, folder: Path, resolutions: dict,
                   freeze_fraction: float = 0.0) -> tuple[float, float]:
    """(seconds once per stage, seconds per optimizer step) of building a model and training it with
    `train_model` on synthetic data of the run's shapes (with the fine-tune's frozen layers, which
    need no gradients). What a stage pays once (building the model, the first steps' set-up, the
    checkpoint and the exported weights) is most of a stage of a few steps, such as the quick
    demo's fine-tune of 12, which its steps alone priced well under its measured time."""
    channels, size, _ = shapes
    batch, unlabeled = joint_batch_sizes(train.batch_size, train.unlabeled_ratio)
    generator = torch.Generator().manual_seed(0)
    rows = max(batch, 64)
    labeled = ImageSet(torch.randint(0, 256, (rows, channels, size, size), dtype=torch.uint8, generator=generator),
                       torch.arange(rows) % classes, [str(i) for i in range(rows)], [str(c) for c in range(classes)])
    pseudo = None
    if with_pseudo:
        pool = max(unlabeled, 64)
        pseudo = PseudoLabeledSet(torch.randint(0, 256, (pool, channels, size, size), dtype=torch.uint8,
                                                generator=generator),
                                  torch.randint(0, classes, (pool, 1), generator=generator), torch.ones(pool, 1), classes)
    per_epoch = math.ceil(rows / batch) if pseudo is None or train.epoch_unit == "labeled" else math.ceil(
        len(pseudo) / unlabeled)
    probe = dataclasses.replace(train, epochs=(steps + 2) / per_epoch, checkpoint_every=10**9, warmup_epochs=0)
    stage = Path(tempfile.mkdtemp(dir=folder))
    started = time.perf_counter()
    model = build_model(model_name, classes, channels, **resolutions, **(noise.model_kwargs if noise else {}))
    train_model(model, labeled, probe, stage, 0, device, pseudo, noise.randaugment if noise else None,
                freeze_fraction=freeze_fraction, desc="probe")
    total = time.perf_counter() - started
    windows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    images_per_second = statistics.median(window["images_per_second"] for window in windows[2:] or windows)
    step_seconds = (batch + (unlabeled if with_pseudo else 0)) / images_per_second
    return max(0.0, total - windows[-1]["step"] * step_seconds), step_seconds
