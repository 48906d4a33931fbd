"""The demo benchmark: Noisy Student on Fashion-MNIST with 1,000 labels, on this machine.

    python benchmarks/demo.py                    # the demo config in a fresh run dir; ~35 min on 2 cores

Writes benchmarks/results/demo.json: teacher_top1 (round-0 teacher), final_top1 (last student),
wall_seconds (the whole run: data loading, training, labeling, evaluation with robustness, report),
rounds (per-round table), seed, machine, versions, commit; and benchmarks/results/robustness.json:
the round-0 teacher vs the final student on top-1, mCE, mFR (teacher = 100), FGSM/PGD accuracy per
epsilon and ECE. The run directory (weights, report.html) stays under --runs-dir. How the
teacher's schedule was chosen: benchmarks/teacher_sweep.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.cli import bundled_config  # noqa: E402
from noisystudent.config import load_config  # noqa: E402
from noisystudent.pipeline import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs") / "benchmarks", help="where the run is kept")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. seed=1")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs_dir = args.runs_dir
    config_path = bundled_config("demo")
    result = {"benchmark": "demo", **environment()}
    config = load_config(config_path, [*args.overrides, f"runs_dir={runs_dir}", f"name=demo-{stamp}"])
    started = time.perf_counter()
    summary = run(config)
    wall = time.perf_counter() - started
    result.update({
        "seed": config.seed, "config": str(config_path.name), "overrides": args.overrides,
        "teacher_top1": summary["teacher_top1"], "final_top1": summary["final_top1"],
        "gain_points": round(100 * (summary["final_top1"] - summary["teacher_top1"]), 2),
        "wall_seconds": round(wall, 1), "rounds": summary["rounds"],
        "teacher_epochs": config.teacher.epochs,
    })
    result["run_dir"] = str(runs_dir / config.name)
    write_result("demo", result)
    robustness = {"benchmark": "robustness", **environment(), "seed": config.seed, "run_dir": result["run_dir"],
                  "images": config.evaluate.images, "baseline": "round-0 teacher (mCE = mFR = 100)",
                  **summary["robustness"]}
    write_result("robustness", robustness)


if __name__ == "__main__":
    main()
