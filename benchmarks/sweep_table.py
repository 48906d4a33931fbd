"""A sweep's table (noisystudent sweep) as a committed result, finished or not.

    python benchmarks/sweep_table.py configs/sweeps/paper-ablations.yaml paper_ablations
    python benchmarks/sweep_table.py configs/sweeps/out-of-domain.yaml out_of_domain

Reads the finished runs under runs/sweeps/<name>/ (nothing runs) and writes
benchmarks/results/<result>.json: per variant the mean and sample std over seeds of the
round-0 teacher, every round and the gain, and the paired difference against the reference
variant (pairs made on one machine: noisystudent.sweep.summarize); `partial: true` and the runs
each variant still needs when the sweep has not finished. Each run's selection stats are
summarized too (kept share; on a mixed pool, the out-of-domain images kept and selected, and the
estimated out-of-domain share). Runs record the commit they were made with; `--code-commit`
names it for runs made before they did; `run_commits` lists them all.

`--carry-from OLD.json` keeps the variants an earlier result of the same sweep has and these
runs do not (their run folders lost), each with the commit it was made with and the reference
row it is paired against: this sweep's reference where that includes the earlier reference's
runs exactly, else the earlier reference, kept beside it as `<reference> (earlier runs)`.

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
from noisystudent.provenance import UNRECORDED  # noqa: E402
from noisystudent.sweep import finished_run_folders, load_sweep, summarize  # noqa: E402


def selection_summary(folders: list[Path]) -> dict:
    """Mean over a variant's finished runs (their folders) of round 1's selection numbers."""
    stats = [read_json(folder / "round-1" / "selection" / "stats.json") for folder in folders
             if (folder / "round-1" / "selection" / "stats.json").is_file()]
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


def reproduces(ours: dict, earlier: dict) -> bool:
    """Whether a variant's runs include an earlier result's of it, run for run where that has
    per-seed finals (the kept runs of another machine, copied back, do)."""
    if "final_top1_by_seed" in earlier:
        by_seed = dict(zip(ours["seeds"], ours["final_top1_by_seed"]))
        return all(by_seed.get(seed) == final for seed, final in zip(earlier["seeds"], earlier["final_top1_by_seed"]))
    keys = ("seeds", "teacher_top1", "rounds", "final_top1")
    return all(ours[key] == earlier[key] for key in keys)


def paired_against(earlier: dict, variant: str, reference_row: str) -> str | None:
    """The row a carried variant's paired difference was taken against: recorded on the entry, or in
    the older results (one `carried` record for the whole file) read from there."""
    entry, legacy = earlier["variants"][variant], earlier.get("carried")
    if "paired_against" in entry or variant.startswith(f"{earlier['reference']} ("):
        return entry.get("paired_against")
    if isinstance(legacy, dict) and variant in legacy.get("variants", []) and not legacy.get("pairs_with_these_runs"):
        return f"{earlier['reference']} (earlier runs)"
    return reference_row


def earlier_row(name: str, taken) -> str:
    """The first free `<name> (earlier runs[ n])` row name."""
    return next(row for row in (f"{name} (earlier runs{suffix})" for suffix in ("", " 2", " 3", " 4", " 5"))
                if row not in taken)


def carry(result: dict, earlier: dict, file_order: list[str]) -> None:
    """Move into `result` the variants of `earlier` whose runs `result` does not include (see
    --carry-from): a variant `result` has no runs of keeps its name; one it has other runs of (made
    again on another machine) is kept beside them as `<variant> (earlier runs)`, and so is the
    reference when its runs differ. Each keeps the commit it was made with and names the reference
    row it is paired against: this sweep's reference where that includes the earlier reference's
    runs exactly, else the earlier reference's row (another machine's kernels)."""
    name = result["reference"]
    if earlier["sweep"] != result["sweep"] or name not in result["variants"] or name not in earlier["variants"]:
        raise SystemExit(f"--carry-from: needs the same sweep ({earlier['sweep']} vs {result['sweep']}) with its "
                         f"reference {name!r} finished in both")
    commit = earlier["runs_made_with_commit"] or earlier["commit"]
    carried = {}  # row in result -> variant in earlier
    for variant, entry in earlier["variants"].items():
        if variant not in result["variants"]:
            carried[variant] = variant
        elif not reproduces(result["variants"][variant], entry):
            carried[earlier_row(variant, set(earlier["variants"]) | set(result["variants"]) | set(carried))] = variant
    reference_row = next((row for row, variant in carried.items() if variant == name), name)
    variants = dict(result["variants"])
    for row, variant in carried.items():
        source = earlier["variants"][variant]
        variants[row] = {**source, "made_with_commit": source.get("made_with_commit", commit),
                         "paired_against": None if variant == name else paired_against(earlier, variant, reference_row)}
    # rows in the sweep file's order; a variant's earlier runs (and the earlier reference) right after it
    base = lambda row: row.split(" (earlier runs")[0]  # noqa: E731
    position = {variant: index for index, variant in enumerate(file_order)}
    rows = sorted(variants, key=lambda row: (position.get(base(row), len(position)), row != base(row), row))
    result["variants"] = {row: variants[row] for row in rows}
    for row in carried:
        result["missing"].pop(row, None)
        result.get("to_make", {}).pop(row, None)  # a table made before it counted the runs to make has none
    result["partial"] = bool(result["missing"])
    result["complete"] = not result["partial"]
    result["carried"] = {"from_commit": commit, "variants": list(carried)}


KEPT = ["summary.json", "round-*/selection/stats.json"]  # what the table reads of a run


def keep_runs(folders: dict, root: Path) -> None:
    """Copy what the table reads of each finished run to root/<run>/, at the same relative paths."""
    for folder in folders.values():
        for pattern in KEPT:
            for path in folder.glob(pattern):
                target = root / folder.name / path.relative_to(folder)
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
    table, folders = summarize(sweep), finished_run_folders(sweep)
    for variant, entry in table["variants"].items():
        entry["code_by_seed"] = [args.code_commit if code == UNRECORDED and args.code_commit else code
                                 for code in entry["code_by_seed"]]
        entry["selection"] = selection_summary([folders[variant, seed] for seed in entry["seeds"]])
    result = {"benchmark": args.result, **environment(), "sweep_file": str(args.sweep),
              "runs_made_with_commit": args.code_commit, "partial": bool(table["missing"]), **table}
    if args.carry_from:
        carry(result, json.loads(args.carry_from.read_text()), sweep.variants)
    # a table whose runs come from several commits says so (results_table.py marks it)
    result["run_commits"] = sorted({code[:7] + ("+dirty" if code.endswith("+dirty") else "")
                                    for entry in result["variants"].values()
                                    for code in entry.get("code_by_seed") or [entry.get("made_with_commit")]
                                    if code and code != UNRECORDED})
    keep_runs(folders, RESULTS / "sweeps" / sweep.name)
    write_result(args.result, result)


if __name__ == "__main__":
    main()
