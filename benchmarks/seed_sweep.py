"""Run-to-run spread of the quick demo, and soft vs hard pseudo labels, over seeds.

    python benchmarks/seed_sweep.py                # 6 runs of `noisystudent demo --quick`, 50-60 min on 2 cores

The quick demo (configs/smoke.yaml: 500 labels, a 4,000-image pool, 2 rounds, tiny models)
with robustness off, for seeds 0, 1, 2 (the seed draws the labeled split, the initial weights
and every augmentation) and labels.kind soft and hard. Per run: round-0 teacher and final
student top-1 on the first 2,000 test images; per kind: the mean and sample standard deviation
of the gain (points); and the per-seed paired difference soft - hard, since both kinds share a
seed's teacher and split. The paper found soft labels slightly better out of domain and about
equal in domain. Writes benchmarks/results/seed_sweep.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.cli import bundled_config  # noqa: E402
from noisystudent.config import load_config  # noqa: E402
from noisystudent.pipeline import run  # noqa: E402

SEEDS, KINDS = (0, 1, 2), ("soft", "hard")


def points(value: float) -> float:
    return round(100 * value, 2)


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 2), "std": round(statistics.stdev(values), 2),
            "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # kept, not temporary: an interrupted sweep resumes (finished runs and stages are skipped)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs") / "benchmarks" / "seed-sweep",
                        help="where the runs are kept")
    args = parser.parse_args()
    runs = []
    for seed in SEEDS:
        for kind in KINDS:
            config = load_config(bundled_config("smoke"), [
                f"seed={seed}", f"labels.kind={kind}", "evaluate.robustness=false", f"runs_dir={args.runs_dir}",
                f"name=seed{seed}-{kind}"])
            summary = run(config, log=lambda line: None)
            runs.append({"seed": seed, "kind": kind, "teacher_top1": summary["teacher_top1"],
                         "final_top1": summary["final_top1"],
                         "gain_points": points(summary["final_top1"] - summary["teacher_top1"]),
                         "rounds": [{key: r[key] for key in ("round", "student_model", "pseudo_label_accuracy",
                                                             "student_top1")} for r in summary["rounds"]]})
            print(f"seed {seed} {kind}: teacher {summary['teacher_top1']:.4f} -> {summary['final_top1']:.4f}", flush=True)
    gains = {kind: [r["gain_points"] for r in runs if r["kind"] == kind] for kind in KINDS}
    final = {(r["seed"], r["kind"]): r["final_top1"] for r in runs}
    paired = [points(final[seed, "soft"] - final[seed, "hard"]) for seed in SEEDS]
    write_result("seed_sweep", {
        "benchmark": "seed_sweep", **environment(), "config": "smoke.yaml", "overrides": ["evaluate.robustness=false"],
        "seeds": list(SEEDS), "test_images": config.data.test_limit, "runs": runs,
        "gain_points": {kind: spread(values) for kind, values in gains.items()},
        "soft_minus_hard_points": {"per_seed": paired, **spread(paired)},
    })


if __name__ == "__main__":
    main()
