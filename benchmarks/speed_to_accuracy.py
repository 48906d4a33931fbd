"""Test top-1 against reference-scaled minutes, supervised on all 60,000 true Fashion-MNIST labels.

    taskset -c 0 python benchmarks/speed_to_accuracy.py                 # every recipe, every point
    taskset -c 0 python benchmarks/speed_to_accuracy.py --recipes airnet_small_32   # resumable

How much a recipe (model and training settings) learns per CPU minute bounds everything the method
can do on a laptop: a student cannot beat what its model learns from true labels in the same
minutes (benchmarks/results/student_ceiling.json). Each point of a recipe's curve is its own run
with a schedule of that length (a cosine that ends there: cutting one long run short would
understate the short budgets), an ordinary resumable run under --runs-dir (rounds=0: the teacher
stage alone, on all labels). The final point runs 3 seeds.

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
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import REFERENCE_WORKLOAD, RESULTS, environment, reference_speed, write_result  # noqa: E402
from demo_seeds import REFERENCE_SPEED  # noqa: E402

from noisystudent.cli import bundled_config  # noqa: E402
from noisystudent.config import load_config  # noqa: E402
from noisystudent.models import set_threads  # noqa: E402
from noisystudent.pipeline import run  # noqa: E402

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


def run_name(recipe: str, epochs: float, seed: int) -> str:
    return f"{recipe}-{epochs:g}ep-seed{seed}"


def measure(recipe: str, epochs: float, seed: int, runs_dir: Path) -> dict:
    overrides = [*COMMON, *RECIPES[recipe]["overrides"], f"teacher.epochs={epochs}", f"seed={seed}",
                 f"runs_dir={runs_dir}", f"name={run_name(recipe, epochs, seed)}"]
    config = load_config(bundled_config(BASE), overrides)
    before = reference_speed(30.0)["images_per_second"]
    summary = run(config)
    after = reference_speed(30.0)["images_per_second"]
    timings = [json.loads(line) for line in (runs_dir / config.name / "timings.jsonl").read_text().splitlines()]
    minutes = sum(record["seconds"] for record in timings if record["kind"] == "train") / 60
    speed = statistics.fmean([before, after])
    return {"epochs": epochs, "seed": seed, "top1": summary["teacher_top1"], "train_minutes": round(minutes, 2),
            "reference_images_per_second": {"before": before, "after": after},
            "scaled_minutes": round(minutes * speed / REFERENCE_SPEED, 2), "provenance": summary["provenance"]}


def curve(runs: list[dict]) -> list[dict]:
    points = []
    for epochs in sorted({entry["epochs"] for entry in runs}):
        these = [entry for entry in runs if entry["epochs"] == epochs]
        top1 = [entry["top1"] for entry in these]
        points.append({"epochs": epochs, "seeds": len(these),
                       "scaled_minutes": round(statistics.fmean(entry["scaled_minutes"] for entry in these), 2),
                       "top1": statistics.fmean(top1), "top1_std": statistics.stdev(top1) if len(top1) > 1 else None})
    return points


def minutes_to(points: list[dict], target: float) -> float | None:
    reached = [point["scaled_minutes"] for point in points if point["top1"] >= target]
    return min(reached) if reached else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs") / "benchmarks" / "speed")
    args = parser.parse_args()
    set_threads(THREADS)  # the reference workload runs at the runs' thread count
    path = RESULTS / "speed_to_accuracy.json"
    earlier = json.loads(path.read_text())["recipes"] if path.is_file() else {}
    recipes = {name: {"about": spec["about"], "overrides": [*COMMON, *spec["overrides"]],
                      "runs": earlier[name]["runs"] if earlier.get(name, {}).get("overrides") == [*COMMON, *spec["overrides"]] else []}
               for name, spec in RECIPES.items() if name in args.recipes or name in earlier}
    wanted = [(epochs, 0) for epochs in EPOCHS] + [(EPOCHS[-1], seed) for seed in FINAL_SEEDS[1:]]
    for name in args.recipes:
        for epochs, seed in wanted:
            if any(entry["epochs"] == epochs and entry["seed"] == seed for entry in recipes[name]["runs"]):
                continue
            recipes[name]["runs"].append(measure(name, epochs, seed, args.runs_dir))
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
