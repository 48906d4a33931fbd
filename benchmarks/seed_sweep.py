"""Run-to-run spread of the quick demo, and soft vs hard pseudo labels, over seeds.

    python benchmarks/seed_sweep.py                # 6 runs of `noisystudent demo --quick`, 50-60 min on 2 cores

The quick demo (configs/smoke.yaml: 500 labels, a 4,000-image pool, 2 rounds, tiny models)
with robustness off, for seeds 0, 1, 2 (the seed draws the labeled split, the initial weights
and every augmentation) and labels.kind soft and hard. Per run: round-0 teacher and final
student top-1 on the first 2,000 test images; per kind: the mean and sample standard deviation
of the gain (points); and the per-seed paired difference soft - hard, since both kinds share a
seed's teacher and split. The paper found soft labels slightly better out of domain and about
equal in domain. The runs are a sweep (noisystudent.sweep: <runs-dir>/sweeps/seed-sweep/, an
interrupted one resumes, its statistics are the sweep's). Writes benchmarks/results/seed_sweep.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.cli import resolve_config  # noqa: E402
from noisystudent.sweep import finished_runs, make_sweep, run_sweep  # noqa: E402

SEEDS, KINDS = [0, 1, 2], ("soft", "hard")
OVERRIDES = ["evaluate.robustness=false"]


def points(value: float) -> float:
    return round(100 * value, 2)


def spread(stats: dict, values: list[float]) -> dict:
    """A sweep statistic (noisystudent.sweep.mean_std) in points, with the range of its `values` (points)."""
    return {"mean": points(stats["mean"]), "std": points(stats["std"]), "min": min(values), "max": max(values)}


def run_record(seed: int, kind: str, summary: dict) -> dict:
    return {"seed": seed, "kind": kind, "teacher_top1": summary["teacher_top1"], "final_top1": summary["final_top1"],
            "gain_points": points(summary["final_top1"] - summary["teacher_top1"]),
            "rounds": [{key: r[key] for key in ("round", "student_model", "pseudo_label_accuracy", "student_top1")}
                       for r in summary["rounds"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the sweep goes under its sweeps/seed-sweep/")
    args = parser.parse_args()
    # hard is the reference, so each soft run's paired difference is soft - hard
    sweep = make_sweep({"name": "seed-sweep", "base": "smoke", "overrides": OVERRIDES, "seeds": SEEDS,
                        "reference": "hard", "runs_dir": str(args.runs_dir),
                        "variants": {kind: [f"labels.kind={kind}"] for kind in KINDS}},
                       "seed_sweep.py", resolve_config)
    table = run_sweep(sweep)
    summaries = finished_runs(sweep)
    runs = [run_record(seed, kind, summaries[kind, seed]) for seed in SEEDS for kind in KINDS]
    soft = table["variants"]["soft"]
    paired = [points(summaries["soft", seed]["final_top1"] - summaries["hard", seed]["final_top1"])
              for seed in soft["paired_seeds"]]
    write_result("seed_sweep", {
        "benchmark": "seed_sweep", **environment(), "config": "smoke.yaml", "overrides": OVERRIDES,
        "seeds": SEEDS, "test_images": sweep.runs[0].config.data.test_limit, "runs": runs,
        "gain_points": {kind: spread(table["variants"][kind]["gain"], [r["gain_points"] for r in runs if r["kind"] == kind])
                        for kind in KINDS},
        "soft_minus_hard_points": {"per_seed": paired, **spread(soft["vs_reference"], paired)},
    })


if __name__ == "__main__":
    main()
