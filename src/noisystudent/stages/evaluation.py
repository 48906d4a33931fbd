"""Every trained model's evaluation, a stage of its own whose record is its folder's eval.json:
accuracy, calibration, and the robustness suites, with mCE and mFR against the round-0 teacher.
When only evaluation settings change, it is redone, never refused, and nothing is retrained."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

from ..config import Config
from ..data import ImageSet
from ..evaluate import compare_to_baseline, evaluate_model, evaluate_weights
from ..io import read_json
from ..models import build_model
from ..runs import EVAL, Stage, teacher_dir
from .context import RunContext
from .cost import CostContext, StageCost, fit_line
from .inputs import data_inputs


def stage(config: Config, trained: Stage, baseline: Stage | None) -> Stage:
    """The evaluation of `trained`: a student's mCE and mFR are relative to the round-0 teacher's
    evaluation, `baseline` (None for the teacher's own)."""
    return Stage(trained.path, {"upstream": trained.inputs_hash, "data": data_inputs(config), "seed": config.seed,
                                "evaluate": {key: value for key, value in asdict(config.evaluate).items()
                                             if key != "cache_dir"},
                                "baseline": None if baseline is None else baseline.inputs_hash},
                 redo_when_changed=True)


def run(context: RunContext, evaluation: Stage, desc: str) -> dict:
    """The full evaluation of a stage's exported weights (redone when only evaluation settings
    changed); ratios (mCE, mFR) against the round-0 teacher, which is the baseline, so its own
    mCE and mFR are 100 by definition."""
    if not evaluation.is_done() and context.distributed.is_main:
        started = time.perf_counter()
        baseline_path = teacher_dir(context.run_dir) / EVAL
        is_baseline = evaluation.path == teacher_dir(context.run_dir)
        baseline = None if is_baseline else read_json(baseline_path)
        result = evaluate_weights(evaluation.path, context.test, context.device, context.config.evaluate,
                                  context.config.corruption_cache(), context.config.seed, baseline)
        evaluation.mark_done(**(compare_to_baseline(result, result) if is_baseline else result))
        context.record_time(evaluation, "eval", started)
    context.distributed.barrier()
    metrics = read_json(evaluation.marker)
    context.log(f"  {desc}: {metrics['model']} test top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}")
    return metrics


def cost(context: CostContext, trained: Stage, model: str, at: dict) -> StageCost:
    """The evaluation of `trained` (of `model`, at the resolutions `at`): the test set's inference,
    then the robustness subset's (the first evaluation of a run, the teacher's, also makes the
    corrupted images every later one reuses)."""
    config, test = context.config, context.test
    parameters, flops = context.model_facts(model, at)
    robust_images = min(config.evaluate.images, len(test)) if config.evaluate.robustness else 0
    forward = context.forward_seconds(model, 256, at)
    # both probes asked for before either decides the time, so the first pricing lists both
    fits = context.measured(("robustness", model, at.get("resolution")),
                            lambda: probe_robustness(model, test, config, context.device, context.folder,
                                                     at)) if robust_images else None
    seconds = None if forward is None or (robust_images and fits is None) else len(test) * forward
    if robust_images and seconds is not None:
        fixed, per_image = fits["cold" if trained.round_index == 0 else "warm"]
        seconds += fixed + robust_images * per_image
    return context.priced(StageCost(
        context.name(trained) + " (eval)", model, len(test) + robust_images, None, parameters, flops, 0, seconds,
        "evaluation images: the test set, then the robustness subset" if robust_images else ""))


def probe_robustness(model_name: str, test: ImageSet, config: Config, device, folder: Path,
                     resolutions: dict, sizes: tuple[int, int] = (10, 40)) -> dict[str, tuple[float, float]]:
    """`evaluate_model`'s seconds as (fixed, per robustness image), fitted on two subset sizes: with
    an empty corruption cache ("cold": the run's first evaluation makes the corrupted images)
    and with the cache it filled ("warm": every later one)."""
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
