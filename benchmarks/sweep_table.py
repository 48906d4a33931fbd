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
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("result", help="name of the JSON under benchmarks/results/")
    parser.add_argument("--code-commit", default=None, help="the commit the runs were made with")
    args = parser.parse_args()
    sweep = load_sweep(args.sweep, resolve_config)
    table = summarize(sweep)
    for variant, entry in table["variants"].items():
        entry["selection"] = selection_summary([run for run in sweep.runs if run.variant == variant and run.done])
    missing = [run.config.name for run in sweep.runs if not run.done]
    write_result(args.result, {"benchmark": args.result, **environment(), "sweep_file": str(args.sweep),
                               "runs_made_with_commit": args.code_commit, "partial": bool(missing),
                               "missing_runs": missing, **table})


if __name__ == "__main__":
    main()
