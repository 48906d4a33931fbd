"""Does the method pay? Its final student against the best supervised schedule, seed by seed.

    python benchmarks/sweep_table.py configs/sweeps/supervised-plateau.yaml supervised_plateau
    python benchmarks/sweep_table.py configs/sweeps/scarce-labels.yaml scarce_labels
    python benchmarks/method_margin.py

Two settings, each a paired margin; nothing trains:
- the demo (benchmarks/results/demo_seeds.json, configs/demo.yaml, per seed) against its round-0
  teacher alone on the same 1,000 labels, longer and longer (supervised_plateau.json:
  configs/sweeps/supervised-plateau.yaml). The baseline is the supervised variant with the best
  mean top-1 (the plateau: the longest schedules should agree).
- the demo at 10 labels per class (scarce_labels.json: configs/sweeps/scarce-labels.yaml), its
  reference variant's final student against the best of the sweep's supervised variants among those
  paired on the most seeds (a mean over the most seeds, not one lucky seed).
A seed draws the same labels in both arms, so each seed is a pair; the margin is the mean of the
paired differences, in points, with its standard error (sample std / sqrt(pairs)). Writes
benchmarks/results/method_margin.json: for each setting each seed's pair, `margin_mean`,
`margin_se`, and whether the margin clears TARGET_POINTS by more than 2 standard errors (`partial`
below 3 pairs).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, environment, write_result  # noqa: E402

from noisystudent.sweep import mean_std  # noqa: E402

TARGET_POINTS, PAIRS_WANTED = 1.5, 3


def paired_margin(method_by_seed: dict[int, float], baseline_by_seed: dict[int, float]) -> dict:
    """The method against the baseline on the seeds both ran: each pair, the mean of the
    differences in points, its standard error, and whether it clears the target."""
    seeds = sorted(set(method_by_seed) & set(baseline_by_seed))
    pairs = [{"seed": seed, "final_top1": method_by_seed[seed], "supervised_top1": baseline_by_seed[seed],
              "difference_points": round(100 * (method_by_seed[seed] - baseline_by_seed[seed]), 2)}
             for seed in seeds]
    differences = [pair["difference_points"] for pair in pairs]
    mean = statistics.fmean(differences) if differences else None
    se = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else None
    return {"pairs": pairs,
            "final_top1": mean_std([pair["final_top1"] for pair in pairs]) if pairs else None,
            "supervised_top1": mean_std([pair["supervised_top1"] for pair in pairs]) if pairs else None,
            "margin_mean": None if mean is None else round(mean, 2),
            "margin_se": None if se is None else round(se, 2), "target_points": TARGET_POINTS,
            "partial": len(pairs) < PAIRS_WANTED,
            "target_met": bool(len(pairs) >= PAIRS_WANTED and se is not None and mean >= TARGET_POINTS
                               and mean > 2 * se)}


def by_seed(variant: dict) -> dict[int, float]:
    return dict(zip((int(seed) for seed in variant["seeds"]), variant["final_top1_by_seed"]))


def supervised_curve(table: dict) -> dict:
    """Each supervised variant's mean top-1 (a sweep's reference variant is the method, not one)."""
    return {name: variant.get("final_top1") for name, variant in table["variants"].items()
            if name != table.get("reference")}


def margin(demo: dict, plateau: dict) -> dict:
    """The demo's final student against the supervised variant with the best mean."""
    variants = {name: variant for name, variant in plateau["variants"].items() if variant.get("final_top1_by_seed")}
    baseline_name = max(variants, key=lambda name: variants[name]["final_top1"]["mean"])
    demo_by_seed = {int(seed): entry["final_top1"] for seed, entry in demo["seeds"].items()}
    return {"baseline_variant": baseline_name, "baseline_seeds": variants[baseline_name]["seeds"],
            "supervised_curve": supervised_curve(plateau),
            **paired_margin(demo_by_seed, by_seed(variants[baseline_name]))}


def same_machine_seeds(method: dict, variant: dict) -> set[int]:
    """The seeds on which the method and a variant ran on one recorded machine: the only real pairs
    (the same seed gives other numbers on another CPU; sweep.summarize pairs the same way)."""
    machines = lambda entry: dict(zip((int(seed) for seed in entry["seeds"]), entry.get("machine_by_seed", [])))  # noqa: E731
    method_machines, variant_machines = machines(method), machines(variant)
    return {seed for seed, machine in variant_machines.items()
            if machine not in (None, "unrecorded") and method_machines.get(seed) == machine}


def sweep_margin(table: dict) -> dict:
    """A sweep's reference variant (the method) against the best of its other variants, among
    those paired with it on the most seeds, on those seeds."""
    method = table["variants"][table["reference"]]
    paired_seeds = {name: same_machine_seeds(method, variant) for name, variant in table["variants"].items()
                    if name != table["reference"]}
    most = max(len(seeds) for seeds in paired_seeds.values())
    mean_on_pairs = lambda name: statistics.fmean(by_seed(table["variants"][name])[seed]  # noqa: E731
                                                  for seed in paired_seeds[name])
    baseline_name = max((name for name, seeds in paired_seeds.items() if len(seeds) == most and most),
                        key=mean_on_pairs, default=None)
    if baseline_name is None:
        return {"sweep_file": table["sweep_file"], "baseline_variant": None, "baseline_seeds": [],
                "supervised_curve": supervised_curve(table), **paired_margin({}, {})}
    seeds = paired_seeds[baseline_name]
    method_by_seed = {seed: top1 for seed, top1 in by_seed(method).items() if seed in seeds}
    return {"sweep_file": table["sweep_file"], "baseline_variant": baseline_name, "baseline_seeds": sorted(seeds),
            "supervised_curve": supervised_curve(table),
            **paired_margin(method_by_seed, by_seed(table["variants"][baseline_name]))}


def main() -> int:
    demo = json.loads((RESULTS / "demo_seeds.json").read_text())
    plateau = json.loads((RESULTS / "supervised_plateau.json").read_text())
    scarce = json.loads((RESULTS / "scarce_labels.json").read_text())
    write_result("method_margin", {"benchmark": "method_margin", **environment(),
                                   "demo_commit": demo["commit"], "plateau_commit": plateau["commit"],
                                   **margin(demo, plateau),
                                   "scarce_labels": {"commit": scarce["commit"], **sweep_margin(scarce)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
