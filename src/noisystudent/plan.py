"""`noisystudent plan CONFIG`: what a run will cost, stage by stage, before anything trains.

For each stage of each round: images it processes, optimizer steps, the model's parameters and
FLOPs per image (counted on the meta device), the disk it writes (label store, the selected
images in their `selection.storage`, checkpoints and exported weights) and the time it should take on this device.

Times come from a short probe of the real code paths on synthetic data of the run's shapes: a
few steps of `train_model` per (model, training setting) at its batch size, with its noise;
`predict_logits` at `labels.batch_size` for labeling; and `evaluate_model` on two small test
subsets with the run's evaluation settings (a fixed cost plus a cost per image, fitted), once
with an empty corruption cache and once with a warm one (a run generates corrupted test images
once and reuses them). A training stage is what its probe paid once (building the model, the
first steps' set-up, the checkpoint and exported weights) plus its steps x the measured step
time, plus, for a student reading `selection.storage=encoded` images, their decoding (timed on a sample of the
pool). The selection stage is its own code timed on label stores of two prefixes of the pool
(synthetic predictions, the pool's real images): a fixed cost plus a cost per pool image.
Unknowns are said, not guessed: a pool of tar shards has no size before it is read, and a
selection's size depends on the teacher, so it is taken as `selection.images_per_class` x
classes when set, else the whole pool (an upper bound).

Each stage's cost model, its probe included, is its module's `cost` in stages/; this module
walks the run's stages (`stages.plan_run`) twice, first to list the probes the prices need, which
then run within `--probe-seconds` (stages/cost.py's `run_probes`), then to price them with the
timings, and formats the table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .config import Config
from .models import check_initial_sources
from .stages import STAGES, plan_run
from .stages.cost import PROBE_SECONDS, PROBE_STEPS, CostContext, StageCost, run_probes


def plan_costs(config: Config, probe: bool = True, probe_steps: int = PROBE_STEPS, log=print,
               probe_seconds: float = PROBE_SECONDS) -> list[StageCost]:
    """One StageCost per stage of the run `config` describes, in run order: each stage's own cost
    model (stages/), a trained stage's with its evaluation's. The probes write into a temporary
    folder, removed at the end. Each probe takes at most `probe_steps` timed steps, and none
    starts once `probe_seconds` have gone to probing: a probe started before finishes (a few
    steps), and the stages whose probes did not run are priced "?" with a note, so a config too
    large for this device gives a partial plan in bounded time, not a plan that never ends."""
    check_initial_sources(config.init_sources())  # what the run would refuse, refused before the probes
    with tempfile.TemporaryDirectory(prefix="noisystudent-plan-") as folder:
        context = CostContext(config, probe, probe_steps, Path(folder))
        costs = price_stages(context)  # first pass: which probes it needs
        if probe and context.probes:
            ran = run_probes(context.probes, context.measurements, probe_seconds, log)
            if ran < len(context.probes):
                log(f"  {len(context.probes) - ran} of {len(context.probes)} probes skipped: --probe-seconds "
                    f"{probe_seconds:g} spent")
            costs = price_stages(context)  # again, with the measurements
        return costs


def price_stages(context: CostContext) -> list[StageCost]:
    """Every stage's cost from the probes measured so far; the probes still to run are listed in
    `context.probes`."""
    context.skipped.clear()
    return [cost for stage in plan_run(context.config).stages() if stage.kind != "evaluation"
            for cost in STAGES[stage.kind].cost(context, stage)]


def _size(count: float | None, unit: str = "") -> str:
    if count is None:
        return "?"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}{unit}"
    return f"{count:.0f}{unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_table(costs: list[StageCost]) -> str:
    header = ("stage", "model", "images", "steps", "params", "FLOPs/img", "disk", "time")
    rows = [(c.stage, c.model or "-", _size(c.images), _size(c.steps) if c.steps else "-",
             _size(c.parameters) if c.parameters else "-", _size(c.flops_per_image) if c.flops_per_image else "-",
             _size(c.disk_bytes, "B") if c.disk_bytes else "-", _duration(c.seconds)) for c in costs]
    total = sum(c.seconds for c in costs if c.seconds is not None)
    unknown = any(c.seconds is None for c in costs)
    rows.append(("total", "", "", "", "", "", _size(sum(c.disk_bytes for c in costs), "B"),
                 _duration(total) + (" + ?" if unknown else "")))
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in (header, *rows)]
    notes = sorted({c.note for c in costs if c.note})
    return "\n".join(lines + [f"note: {note}" for note in notes])
