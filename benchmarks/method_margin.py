"""Does the method pay? The demo's final student against the best supervised schedule, seed by seed.

    python benchmarks/sweep_table.py configs/sweeps/supervised-plateau.yaml supervised_plateau
    python benchmarks/method_margin.py

Reads benchmarks/results/demo_seeds.json (the demo, configs/demo.yaml, per seed) and
benchmarks/results/supervised_plateau.json (its round-0 teacher alone on the same 1,000 labels,
longer and longer: configs/sweeps/supervised-plateau.yaml); nothing trains. The baseline is the
supervised variant with the best mean top-1 (the plateau: the longest schedules should agree). A
seed draws the same 1,000 labels in both, so each seed is a pair; the margin is the mean of the
paired differences, in points, with its standard error (sample std / sqrt(pairs)). Writes
benchmarks/results/method_margin.json: each seed's pair, `margin_mean`, `margin_se`, and whether
the margin clears TARGET_POINTS by more than 2 standard errors (`partial` below 3 pairs).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, environment, write_result  # noqa: E402

TARGET_POINTS, PAIRS_WANTED = 1.5, 3


def best_supervised(plateau: dict) -> tuple[str, dict]:
    variants = {name: variant for name, variant in plateau["variants"].items() if variant.get("final_top1_by_seed")}
    name = max(variants, key=lambda name: variants[name]["final_top1"]["mean"])
    return name, variants[name]


def margin(demo: dict, plateau: dict) -> dict:
    baseline_name, baseline = best_supervised(plateau)
    baseline_by_seed = dict(zip(baseline["seeds"], baseline["final_top1_by_seed"]))
    pairs = [{"seed": int(seed), "demo_final_top1": entry["final_top1"],
              "supervised_top1": baseline_by_seed[int(seed)],
              "difference_points": round(100 * (entry["final_top1"] - baseline_by_seed[int(seed)]), 2)}
             for seed, entry in sorted(demo["seeds"].items(), key=lambda item: int(item[0]))
             if int(seed) in baseline_by_seed]
    differences = [pair["difference_points"] for pair in pairs]
    mean = statistics.fmean(differences) if differences else None
    se = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else None
    return {"baseline_variant": baseline_name, "baseline_seeds": baseline["seeds"],
            "supervised_curve": {name: variant.get("final_top1") for name, variant in plateau["variants"].items()},
            "pairs": pairs, "margin_mean": None if mean is None else round(mean, 2),
            "margin_se": None if se is None else round(se, 2), "target_points": TARGET_POINTS,
            "partial": len(pairs) < PAIRS_WANTED,
            "target_met": bool(len(pairs) >= PAIRS_WANTED and se is not None and mean >= TARGET_POINTS
                               and mean > 2 * se)}


def main() -> int:
    demo = json.loads((RESULTS / "demo_seeds.json").read_text())
    plateau = json.loads((RESULTS / "supervised_plateau.json").read_text())
    write_result("method_margin", {"benchmark": "method_margin", **environment(),
                                   "demo_commit": demo["commit"], "plateau_commit": plateau["commit"],
                                   **margin(demo, plateau)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
