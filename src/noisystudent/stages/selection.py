"""Round k's selection, `round-k/selection`: filter by confidence and balance the classes
(streamed over the label store), then gather the selected images into a file the student reads
by row (labels/gather.py). An unfinished selection is redone whole."""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import Config
from ..io import remove_stale_temps
from ..labels import LabelStore, energy, pseudo_label, select_and_gather
from ..runs import Stage, stage_dir
from .context import RunContext
from .cost import CostContext, StageCost, fit_line


def stage(config: Config, run: Path, round_index: int, labels: Stage) -> Stage:
    """Inputs: the labels stage's hash and `selection`, less how the selected images are stored,
    which changes no pixel (labels/gather.py)."""
    selection = {key: value for key, value in asdict(config.selection).items() if key != "storage"}
    return Stage(stage_dir(run, round_index, "selection"), {"upstream": labels.inputs_hash, "selection": selection},
                 resumes=False)


def run(context: RunContext, stage: Stage, store: LabelStore) -> dict:
    """Filter and balance (streamed over the store), then gather the selected images into a
    memory-mapped file the student reads by row (labels/gather.py); rank 0 alone. Its stats."""
    if not stage.is_done() and context.distributed.is_main:
        started = time.perf_counter()
        stage.begin()
        remove_stale_temps(stage.path)  # a SIGKILL mid-write leaves its temp file (images.npy can be GBs)
        config = context.config
        stats = select_and_gather(store, stage.path, context.unlabeled, store.reference_scores, config.selection,
                                  context.labeled.num_classes, config.labels.batch_size, config.seed)
        context.finish(stage, "selection", started, stats)
    return context.stats_of(stage)


def cost(context: CostContext, stage: Stage) -> list[StageCost]:
    """A fixed cost plus a cost per pool image (probed), and the selected images' disk."""
    pool_size, selected = context.pool_size, context.selected
    fit = None if pool_size is None else context.measured(
        ("selection", context.config.selection.storage),
        lambda: probe_selection(context.config, context.pool, context.classes, context.folder))
    return [context.priced(StageCost(context.name(stage), None, selected, None, None, None,
                                     0 if selected is None else round(selected * context.selected_image_bytes),
                                     None if fit is None else fit[0] + pool_size * fit[1], context.selection_note))]


class ConfidentGuesser(torch.nn.Module):
    """A stand-in teacher for the selection probe: confident logits on a random class, whatever
    the image (most images above the paper's threshold, as a trained teacher's are)."""

    def __init__(self, num_classes: int, generator: torch.Generator):
        super().__init__()
        self.num_classes, self.generator = num_classes, generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return confident_logits(len(images), self.num_classes, self.generator)


def confident_logits(count: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Logits whose softmax puts most of the probability on a random class (about 0.8 of it with 10 classes)."""
    logits = torch.randn(count, num_classes, generator=generator)
    logits[torch.arange(count), torch.randint(0, num_classes, (count,), generator=generator)] += 4.0
    return logits


def probe_selection(config: Config, pool, num_classes: int, folder: Path,
                    sizes: tuple[int, int] = (1024, 8192)) -> tuple[float, float]:
    """The selection stage's (fixed seconds, seconds per pool image): `select_and_gather`, the
    stage's own code, timed on label stores of two prefixes of the pool made by a stand-in
    teacher (ConfidentGuesser), so the gathering reads the pool's own images in
    `selection.storage`. Best of 3 where quick."""
    generator = torch.Generator().manual_seed(config.seed)
    timings = []
    for size in sorted({min(pool.size, size) for size in sizes}):
        prefix = dataclasses.replace(pool, limit=size, size=size)
        # the label stage's own code: undecodable images are left out of the store, as in a run
        store = pseudo_label(ConfidentGuesser(num_classes, generator), prefix, config.labels, folder / f"store-{size}",
                             torch.device("cpu"))
        reference = energy(confident_logits(1000, num_classes, generator)).numpy()  # the stand-in store's score
        best = math.inf
        for attempt in range(3):
            selection = folder / f"selection-{size}-{attempt}"
            selection.mkdir(parents=True)
            started = time.perf_counter()
            select_and_gather(store, selection, prefix, reference, config.selection, num_classes,
                              config.labels.batch_size, config.seed)
            best = min(best, time.perf_counter() - started)
            shutil.rmtree(selection)  # pixels at a large resolution are GBs
            if best > 1.0:
                break
        timings.append((size, best))
    return fit_line(timings[0], timings[-1])
