"""`noisystudent sweep SWEEP.yaml`: named variants x seeds, each an ordinary run, with error bars.

A sweep file names a base config, overrides shared by every run, the variants (each a list of
dotted overrides), the seeds and the reference variant:

    name: paper-ablations
    base: smoke                      # a bundled config name or a YAML path
    overrides: [evaluate.robustness=false]
    seeds: [0, 1, 2]
    reference: full
    variants:
      full: []
      no-noise: [noise.randaugment=false, noise.dropout=0, noise.survival_prob=1]

Run (variant, seed) lives in `<runs_dir>/sweeps/<name>/<variant>-seed<seed>/` (runs_dir: the sweep
file's, else the base config's; overrides may not set name, runs_dir or seed), with its resolved
config beside it, and runs as `noisystudent run` in its own process (`--jobs` at once, the CPU
threads split between them). A finished run (its summary.json) is never redone and an
interrupted one resumes, so a killed sweep continues where it stopped. At the end `table.json`
and `table.md` hold per variant the mean and sample standard deviation over seeds of the
round-0 teacher, every round's model and the gain, and the paired differences of the final
model against the reference variant on the same seeds; `plot.png` shows accuracy per round with
error bars and `report.html` puts them together.
"""

from __future__ import annotations

import base64
import html
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .config import Config, dump_yaml, load_config, read_yaml_mapping
from .errors import UserError
from .io import atomic_write, read_json, write_json, write_text
from .provenance import UNRECORDED, machine_key, same_machine
from .runs import SUMMARY


@dataclass(frozen=True)
class SweepRun:
    variant: str
    seed: int
    config: Config

    @property
    def folder(self) -> Path:
        return Path(self.config.runs_dir) / self.config.name

    @property
    def done(self) -> bool:
        return (self.folder / SUMMARY).is_file()


@dataclass(frozen=True)
class Sweep:
    name: str
    root: Path
    reference: str
    variants: list[str]  # every variant of the file, in its order
    seeds: list[int]  # the file's seeds: how many runs each variant wants
    runs: list[SweepRun]  # the runs this invocation makes (all, or the --variants/--seeds asked for)


SET_BY_THE_SWEEP = ("name", "runs_dir", "seed")  # per run, from the sweep file: overriding them is refused
RUN_FOLDER = re.compile(r"(?P<variant>.+)-seed(?P<seed>\d+)")


def load_sweep(path: Path, resolve_config, variants_to_run: list[str] | None = None,
               seeds_to_run: list[int] | None = None) -> Sweep:
    """Read and check a sweep file; every run's config is resolved (and validated) up front.
    `variants_to_run` / `seeds_to_run` narrow, order or move the runs to make (to continue a sweep on
    another machine on new seeds: see `summarize`); the table reads every finished run regardless."""
    return make_sweep({"name": path.stem, **read_yaml_mapping(path, "sweep file")}, f"sweep file {path}",
                      resolve_config, variants_to_run, seeds_to_run)


def make_sweep(spec: dict, source: str, resolve_config, variants_to_run: list[str] | None = None,
               seeds_to_run: list[int] | None = None) -> Sweep:
    """`load_sweep` for a sweep file's contents `spec` (its keys, `name` required), from wherever
    they come: a benchmark script builds its sweep in code. `source` names them in errors."""
    known = {"name", "base", "overrides", "seeds", "reference", "variants", "runs_dir"}
    if set(spec) - known:
        raise UserError(f"{source}: unknown keys {', '.join(sorted(set(spec) - known))}; "
                        f"known: {', '.join(sorted(known))}")
    variants, seeds = spec.get("variants"), spec.get("seeds", [0])
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, list) for v in variants.values()):
        raise UserError(f"{source}: `variants` must map names to lists of key=value overrides")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"{source}: `seeds` must be a list of integers")
    for label, values in ((f"{source}: seeds", seeds), ("--seeds", seeds_to_run or []),
                          ("--variants", variants_to_run or [])):
        repeated = sorted({str(value) for value in values if values.count(value) > 1})
        if repeated:  # a run listed twice would count twice in the mean and its std
            raise UserError(f"{label} lists {', '.join(repeated)} more than once; list each once")
    reference = spec.get("reference", next(iter(variants)))
    if reference not in variants:
        raise UserError(f"{source}: reference {reference!r} is not one of the variants ({', '.join(variants)})")
    name = str(spec["name"])
    base = resolve_config(Path(spec["base"])) if spec.get("base") else None
    shared = [str(o) for o in spec.get("overrides", [])]
    for owner, overrides in (("overrides", shared), *((f"variant {v!r}", o) for v, o in variants.items())):
        set_by_the_sweep = [str(o) for o in overrides if str(o).split("=", 1)[0].strip() in SET_BY_THE_SWEEP]
        if set_by_the_sweep:
            raise UserError(f"{source}, {owner}: {', '.join(set_by_the_sweep)} would be replaced: the sweep "
                            f"names each run <variant>-seed<seed> under <runs_dir>/sweeps/{name}/ with the seeds of "
                            f"`seeds`; set the sweep file's runs_dir or seeds key instead, or make another variant")
    try:  # where the runs go: the sweep file's runs_dir, else its base config's
        base_runs_dir = load_config(base, shared).runs_dir
    except UserError as error:
        raise UserError(f"sweep {name}: {error}") from None
    root = Path(spec.get("runs_dir", base_runs_dir)) / "sweeps" / name
    unknown = sorted(set(variants_to_run or []) - set(variants))
    if unknown:
        raise UserError(f"sweep {name}: no variant {', '.join(map(repr, unknown))}; its variants: {', '.join(variants)}")
    runs = []
    # Runs are made in the order --variants names them (the file's order otherwise), so a sweep
    # continued on another machine makes its most wanted comparisons first.
    for variant in variants_to_run or variants:
        overrides = variants[variant]
        for seed in seeds_to_run or seeds:
            try:
                config = load_config(base, shared + [str(o) for o in overrides] + [
                    f"seed={seed}", f"runs_dir={root}", f"name={variant}-seed{seed}"])
            except UserError as error:
                raise UserError(f"sweep {name}, variant {variant!r}: {error}") from None
            runs.append(SweepRun(variant, seed, config))
    return Sweep(name, root, reference, list(variants), seeds, runs)


def run_sweep(sweep: Sweep, jobs: int = 1, log=print) -> dict:
    """Run every unfinished run (`jobs` at once), then write the table, plot and report.

    SIGTERM (a scheduler's preemption, a plain `kill`) is passed on to the running runs, which
    checkpoint and stop, and no new run starts: killing the sweep alone would leave them running on."""
    pending = [run for run in sweep.runs if not run.done]
    log(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(pending)} finished, "
        f"{len(pending)} to run, {jobs} at a time -> {sweep.root}")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    failures, running, stopping = [], set(), threading.Event()
    guard = threading.Lock()  # a run starts either before SIGTERM (and is passed it) or not at all

    def execute(run: SweepRun) -> None:
        config_path = sweep.root / "configs" / f"{run.config.name}.yaml"
        write_text(config_path, dump_yaml(run.config))
        log_path = sweep.root / "logs" / f"{run.config.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(log_path, "a") as handle:
            with guard:
                if stopping.is_set():
                    return
                child = subprocess.Popen([sys.executable, "-m", "noisystudent.cli", "run", str(config_path),
                                          *([] if run.config.threads else [f"threads={threads}"])],
                                         stdout=handle, stderr=subprocess.STDOUT)
                running.add(child)
            code = child.wait()
            with guard:
                running.discard(child)
        minutes = (time.perf_counter() - started) / 60
        if code == 0:
            outcome = "done"
        elif stopping.is_set():
            outcome = "stopped by SIGTERM, resumes with the same command"
        else:
            failures.append(run.config.name)
            outcome = f"failed (exit {code}, see {log_path})"
        log(f"  {run.config.name}: {outcome} in {minutes:.1f} min")

    def pass_on_sigterm(signum, frame) -> None:
        with guard:
            stopping.set()
            for child in running:
                child.send_signal(signal.SIGTERM)

    # signal handlers can only be set from the main thread (a sweep run inside another program's thread keeps its own)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, pass_on_sigterm) if in_main_thread else None
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(execute, pending))
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if stopping.is_set():
        from .train import Preempted

        raise Preempted(f"sweep {sweep.name} stopped by SIGTERM: the running runs saved their checkpoints; "
                        f"run the same command again to continue (finished runs are kept)")
    table = write_table(sweep)
    if failures:
        raise UserError(f"{len(failures)} runs failed ({', '.join(failures)}); their logs are in {sweep.root / 'logs'}; "
                        f"fix the cause and run the same command again (finished runs are kept)")
    return table


def mean_std(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value) and count: every sweep statistic's form."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def finished_run_folders(sweep: Sweep) -> dict[tuple[str, int], Path]:
    """Every finished run under the sweep's folder, of any seed (not only the runs this invocation
    makes): {(variant, seed): its folder}."""
    found = {}
    for summary_path in sorted(sweep.root.glob(f"*/{SUMMARY}")):
        match = RUN_FOLDER.fullmatch(summary_path.parent.name)
        if match and match["variant"] in sweep.variants:
            found[match["variant"], int(match["seed"])] = summary_path.parent
    return found


def finished_runs(sweep: Sweep) -> dict[tuple[str, int], dict]:
    """{(variant, seed): its summary} of every finished run under the sweep's folder."""
    return {key: read_json(folder / SUMMARY) for key, folder in finished_run_folders(sweep).items()}


def summarize(sweep: Sweep) -> dict:
    """Per variant: mean and sample std over seeds of each round's top-1 and the gain; paired
    differences of the final top-1 against the reference variant on the same seed.

    A pair needs both runs made on the same machine (the same numerics fingerprint, provenance.py):
    across machines the same seed does not give the same model, so such a pair would measure the
    machines; a run without a fingerprint never pairs. A sweep continued on another machine therefore runs the reference again there, on
    new seeds (`--seeds`), and every variant it adds pairs with those. A variant is complete when
    it has as many runs (paired runs, for all but the reference) as the sweep file has seeds:
    `missing` counts the pairs each variant still lacks, `to_make` the runs it has not made at all
    (an unpaired run is made, yet missing: its pair needs a reference run on its machine)."""
    summaries = finished_runs(sweep)
    table = {"sweep": sweep.name, "reference": sweep.reference, "variants": {}, "missing": {}, "to_make": {}}
    for variant in sweep.variants:
        seeds = sorted(seed for (v, seed) in summaries if v == variant)
        rows = [summaries[variant, seed] for seed in seeds]
        paired_seeds = [seed for seed in seeds if (sweep.reference, seed) in summaries
                        and same_machine(summaries[sweep.reference, seed], summaries[variant, seed])]
        counted = len(seeds) if variant == sweep.reference else len(paired_seeds)
        if counted < len(sweep.seeds):
            table["missing"][variant] = len(sweep.seeds) - counted
        if len(seeds) < len(sweep.seeds):
            table["to_make"][variant] = len(sweep.seeds) - len(seeds)
        if not seeds:
            continue
        per_round = [[s["teacher_top1"]] + [r["student_top1"] for r in s["rounds"]] for s in rows]
        entry = {"seeds": seeds, "teacher_top1": mean_std([s["teacher_top1"] for s in rows]),
                 "rounds": [mean_std([acc[k] for acc in per_round]) for k in range(1, min(map(len, per_round)))],
                 "final_top1": mean_std([s["final_top1"] for s in rows]),
                 "final_top1_by_seed": [s["final_top1"] for s in rows],  # in `seeds` order: pairable later
                 "gain": mean_std([s["final_top1"] - s["teacher_top1"] for s in rows]),
                 "machine_by_seed": [machine_key(s) for s in rows],
                 "code_by_seed": [s.get("provenance", {}).get("code", UNRECORDED) for s in rows]}
        if variant != sweep.reference and paired_seeds:
            entry["vs_reference"] = mean_std([summaries[variant, seed]["final_top1"] -
                                              summaries[sweep.reference, seed]["final_top1"] for seed in paired_seeds])
            entry["paired_seeds"] = paired_seeds
        table["variants"][variant] = entry
    table["complete"] = not table["missing"]
    return table


def _cell(stats: dict | None, points: bool = False) -> str:
    if not stats:
        return "-"
    scale, sign = (100, "+") if points else (100, "")
    std = f" ± {scale * stats['std']:.2f}" if stats["std"] is not None else ""
    return f"{scale * stats['mean']:{sign}.2f}{std}"


def write_table(sweep: Sweep) -> dict:
    table = summarize(sweep)
    write_json(sweep.root / "table.json", table)
    header = ["variant", "seeds", "round-0 teacher (%)", "final (%)", "gain (points)", f"vs {sweep.reference} (points)"]
    lines = [f"# Sweep `{sweep.name}`" + ("" if table["complete"] else " (partial: some runs are not finished)"), "",
             "Mean ± sample standard deviation over seeds; the last column is the paired difference of the final "
             "top-1 against the reference on the same seeds, each pair made on one machine."
             + "".join(f" {variant}: {count} more runs to pair." for variant, count in table["missing"].items()), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, entry in table["variants"].items():
        lines.append(f"| {variant} | {len(entry['seeds'])} | {_cell(entry['teacher_top1'])} | {_cell(entry['final_top1'])} "
                     f"| {_cell(entry['gain'], True)} | {_cell(entry.get('vs_reference'), True)} |")
    write_text(sweep.root / "table.md", "\n".join(lines) + "\n")
    plot = _plot(table, sweep.root / "plot.png")
    encoded = base64.b64encode(plot.read_bytes()).decode() if plot else ""
    markdown = "\n".join(lines[4:])
    write_text(sweep.root / "report.html",
               f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {html.escape(sweep.name)}</title></head>"
               f"<body><h1>Sweep {html.escape(sweep.name)}</h1><pre>{html.escape(markdown)}</pre>"
               + (f'<img alt="accuracy per round" src="data:image/png;base64,{encoded}">' if encoded else "")
               + "</body></html>\n")
    return table


def _plot(table: dict, path: Path) -> Path | None:
    if not table["variants"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for variant, entry in table["variants"].items():
        points = [entry["teacher_top1"], *entry["rounds"]]
        axis.errorbar(range(len(points)), [100 * p["mean"] for p in points],
                      yerr=[100 * (p["std"] or 0) for p in points], marker="o", capsize=3, label=variant)
    axis.set(xlabel="round (0 = supervised teacher)", ylabel="test top-1 (%)", title="Accuracy per round, mean ± std")
    axis.legend(fontsize=7)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(figure)
    return path


def describe(sweep: Sweep) -> list[str]:
    """`--dry-run`: each run and whether it is finished; the expected time from finished runs."""
    finished = [run for run in sweep.runs if run.done]
    seconds = [sum(read_json(stage / "DONE").get("train_seconds", 0) for stage in run.folder.glob("round-*/*")
                   if (stage / "DONE").is_file()) for run in finished]
    lines = [f"{run.config.name}: {'finished' if run.done else 'to run'} ({run.folder})" for run in sweep.runs]
    left = len(sweep.runs) - len(finished)
    if seconds and left:
        lines.append(f"{left} runs left; finished runs trained for {statistics.fmean(seconds) / 60:.1f} min each "
                     f"on average, so about {left * statistics.fmean(seconds) / 60:.0f} min of training at 1 job")
    elif left:
        lines.append(f"{left} runs left; no run has finished yet to estimate their time from")
    return lines
