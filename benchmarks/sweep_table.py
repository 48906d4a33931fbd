"""A sweep's table (noisystudent sweep) as a committed result, finished or not.

    python benchmarks/sweep_table.py configs/sweeps/paper-ablations.yaml paper_ablations
    python benchmarks/sweep_table.py configs/sweeps/out-of-domain.yaml out_of_domain

Reads the finished runs under runs/sweeps/<name>/ (nothing runs) and writes
benchmarks/results/<result>.json: per variant the mean and sample std over seeds of the
round-0 teacher, every round and the gain, and the paired difference against the reference
variant; `partial: true` and the runs still missing when the sweep has not finished. Each
run's selection stats are summarized too (kept share; on a mixed pool, the out-of-domain images
kept and selected, and the estimated out-of-domain share). `--code-commit` records the commit
the runs were made with when it is not this checkout's.

`--carry-from OLD.json` keeps the variants an earlier result of the same sweep finished and these
runs do not have (their run folders lost), with the commit they were made with. Where this
sweep's reference variant reproduces the earlier one exactly (the same per-seed finals, or where
the earlier result has none, the same means and spreads of every round), the two sets of runs
draw the same numbers and pair; where it does not, the earlier reference is kept beside it and
each set is paired only within itself.

Each finished run's summary.json and selection stats are kept too, under
benchmarks/results/sweeps/<name>/<run>/ as in its run folder (a few KB a run): run folders are
not committed, and copying these back (`cp -rn benchmarks/results/sweeps/<name> runs/sweeps/`)
makes the sweep count those runs as finished, so a sweep continues on another machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, environment, write_result  # noqa: E402

from noisystudent.cli import resolve_config  # noqa: E402
from noisystudent.io import read_json  # noqa: E402
from noisystudent.sweep import load_sweep, summarize  # noqa: E402


def selection_summary(runs: list) -> dict:
    """Mean over a variant's finished runs of round 1's selection numbers."""
    stats = [read_json(run.folder / "round-1" / "selection" / "stats.json") for run in runs
             if (run.folder / "round-1" / "selection" / "stats.json").is_file()]
    if not stats:
        return {}
    mean = lambda values: round(statistics.fmean(values), 4)  # noqa: E731
    summary = {"kept_fraction": mean(s["kept_fraction"] for s in stats)}
    if all("out_of_domain_truth" in s for s in stats):
        truth = [s["out_of_domain_truth"] for s in stats]
        summary |= {"ood_in_pool": mean(t["in_pool"] for t in truth), "ood_kept": mean(t["kept"] for t in truth),
                    "in_domain_kept": mean(t["kept_in_domain"] for t in truth),
                    "ood_share_of_selection": mean(t["selected_with_copies"] / t["selected_total"] for t in truth)}
    if all("out_of_domain" in s for s in stats):
        summary["estimated_ood_share"] = mean(s["out_of_domain"]["estimated_share"] for s in stats)
    return summary


def reproduces(reference: dict, earlier: dict) -> bool:
    """Whether a variant's entry equals an earlier result's, run for run where both have per-seed finals."""
    if "final_top1_by_seed" in earlier:
        return reference["seeds"] == earlier["seeds"] and reference["final_top1_by_seed"] == earlier["final_top1_by_seed"]
    keys = ("seeds", "teacher_top1", "rounds", "final_top1")
    return all(reference[key] == earlier[key] for key in keys)


def carry(result: dict, earlier: dict) -> None:
    """Move into `result` the variants `earlier` finished and `result` has no runs of (see --carry-from).
    Their paired differences stay against the reference runs made with them: where this sweep's
    reference does not reproduce those exactly (another machine's kernels), that reference is
    carried too, as `<reference> (earlier runs)`, and the two sets are not paired with each other."""
    name = result["reference"]
    if earlier["sweep"] != result["sweep"] or name not in result["variants"] or name not in earlier["variants"]:
        raise SystemExit(f"--carry-from: needs the same sweep ({earlier['sweep']} vs {result['sweep']}) with its "
                         f"reference {name!r} finished in both")
    commit = earlier["runs_made_with_commit"] or earlier["commit"]
    pairs = reproduces(result["variants"][name], earlier["variants"][name])
    carried = [variant for variant in earlier["variants"] if variant not in result["variants"]]
    variants = dict(result["variants"])
    for variant in carried:
        variants[variant] = {**earlier["variants"][variant], "made_with_commit": commit}
    order = list(earlier["variants"]) + [variant for variant in result["variants"] if variant not in earlier["variants"]]
    result["variants"] = {variant: variants[variant] for variant in order}
    if not pairs:
        result["variants"][f"{name} (earlier runs)"] = {**earlier["variants"][name], "made_with_commit": commit}
    result["missing_runs"] = [run for run in result["missing_runs"] if run.rsplit("-seed", 1)[0] not in carried]
    result["partial"] = bool(result["missing_runs"])
    result["complete"] = not result["partial"]
    result["carried"] = {"from_commit": commit, "variants": carried, "pairs_with_these_runs": pairs,
                         "because": f"{name!r} reproduces the earlier runs exactly" if pairs else
                         f"{name!r} does not reproduce the earlier runs exactly (another machine), so the carried "
                         f"variants are paired against the earlier runs' {name!r}, carried as '{name} (earlier runs)'"}


KEPT = ["summary.json", "round-*/selection/stats.json"]  # what the table reads of a run


def keep_runs(sweep, root: Path) -> None:
    """Copy what the table reads of each finished run to root/<run>/, at the same relative paths."""
    for run in sweep.runs:
        if run.done:
            for pattern in KEPT:
                for path in run.folder.glob(pattern):
                    target = root / run.config.name / path.relative_to(run.folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("result", help="name of the JSON under benchmarks/results/")
    parser.add_argument("--code-commit", default=None, help="the commit the runs were made with")
    parser.add_argument("--carry-from", type=Path, default=None,
                        help="an earlier result of this sweep whose finished variants to keep (see above)")
    args = parser.parse_args()
    sweep = load_sweep(args.sweep, resolve_config)
    table = summarize(sweep)
    for variant, entry in table["variants"].items():
        entry["selection"] = selection_summary([run for run in sweep.runs if run.variant == variant and run.done])
    missing = [run.config.name for run in sweep.runs if not run.done]
    result = {"benchmark": args.result, **environment(), "sweep_file": str(args.sweep),
              "runs_made_with_commit": args.code_commit, "partial": bool(missing), "missing_runs": missing, **table}
    if args.carry_from:
        carry(result, json.loads(args.carry_from.read_text()))
    keep_runs(sweep, RESULTS / "sweeps" / sweep.name)
    write_result(args.result, result)


if __name__ == "__main__":
    main()
