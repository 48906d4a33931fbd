"""Test top-1 against reference-scaled minutes, supervised on all 60,000 true Fashion-MNIST labels.

    taskset -c 0 python benchmarks/speed_to_accuracy.py                 # every recipe, every point
    taskset -c 0 python benchmarks/speed_to_accuracy.py --recipes airnet_small_32   # resumable

How much a recipe (model and training settings) learns per CPU minute bounds everything the method
can do on a laptop: a student cannot beat what its model learns from true labels in the same
minutes (benchmarks/results/student_ceiling.json). Each point of a recipe's curve is its own run
with a schedule of that length (a cosine that ends there: cutting one long run short would
understate the short budgets), an ordinary resumable run (rounds=0: the teacher stage alone, on
all labels) of a sweep (noisystudent.sweep: <runs-dir>/sweeps/speed-to-accuracy/, a variant
`<recipe>-<epochs>ep` per point). The final point runs 3 seeds.

Minutes are the training stage's (timings.jsonl), scaled to the reference machine: minutes x
(this machine's reference images/s) / REFERENCE_SPEED, with the reference workload (common.
reference_speed, at the runs' thread count) timed before and after each run. Pin the process to
one core (taskset) and keep other work off it: the scaling corrects for a slower machine, not for
a neighbour that comes and goes. Writes benchmarks/results/speed_to_accuracy.json: per recipe its
overrides, `curve` (per schedule length: mean scaled minutes and top-1, each run), and
`minutes_to_93` (the shortest schedule whose mean top-1 reaches 93%, in scaled minutes; null if
none); runs already in the JSON with the same settings are kept, so a call can finish another's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import REFERENCE_WORKLOAD, RESULTS, environment, reference_speed, stage_seconds, write_result  # noqa: E402
from demo_seeds import REFERENCE_SPEED  # noqa: E402

from noisystudent.cli import resolve_config  # noqa: E402
from noisystudent.io import read_json  # noqa: E402
from noisystudent.models import set_threads  # noqa: E402
from noisystudent.runs import SUMMARY  # noqa: E402
from noisystudent.sweep import Sweep, make_sweep, mean_std, run_sweep  # noqa: E402

TARGET_TOP1, FINAL_SEEDS, THREADS = 0.93, (0, 1, 2), 1
# Every recipe trains on all 60,000 labels, un-noised (a supervised run), and is evaluated on the
# 10,000 test images; warm-up is half an epoch for both, since the demo teacher's 5 epochs are of
# its 1,000 labels (80 steps). The base is a fixed bundled config, not the demo, whose settings move.
BASE = "demo-resnet"
COMMON = ["rounds=0", "data.labels_per_class=6000", "evaluate.robustness=false", f"threads={THREADS}",
          "teacher.warmup_epochs=0.5", "noise.teacher=false"]
RECIPES: dict[str, dict] = {
    "airnet_small_32": {
        "about": "AirNet (models/airnet.py), batch 128, lr 0.1, label smoothing 0.1, no weight decay on norms",
        "overrides": ["models=airnet_small_32", "teacher.batch_size=128", "teacher.lr=0.1",
                      "teacher.label_smoothing=0.1", "teacher.weight_decay_norms=false"],
    },
    "resnet_small_32": {
        "about": "the demo's teacher before AirNet: resnet_small_32, batch 64, lr 0.05, no label smoothing",
        "overrides": ["models=resnet_small_32", "teacher.batch_size=64", "teacher.lr=0.05", "teacher.label_smoothing=0.0",
                      "teacher.weight_decay_norms=true"],
    },
}
EPOCHS = (2, 4, 8)  # schedule lengths, in passes over the 60,000 images; the last is the final point (3 seeds)


def variant(recipe: str, epochs: float) -> str:
    return f"{recipe}-{epochs:g}ep"


def points_sweep(recipes: list[str], runs_dir: Path) -> Sweep:
    """Every point of `recipes`' curves, each seed of FINAL_SEEDS (the runs made are those wanted)."""
    return make_sweep({"name": "speed-to-accuracy", "base": BASE, "overrides": COMMON, "seeds": list(FINAL_SEEDS),
                       "runs_dir": str(runs_dir),
                       "variants": {variant(recipe, epochs): [*RECIPES[recipe]["overrides"], f"teacher.epochs={epochs}"]
                                    for recipe in recipes for epochs in EPOCHS}}, "speed_to_accuracy.py", resolve_config)


def measure(sweep: Sweep, recipe: str, epochs: float, seed: int) -> dict:
    (run,) = [run for run in sweep.runs if run.variant == variant(recipe, epochs) and run.seed == seed]
    before = reference_speed(30.0)["images_per_second"]
    run_sweep(dataclasses.replace(sweep, runs=[run]))
    after = reference_speed(30.0)["images_per_second"]
    summary, minutes = read_json(run.folder / SUMMARY), stage_seconds(run.folder, "train") / 60
    speed = statistics.fmean([before, after])
    return {"epochs": epochs, "seed": seed, "top1": summary["teacher_top1"], "train_minutes": round(minutes, 2),
            "reference_images_per_second": {"before": before, "after": after},
            "scaled_minutes": round(minutes * speed / REFERENCE_SPEED, 2), "provenance": summary["provenance"]}


def curve(runs: list[dict]) -> list[dict]:
    points = []
    for epochs in sorted({entry["epochs"] for entry in runs}):
        these = [entry for entry in runs if entry["epochs"] == epochs]
        top1 = mean_std([entry["top1"] for entry in these])
        points.append({"epochs": epochs, "seeds": len(these),
                       "scaled_minutes": round(statistics.fmean(entry["scaled_minutes"] for entry in these), 2),
                       "top1": top1["mean"], "top1_std": top1["std"]})
    return points


def minutes_to(points: list[dict], target: float) -> float | None:
    reached = [point["scaled_minutes"] for point in points if point["top1"] >= target]
    return min(reached) if reached else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the sweep goes under its "
                        "sweeps/speed-to-accuracy/")
    args = parser.parse_args()
    set_threads(THREADS)  # the reference workload runs at the runs' thread count
    path = RESULTS / "speed_to_accuracy.json"
    earlier = json.loads(path.read_text())["recipes"] if path.is_file() else {}
    recipes = {name: {"about": spec["about"], "overrides": [*COMMON, *spec["overrides"]],
                      "runs": earlier[name]["runs"] if earlier.get(name, {}).get("overrides") == [*COMMON, *spec["overrides"]] else []}
               for name, spec in RECIPES.items() if name in args.recipes or name in earlier}
    wanted = [(epochs, 0) for epochs in EPOCHS] + [(EPOCHS[-1], seed) for seed in FINAL_SEEDS[1:]]
    sweep = points_sweep(args.recipes, args.runs_dir)
    for name in args.recipes:
        for epochs, seed in wanted:
            if any(entry["epochs"] == epochs and entry["seed"] == seed for entry in recipes[name]["runs"]):
                continue
            recipes[name]["runs"].append(measure(sweep, name, epochs, seed))
            for recipe in recipes.values():
                recipe["curve"] = curve(recipe["runs"])
                recipe["minutes_to_93"] = minutes_to(recipe["curve"], TARGET_TOP1)
            write_result("speed_to_accuracy", {
                "benchmark": "speed_to_accuracy", **environment(), "base": BASE, "target_top1": TARGET_TOP1,
                "reference_workload": REFERENCE_WORKLOAD, "reference_speed": REFERENCE_SPEED, "threads": THREADS,
                "schedule_epochs": list(EPOCHS), "final_seeds": list(FINAL_SEEDS),
                "partial": any(len(recipe["runs"]) < len(wanted) for recipe in recipes.values()),
                "recipes": recipes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
