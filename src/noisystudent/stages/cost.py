"""What a stage's cost model for `noisystudent plan` works with: the run's data (sizes and
shapes), the selection's size, a cache of model facts, the probes' timings (listed on a first
pass over the stages, run within a time budget by `run_probes`, read on a second), and the
probes that more than one stage uses."""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.images import BadImage
from ..models import build_model, count_flops, count_parameters, model_resolutions, predict_logits
from ..runs import Stage
from ..session import start_session

PROBE_STEPS = 6  # timed steps per probe: training steps (after 2 untimed), inference batches (after 1)
PROBE_SECONDS = 300.0  # no probe starts after this much probing; the stages left get no time ("?")
SKIPPED_NOTE = "time unknown: a probe it needs was skipped when --probe-seconds ran out"


@dataclass
class StageCost:
    stage: str  # the stage's folder under the run, e.g. round-1/student
    model: str | None
    images: int | None  # images the stage processes (training: steps x batch)
    steps: int | None
    parameters: int | None
    flops_per_image: int | None  # one forward pass at the model's resolution
    disk_bytes: int
    seconds: float | None
    note: str = ""


class CostContext:
    """The run's data and the probes' results, shared by every stage's cost. The probes write into
    `folder`. Pricing the stages lists the probes whose results it lacks (`probes`); once they
    ran into `measurements` (None: skipped for the time budget), pricing again uses them."""

    def __init__(self, config: Config, probe: bool, probe_steps: int, folder: Path):
        self.config, self.probe, self.probe_steps, self.folder = config, probe, probe_steps, folder
        session = start_session(config)
        # session.labeled is what models train on: the held-out out-of-domain reference costs no training
        self.device, self.labeled, self.pool, self.test = session.device, session.labeled, session.unlabeled, session.test
        self.referenced = 0 if session.reference is None else len(session.reference)
        self.classes = self.labeled.num_classes
        self.shapes = (self.labeled.channels, config.data.image_size, config.data.image_size)
        self.pool_size = self.pool.size
        per_class = config.selection.images_per_class
        self.selected = per_class * self.classes if per_class else self.pool_size
        self.selection_note = "" if per_class else "selection size taken as the whole pool (an upper bound)"
        self.selected_image_bytes, self.selected_decode_seconds = selected_image_cost(self.pool,
                                                                                      config.selection.storage)
        self.cache: dict = {}
        self.measurements: dict = {}  # probe key -> its result (None: skipped for the time budget)
        self.probes: dict = {}  # probe key -> the function measuring it, for each probe the prices lack
        self.skipped: list = []  # keys of probes skipped for the time budget, since the last stage priced

    def name(self, stage: Stage) -> str:
        """The stage's folder under the run, e.g. round-1/student."""
        return f"{stage.path.parent.name}/{stage.path.name}"

    def resolutions(self, name: str) -> dict:
        return model_resolutions(name) if self.config.data.resolution == "model" else {}

    def model_facts(self, name: str, at: dict) -> tuple[int, int]:
        """(parameters, FLOPs per image at the resolution it trains at)."""
        size = at.get("train_resolution") or at.get("resolution") or self.shapes[1]
        if (name, size) not in self.cache:
            self.cache[name, size] = (count_parameters(name, self.classes, self.shapes[0]),
                                      count_flops(name, self.classes, self.shapes[0], size))
        return self.cache[name, size]

    def measured(self, key, function):
        """The probe's result; None without probes, and while the probe is still to run (listed
        in `probes`)."""
        if not self.probe:
            return None
        if key not in self.measurements:
            self.probes.setdefault(key, function)
        elif self.measurements[key] is None:
            self.skipped.append(key)
        return self.measurements.get(key)

    def priced(self, cost: StageCost) -> StageCost:
        """`cost`, with a time its skipped probes left unknown said in its note."""
        if self.skipped:
            cost.note = "; ".join(note for note in (cost.note, SKIPPED_NOTE) if note)
            self.skipped.clear()
        return cost

    def forward_seconds(self, model_name: str, batch: int, at: dict) -> float | None:
        """Seconds per image of un-noised inference at `batch` (labeling, clean accuracy)."""
        return self.measured(("forward", model_name, batch, at.get("resolution")),
                             lambda: probe_forward(model_name, self.shapes, self.classes, batch, self.device, at,
                                                   self.probe_steps))


def probe_forward(model_name: str, shapes: tuple[int, int, int], classes: int, batch: int, device: torch.device,
                  resolutions: dict, batches: int = PROBE_STEPS) -> float:
    """Seconds per image of un-noised inference (labeling, clean accuracy) at `batch`: the median
    batch after a warm-up one (the first call at a shape sets up its kernels)."""
    channels, size, _ = shapes
    model = build_model(model_name, classes, channels, **resolutions)
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    predict_logits(model, images, batch, device, desc="probe")
    seconds = []
    for _ in range(batches):
        started = time.perf_counter()
        predict_logits(model, images, batch, device, desc="probe")
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) / batch


def run_probes(probes: dict, results: dict, budget: float, log) -> int:
    """Run the (key -> function) `probes` in order into `results`, with a progress bar on stderr
    (on a terminal; else a line per probe through `log`), until `budget` seconds have been spent;
    the probes skipped for the budget get None. Returns how many ran."""
    done = 0
    started = time.perf_counter()
    with tqdm(total=len(probes), desc="plan: probing", unit="probe", disable=None, file=sys.stderr) as bar:
        say = log if bar.disable else (lambda line: bar.write(line, file=sys.stderr))
        for key, function in probes.items():
            if time.perf_counter() - started >= budget:
                results[key] = None
                continue
            bar.set_postfix_str(f"{key[0]} {key[1]}")
            say(f"  probing {key[0]} {key[1]} ...")
            results[key] = function()
            done += 1
            bar.update()
    return done


def fit_line(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
    """(fixed seconds, seconds per image) through two (images, seconds) timings, neither negative."""
    (n1, t1), (n2, t2) = small, large
    per_image = max(0.0, (t2 - t1) / (n2 - n1)) if n2 > n1 else 0.0
    return max(0.0, t1 - per_image * n1), per_image


def selected_image_cost(pool, storage: str, sample: int = 64) -> tuple[float, float]:
    """(disk bytes, decode seconds) of a selected image in `storage`: pixels are read as they
    are (no decoding); encoded images are decoded again whenever a batch needs them, so both
    are measured on the first `sample` items' bytes as the pool stores them."""
    if storage == "pixels":
        return pool.channels * pool.image_size ** 2, 0.0
    sizes, seconds = [], []
    for _, source in itertools.islice(pool.items(), sample):
        try:
            data = pool.encode(source)
            started = time.perf_counter()
            pool.decode_encoded(data)
            seconds.append(time.perf_counter() - started)
        except BadImage:  # skipped at labeling, never selected
            continue
        sizes.append(len(data))
    return (statistics.fmean(sizes), statistics.fmean(seconds)) if sizes else (0.0, 0.0)
