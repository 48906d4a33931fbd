"""The demo with several seeds, against a budget scaled to this machine's speed.

    python benchmarks/demo_seeds.py                  # 3 seeds of configs/demo.yaml: ~1.5-3 h on 2 cores
    python benchmarks/demo_seeds.py --seeds 0 1      # resumable: finished seeds are kept

First times the fixed reference workload (common.reference_speed: 60 s of a bare resnet18 loop)
and scales the demo's budget by it: BUDGET_MINUTES on a machine as fast as REFERENCE_SPEED,
proportionally longer on a slower one (machines of the same kind ran the same demo in 29 and 58
minutes). Then runs the demo once per seed (each an ordinary, resumable run under --runs-dir)
and writes benchmarks/results/demo_seeds.json: per seed the round-0 teacher, every round, the
final top-1, wall minutes and whether it kept within the scaled budget; the mean and sample std
over seeds; and demo_seeds.png, test top-1 against wall minutes (each stage's end, from the
run's timings.jsonl).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, environment, reference_speed, write_result  # noqa: E402

from noisystudent.cli import bundled_config  # noqa: E402
from noisystudent.config import load_config  # noqa: E402
from noisystudent.pipeline import run  # noqa: E402

BUDGET_MINUTES, TARGET_TOP1 = 45.0, 0.90
# The reference workload's images/s on the machine the budget is set for: a 2-core machine of the
# kind the project runs on (benchmarks/results/reference_speed.json). A machine half as fast
# gets twice the minutes.
REFERENCE_SPEED = 483.3


def accuracy_over_time(run_dir: Path) -> list[tuple[float, float]]:
    """(wall minutes at the end of each evaluation, its top-1), from timings.jsonl and eval.json."""
    points, elapsed = [], 0.0
    for line in (run_dir / "timings.jsonl").read_text().splitlines():
        record = json.loads(line)
        elapsed += record["seconds"] / 60
        if record["kind"] == "eval":
            top1 = json.loads((run_dir / record["stage"] / "eval.json").read_text())["top1"]
            points.append((round(elapsed, 2), top1))
    return points


def plot(per_seed: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for seed, entry in per_seed.items():
        minutes, top1 = zip(*entry["accuracy_over_time"])
        axis.plot(minutes, [100 * t for t in top1], marker="o", label=f"seed {seed}")
    axis.axhline(100 * TARGET_TOP1, color="gray", linestyle="--", linewidth=1)
    axis.set(xlabel="wall minutes (stages only)", ylabel="test top-1 (%)", title="The demo, per seed")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs") / "benchmarks")
    parser.add_argument("overrides", nargs="*", help="config overrides for every seed")
    args = parser.parse_args()
    speed = reference_speed()
    scale = REFERENCE_SPEED / speed["images_per_second"]
    budget = BUDGET_MINUTES * scale
    per_seed = {}
    for seed in args.seeds:
        config = load_config(bundled_config("demo"), [*args.overrides, f"seed={seed}", f"runs_dir={args.runs_dir}",
                                                      f"name=demo-seed{seed}"])
        started = time.perf_counter()
        summary = run(config)
        minutes = (time.perf_counter() - started) / 60
        run_dir = args.runs_dir / config.name
        stage_minutes = sum(json.loads(line)["seconds"] for line in (run_dir / "timings.jsonl").read_text().splitlines()) / 60
        per_seed[seed] = {"teacher_top1": summary["teacher_top1"], "final_top1": summary["final_top1"],
                          "rounds": [r["student_top1"] for r in summary["rounds"]],
                          "wall_minutes_this_call": round(minutes, 1), "stage_minutes": round(stage_minutes, 1),
                          "within_budget": stage_minutes <= budget, "accuracy_over_time": accuracy_over_time(run_dir)}
        print(seed, per_seed[seed], flush=True)
    finals = [entry["final_top1"] for entry in per_seed.values()]
    plot(per_seed, RESULTS / "demo_seeds.png")
    write_result("demo_seeds", {
        "benchmark": "demo_seeds", **environment(), "overrides": args.overrides, "reference_workload": speed,
        "budget_minutes_on_reference": BUDGET_MINUTES, "reference_speed": REFERENCE_SPEED,
        "budget_minutes_here": round(budget, 1), "target_top1": TARGET_TOP1, "seeds": per_seed,
        "final_top1": {"mean": statistics.fmean(finals), "std": statistics.stdev(finals) if len(finals) > 1 else None},
        "teacher_top1_mean": statistics.fmean(entry["teacher_top1"] for entry in per_seed.values())})


if __name__ == "__main__":
    main()
