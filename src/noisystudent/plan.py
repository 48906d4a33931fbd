"""`noisystudent plan CONFIG`: what a run will cost, stage by stage, before anything trains.

For each stage of each round: images it processes, optimizer steps, the model's parameters and
FLOPs per image (counted on the meta device), the disk it writes (label store, the selected
images in their `selection.storage`, checkpoints and exported weights) and the time it should take on this device.

Times come from a short probe of the real code paths on synthetic data of the run's shapes: a
few steps of `train_model` per (model, training setting) at its batch size, with its noise;
`predict_logits` at `labels.batch_size` for labeling; and `evaluate_model` on two small test
subsets with the run's evaluation settings (a fixed cost plus a cost per image, fitted), once
with an empty corruption cache and once with a warm one (a run generates corrupted test images
once and reuses them). A training stage is its steps x the measured step time, plus, for a
student reading `selection.storage=encoded` images, their decoding (timed on a sample of the
pool). The selection stage is its own code timed on label stores of two prefixes of the pool
(synthetic predictions, the pool's real images): a fixed cost plus a cost per pool image.
Unknowns are said, not guessed: a pool of tar shards has no size before it is read, and a
selection's size depends on the teacher, so it is taken as `selection.images_per_class` x
classes when set, else the whole pool (an upper bound).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import Config, TrainConfig
from .data import ImageSet
from .data.images import BadImage
from .labels import PseudoLabeledSet, energy, pseudo_label, select_and_gather
from .models import build_model, check_initial_sources, count_flops, count_parameters, model_resolutions, predict_logits
from .noise import student_noise
from .runs import plan_run
from .session import start_session
from .train import joint_batch_sizes, steps_for, train_model

STORE_BYTES_PER_CLASS, STORE_BYTES_FIXED = 6, 40  # int32 id + float16 probability per stored class; id, argmax, ...
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


def probe_training(model_name: str, train: TrainConfig, shapes: tuple[int, int, int], classes: int, noise,
                   with_pseudo: bool, device: torch.device, steps: int, folder: Path, resolutions: dict,
                   freeze_fraction: float = 0.0) -> float:
    """Seconds per optimizer step of `train_model` on synthetic data of the run's shapes (with the
    fine-tune's frozen layers, which need no gradients)."""
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
    model = build_model(model_name, classes, channels, **resolutions, **(noise.model_kwargs if noise else {}))
    stage = Path(tempfile.mkdtemp(dir=folder))
    train_model(model, labeled, probe, stage, 0, device, pseudo, noise.randaugment if noise else None,
                freeze_fraction=freeze_fraction, desc="probe")
    windows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    images_per_second = statistics.median(window["images_per_second"] for window in windows[2:] or windows)
    return (batch + (unlabeled if with_pseudo else 0)) / images_per_second


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


def probe_robustness(model_name: str, test: ImageSet, config: Config, device: torch.device, folder: Path,
                     resolutions: dict, sizes: tuple[int, int] = (10, 40)) -> dict[str, tuple[float, float]]:
    """`evaluate_model`'s seconds as (fixed, per robustness image), fitted on two subset sizes: with
    an empty corruption cache ("cold": the run's first evaluation makes the corrupted images)
    and with the cache it filled ("warm": every later one)."""
    from .evaluate import evaluate_model

    model = build_model(model_name, test.num_classes, test.channels, **resolutions)
    # a pass of its own first: what a process pays once (imports, kernels, the corruption code's
    # setup) would otherwise land on the smaller subset and flatten the fitted cost per image;
    # a run pays it once too, in its first evaluation, so it goes into the cold fit's fixed cost
    warm_up = test.subset(range(min(4, len(test))))
    started = time.perf_counter()
    evaluate_model(model, warm_up, device, dataclasses.replace(config.evaluate, images=len(warm_up)),
                   folder / "corruptions-warm-up", config.seed)
    warm_up_seconds = time.perf_counter() - started
    timings = {"cold": [], "warm": []}
    for size in sizes:
        subset = test.subset(range(min(size, len(test))))
        settings = dataclasses.replace(config.evaluate, images=len(subset))
        cache = folder / f"corruptions-{size}"
        for kind in ("cold", "warm"):
            started = time.perf_counter()
            evaluate_model(model, subset, device, settings, cache, config.seed)
            timings[kind].append((len(subset), time.perf_counter() - started))
    fits = {kind: fit_line(*points) for kind, points in timings.items()}
    fixed, per_image = fits["cold"]
    fits["cold"] = (fixed + max(0.0, warm_up_seconds - fixed - per_image * len(warm_up)), per_image)
    return fits


def fit_line(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
    """(fixed seconds, seconds per image) through two (images, seconds) timings, neither negative."""
    (n1, t1), (n2, t2) = small, large
    per_image = max(0.0, (t2 - t1) / (n2 - n1)) if n2 > n1 else 0.0
    return max(0.0, t1 - per_image * n1), per_image


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


def plan_costs(config: Config, probe: bool = True, probe_steps: int = PROBE_STEPS, log=print,
               probe_seconds: float = PROBE_SECONDS) -> list[StageCost]:
    """One StageCost per stage of the run `config` describes, in run order. The probes write into
    a temporary folder, removed at the end. Each probe takes at most `probe_steps` timed steps, and
    none starts once `probe_seconds` have gone to probing: a probe started before finishes (a few
    steps), and the stages whose probes did not run are priced "?" with a note, so a config too
    large for this device gives a partial plan in bounded time, not a plan that never ends."""
    with tempfile.TemporaryDirectory(prefix="noisystudent-plan-") as folder:
        return _plan_costs(config, probe, probe_steps, log, Path(folder), probe_seconds)


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


def _plan_costs(config: Config, probe: bool, probe_steps: int, log, folder: Path,
                probe_seconds: float = PROBE_SECONDS) -> list[StageCost]:
    check_initial_sources(config.init_sources())  # what the run would refuse, refused before the probes
    costs = _price_stages(config, probe, probe_steps, folder)  # first pass: which probes it needs
    if probe and costs.probes:
        ran = run_probes(costs.probes, costs.measurements, probe_seconds, log)
        if ran < len(costs.probes):
            log(f"  {len(costs.probes) - ran} of {len(costs.probes)} probes skipped: --probe-seconds "
                f"{probe_seconds:g} spent")
        costs = _price_stages(config, probe, probe_steps, folder, costs.measurements, costs.session)
    return costs.stages


@dataclass
class _Pricing:
    stages: list[StageCost]
    probes: dict  # probe key -> the function measuring it, for each probe the prices lack
    measurements: dict  # probe key -> its result (None: skipped for the time budget)
    session: object


def _price_stages(config: Config, probe: bool, probe_steps: int, folder: Path, measurements: dict | None = None,
                  session=None) -> _Pricing:
    """Every stage's cost from the probes' `measurements`; the probes still to run are listed."""
    session = session or start_session(config)
    # session.labeled is what models train on: the held-out out-of-domain reference costs no training
    device, labeled, pool, test = session.device, session.labeled, session.unlabeled, session.test
    referenced = 0 if session.reference is None else len(session.reference)
    classes, shapes = labeled.num_classes, (labeled.channels, config.data.image_size, config.data.image_size)
    pool_size = pool.size
    per_class = config.selection.images_per_class
    selected = per_class * classes if per_class else pool_size
    selection_note = "" if per_class else "selection size taken as the whole pool (an upper bound)"
    selected_image_bytes, selected_decode_seconds = selected_image_cost(pool, config.selection.storage)
    plan = plan_run(config)
    costs: list[StageCost] = []
    cache: dict = {}
    measurements = {} if measurements is None else measurements
    probes: dict = {}
    skipped: list = []  # keys of probes skipped for the time budget, since the last stage priced

    def resolutions(name: str) -> dict:
        return model_resolutions(name) if config.data.resolution == "model" else {}

    def fine_tune_resolutions(name: str) -> dict:
        """A fine-tune trains and is evaluated at the test resolution (`finetune.resolution`, else
        the model's own), as `load_exported(..., train_at_test_resolution=True)` rebuilds it."""
        own = resolutions(name)
        test = config.finetune.resolution or own.get("resolution")
        return {**own, "resolution": test, "train_resolution": test} if test else own

    def model_facts(name: str, at: dict) -> tuple[int, int]:
        size = at.get("train_resolution") or at.get("resolution") or shapes[1]
        if (name, size) not in cache:  # FLOPs at the resolution it trains at
            cache[name, size] = (count_parameters(name, classes, shapes[0]),
                                 count_flops(name, classes, shapes[0], size))
        return cache[name, size]

    def measured(key, function):
        """The probe's result; None without probes, and while the probe is still to run (listed)."""
        if not probe:
            return None
        if key not in measurements:
            probes.setdefault(key, function)
        elif measurements[key] is None:
            skipped.append(key)
        return measurements.get(key)

    def add(cost: StageCost) -> None:
        """Append `cost`; a time its skipped probes left unknown is said in its note."""
        if skipped:
            cost.note = "; ".join(note for note in (cost.note, SKIPPED_NOTE) if note)
            skipped.clear()
        costs.append(cost)

    def training(stage_name: str, model: str, train: TrainConfig, pseudo_size: int | None, noise,
                 at: dict, freeze_fraction: float = 0.0) -> StageCost:
        """A training stage of `model` at the resolutions `at` (build_model's keywords)."""
        parameters, flops = model_facts(model, at)
        steps, _ = steps_for(train, len(labeled), pseudo_size)
        batch, unlabeled = joint_batch_sizes(train.batch_size, train.unlabeled_ratio)
        per_step = batch + (unlabeled if pseudo_size is not None else 0)
        step_seconds = measured(("train", model, json.dumps(train.inputs(), sort_keys=True), pseudo_size is not None,
                                 noise is not None, json.dumps(at, sort_keys=True), freeze_fraction),
                                lambda: probe_training(model, train, shapes, classes, noise, pseudo_size is not None,
                                                       device, probe_steps, folder, at, freeze_fraction))
        if step_seconds is not None and pseudo_size is not None and selected_decode_seconds:
            # encoded selected images are decoded per step in data.decode_threads threads: after
            # the step's compute on CPU, beside it when batches are prefetched (train.prefetch)
            decoding = unlabeled * selected_decode_seconds / max(1, config.data.decode_threads)
            prefetch = train.prefetch if train.prefetch is not None else (2 if device.type == "cuda" else 0)
            step_seconds = step_seconds + decoding if prefetch == 0 else max(step_seconds, decoding)
        # checkpoint (model, optimizer state, EMA) and the exported weights
        disk = parameters * 4 * (2 + (train.ema_decay > 0) + (train.momentum > 0 or train.optimizer == "rmsprop")) + \
            parameters * 4
        return StageCost(stage_name, model, steps * per_step, steps, parameters, flops, disk,
                         None if step_seconds is None else steps * step_seconds)

    def evaluation(stage_name: str, model: str, first: bool, at: dict) -> StageCost:
        parameters, flops = model_facts(model, at)
        robust_images = min(config.evaluate.images, len(test)) if config.evaluate.robustness else 0
        forward = measured(("forward", model, 256, at.get("resolution")),
                           lambda: probe_forward(model, shapes, classes, 256, device, at, probe_steps))
        fits = measured(("robustness", model, at.get("resolution")),
                        lambda: probe_robustness(model, test, config, device, folder, at)) if robust_images else None
        seconds = None if forward is None or (robust_images and fits is None) else len(test) * forward
        if robust_images and seconds is not None:
            fixed, per_image = fits["cold" if first else "warm"]
            seconds += fixed + robust_images * per_image
        return StageCost(stage_name, model, len(test) + robust_images, None, parameters, flops, 0, seconds,
                         "evaluation images: the test set, then the robustness subset" if robust_images else "")

    def name(stage) -> str:
        return str(stage.path.relative_to(plan.teacher.path.parent.parent))

    noise = student_noise(config.noise)
    teacher_model = config.model_for_round(0)
    add(training(name(plan.teacher), teacher_model, config.teacher, None,
                          noise if config.noise.teacher else None, resolutions(teacher_model)))
    add(evaluation(name(plan.teacher) + " (eval)", teacher_model, True, resolutions(teacher_model)))
    for round_plan in plan.rounds:
        teacher = round_plan.teacher_model
        parameters, flops = model_facts(teacher, resolutions(teacher))
        forward = measured(("forward", teacher, config.labels.batch_size, resolutions(teacher).get("resolution")),
                           lambda: probe_forward(teacher, shapes, classes, config.labels.batch_size, device,
                                                 resolutions(teacher), probe_steps))
        stored = classes if classes <= 100 else min(config.labels.top_k, classes)
        store_bytes = None if pool_size is None else pool_size * (STORE_BYTES_FIXED + STORE_BYTES_PER_CLASS * stored)
        add(StageCost(name(round_plan.labels), teacher, pool_size, None, parameters, flops, store_bytes or 0,
                               # the teacher also reads the labeled images: the training ones to fit the
                               # out-of-domain score, the held-out ones to score the reference
                               None if forward is None or pool_size is None else (pool_size + len(labeled) + referenced) * forward,
                               "" if pool_size is not None else "pool size unknown until read (tar shards)"))
        selection_fit = None if pool_size is None else measured(
            ("selection", config.selection.storage), lambda: probe_selection(config, pool, classes, folder))
        add(StageCost(name(round_plan.selection), None, selected, None, None, None,
                               0 if selected is None else round(selected * selected_image_bytes),
                               None if selection_fit is None else selection_fit[0] + pool_size * selection_fit[1],
                               selection_note))
        student_train = config.student_for_round(round_plan.index)
        student = round_plan.student_model
        student_cost = training(name(round_plan.student), student, student_train,
                                selected if selected is not None else len(labeled), noise, resolutions(student))
        student_cost.note = selection_note
        add(student_cost)
        add(evaluation(name(round_plan.student) + " (eval)", student, False, resolutions(student)))
        if round_plan.finetune is not None:
            at = fine_tune_resolutions(student)
            add(training(name(round_plan.finetune), student, config.finetune_training(round_plan.index), None,
                                  None, at, config.finetune.freeze_fraction))
            add(evaluation(name(round_plan.finetune) + " (eval)", student, False, at))
    return _Pricing(costs, probes, measurements, session)


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
