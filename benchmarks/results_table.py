"""The result tables of README.md and docs/, rendered from the committed JSON under benchmarks/results/.

    python benchmarks/results_table.py           # print every block
    python benchmarks/results_table.py --write   # replace each block in its file

Each block sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` in its file (BLOCKS). A test
keeps every block equal to this rendering, so every number quoted there comes from a committed
result file. A new result is a function returning its lines, added to its block in BLOCKS (the
README's headline table takes a row function in HEADLINE_ROWS).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "src"))

from noisystudent.provenance import UNRECORDED  # noqa: E402
from noisystudent.sweep import mean_std as mean_std_over_seeds  # noqa: E402


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def link(name: str) -> str:
    """A committed result's link, marked where its numbers are not one clean commit's: made from a
    checkout with uncommitted changes (`dirty`), or from runs of several commits (`run_commits`)."""
    result = load(name)
    marks = (["made with uncommitted changes"] if result.get("dirty") else []) + (
        [f"runs of {len(result['run_commits'])} commits"] if len(result.get("run_commits", [])) > 1 else [])
    return f"[{name}.json](benchmarks/results/{name}.json)" + "".join(f" ({mark})" for mark in marks)


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def mean_std(summary: dict) -> str:
    """A mean and sample std over seeds (fractions) as points: '87.42 ± 0.31', or '87.42' for one seed."""
    return f"{100 * summary['mean']:.2f}" + (f" ± {100 * summary['std']:.2f}" if summary["std"] is not None else "")


def pair(entry: dict) -> dict | None:
    """A variant's paired difference against the reference, unless one of its pairs has a run
    without a machine fingerprint (such runs pair with none: sweep.summarize; a result written
    before that rule may still hold one). Carried rows have no per-seed machines: they were paired
    against their own reference row, named beside them."""
    machines = dict(zip(entry["seeds"], entry.get("machine_by_seed", [])))
    if any(machines.get(seed) == UNRECORDED for seed in entry.get("paired_seeds", [])):
        return None
    return entry.get("vs_reference")


def paired_difference(paired: dict | None) -> str:
    """A paired difference against the reference as signed points, '-' where there is no pair."""
    if not paired:
        return "-"
    return f"{100 * paired['mean']:+.2f}" + (f" ± {100 * paired['std']:.2f}" if paired["std"] is not None else "")


LOOP_SETTINGS = {"no_augmentation_prefetch0": "without augmentation, batches built on demand",
                 "no_augmentation_prefetch2": "prefetching 2",
                 "randaugment_prefetch0": "with crop, flip and RandAugment, on demand",
                 "randaugment_prefetch2": "prefetching 2"}


# What the paper's ablation study found for each variant, against the full method (Xie et al.
# 2020, its ablation section and appendix), and what it implies for "variant minus full":
# -1 = worse than full, +1 = better, CLOSE = no clear difference, 0 = no claim.
CLOSE = "close"
PAPER_FINDINGS = {
    "no-noise": ("noise is essential: students without it gain far less", -1),
    "no-randaugment": ("removing each noise source hurts", -1),
    "no-dropout": ("removing each noise source hurts", -1),
    "no-stochastic-depth": ("removing each noise source hurts", -1),
    # our pool is in domain (Fashion-MNIST's own images), where the paper finds the two close;
    # soft labels are better out of domain (the out-of-domain sweep below)
    "hard-labels": ("in domain, hard and soft labels are close", CLOSE),
    "ratio-1": ("not the paper's setting: the same passes over the pool, so 3x the steps", 0),
    "ratio-7": ("not the paper's setting: the same passes over the pool, so 3/7 of the steps", 0),
    "ratio-1-same-steps": ("a larger unlabeled batch ratio helps", -1),
    "ratio-7-same-steps": ("a larger unlabeled batch ratio helps", +1),
    "threshold-0": ("filtering low-confidence images helps", -1),
    "threshold-0.7": ("0.3 is the paper's choice; no claim for 0.7", 0),
    "rounds-1": ("iterating helps: each round gains", -1),
    "rounds-3": ("iterating helps: each round gains", +1),
    "equal-student": ("an equal-or-larger student; larger gains more", -1),
    "teacher-noised-training": ("not ablated in the paper; the official code trains the teacher noised", 0),
    "teacher-noised-labeling": ("a teacher that labels with noise on hurts", -1),
}


def verdict(paired: dict | None, direction: int | str) -> str:
    """Agreement of our paired difference with the paper's finding (its sign, or no clear
    difference), and whether it is more than two standard errors from 0."""
    if not paired:
        return "no pair on one machine yet"
    if paired["std"] is None:
        return "1 seed: no spread yet"
    standard_error = paired["std"] / paired["n"] ** 0.5
    clear = abs(paired["mean"]) > 2 * standard_error
    if direction == 0:
        return "no claim to test" + (" (a clear difference)" if clear else "")
    if direction == CLOSE:
        return "disagrees (> 2 SE)" if clear else "agrees (within 2 SE)"
    agrees = (paired["mean"] > 0) == (direction > 0)
    return f"{'agrees' if agrees else 'disagrees'}{' (> 2 SE)' if clear else ' (within 2 SE)'}"


def sweep_status(table: dict) -> str:
    """"complete", or how many runs are finished, how many more the sweep needs made and how many
    pairs it still lacks (a made run lacks its pair until the reference runs on its machine)."""
    done = sum(len(entry["seeds"]) for variant, entry in table["variants"].items()
               if not variant.startswith(f"{table['reference']} ("))  # a carried reference repeats runs
    if not table["partial"]:
        return f"complete, {done} runs"
    return (f"PARTIAL: {done} run{'s' * (done != 1)} finished, {sum(table['to_make'].values())} more to make, "
            f"{sum(table['missing'].values())} pairs missing")


def carried_note(table: dict) -> str:
    """Where a sweep's result keeps variants from earlier runs (sweep_table.py --carry-from)."""
    carried = [variant for variant in table.get("carried", {}).get("variants", [])
               if not variant.startswith(f"{table['reference']} (")]
    if not carried:
        return ""
    return (f"; {', '.join(carried)} carried from earlier runs at commit `{table['carried']['from_commit'][:7]}` "
            f"on another machine")


def ablation_lines() -> list[str]:
    table = load("paper_ablations")
    reference = table["reference"]
    lines = ["", f"The paper's ablations at the quick demo's scale (`configs/sweeps/paper-ablations.yaml`: 500 labels, "
                 f"a 4,000-image pool, 2 rounds), {sweep_status(table)} "
                 f"({link('paper_ablations')}, runs made at commit "
                 f"`{(table['runs_made_with_commit'] or table['commit'])[:7]}` and later{carried_note(table)}). "
                 f"Final test top-1, mean ± sample std over seeds; paired difference against `{reference}` on the same "
                 f"seed, each pair made on one machine (the same seed gives other numbers on another CPU, so "
                 f"`{reference}` runs again on each machine a sweep continues on):", "",
             f"| variant | seeds | final top-1 (%) | vs {reference} (points) | the paper | we |", "|---|---|---|---|---|---|"]
    footnotes = {}
    for variant, entry in table["variants"].items():
        final, paired = entry["final_top1"], pair(entry)
        difference = paired_difference(paired)
        against = entry.get("paired_against")
        if paired and against and against != reference:
            difference += footnotes.setdefault(against, "†" * (len(footnotes) + 1))
        finding, direction = PAPER_FINDINGS.get(variant.split(" (earlier runs")[0], ("the reference", 0))
        lines.append(f"| {variant} | {len(entry['seeds'])} | {mean_std(final)} | {difference} | "
                     f"{finding} | {'-' if variant.startswith(reference) and not paired else verdict(paired, direction)} |")
    lines += [""] + [f"{mark} paired against `{row}`: that machine's own runs of the reference." for row, mark in footnotes.items()]
    return lines if footnotes else lines[:-1]


def out_of_domain_lines() -> list[str]:
    table = load("out_of_domain")
    status = sweep_status(table)
    lines = ["", f"Out-of-domain pool: the quick demo (one round) with rendered characters as 20% of the pool "
                 f"(`configs/sweeps/out-of-domain.yaml`), {status} "
                 f"({link('out_of_domain')}). Out-of-domain images kept by the "
                 f"filters (of the pool's), their share of the student's pseudo-labeled set, the share the teacher's "
                 f"energy estimates, and the final top-1 with its paired difference against `soft`:", "",
             "| variant | seeds | OOD kept | OOD share of selection | estimated OOD share | final top-1 (%) | vs soft (points) |",
             "|---|---|---|---|---|---|---|"]
    for variant, entry in table["variants"].items():
        selection, final, paired = entry["selection"], entry["final_top1"], pair(entry)
        difference = paired_difference(paired)
        lines.append(f"| {variant} | {len(entry['seeds'])} | {selection['ood_kept']:.0f} of {selection['ood_in_pool']:.0f} "
                     f"| {100 * selection['ood_share_of_selection']:.1f}% | {100 * selection['estimated_ood_share']:.1f}% "
                     f"| {mean_std(final)} | {difference} |")
    return lines


def rounds_table_lines(name: str, intro: str) -> list[str]:
    """A sweep's result as its teacher, each round and the paired difference against the reference,
    for the sweeps whose question is how far a setting goes rather than a claim of the paper."""
    if not (RESULTS / f"{name}.json").is_file():
        return []
    table = load(name)
    reference = table["reference"]
    rounds = max(len(entry["rounds"]) for entry in table["variants"].values())
    if reference in table["variants"]:
        pairs, column = (f"and the final model's paired difference against `{reference}` on the same seeds (pairs made "
                         f"on one machine)"), [f"vs {reference} (points)"]
    else:  # nothing to pair with: no column of empty cells
        pairs, column = f"no paired differences: no run of the reference `{reference}` has finished", []
    row = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    lines = ["", f"{intro}, {sweep_status(table)} ({link(name)}); top-1 (%), mean ± sample std over seeds, {pairs}:", "",
             row(["variant", "seeds", "teacher", *(f"round {k}" for k in range(1, rounds + 1)), *column]),
             "|---|---|---|" + "---|" * (rounds + len(column))]
    for variant, entry in table["variants"].items():
        cells = [mean_std(summary) for summary in entry["rounds"]] + ["-"] * (rounds - len(entry["rounds"]))
        cells += [paired_difference(pair(entry))] * len(column)
        lines.append(row([variant, str(len(entry["seeds"])), mean_std(entry["teacher_top1"]), *cells]))
    return lines


def demo_seeds_lines() -> list[str]:
    """The demo's seeds against the 90% target and each machine's scaled budget."""
    if not (RESULTS / "demo_seeds.json").is_file():
        return []
    table = load("demo_seeds")
    state = (f"PARTIAL: {len(table['seeds'])} of {table['seeds_wanted']} seeds" if table["partial"]
             else f"{len(table['seeds'])} seeds")
    rounds = max(len(entry["rounds"]) for entry in table["seeds"].values())
    lines = ["", f"The demo against its target ({pct(table['target_top1'])} as the mean of {table['seeds_wanted']} seeds, "
                 f"each run within {table['budget_minutes_on_reference']:.0f} min scaled by the reference workload's speed), "
                 f"{state}, with `{' '.join(table['overrides']) or 'configs/demo.yaml as it is'}` "
                 f"({link('demo_seeds')}, "
                 f"[demo_seeds.png](benchmarks/results/demo_seeds.png)):", "",
             "| seed | precision | teacher | " + "".join(f"round {k} | " for k in range(1, rounds + 1))
             + "stage minutes | budget here | reference img/s before / after |",
             "|---|---|---|" + "---|" * rounds + "---|---|---|"]
    for seed, entry in table["seeds"].items():
        lines.append(f"| {seed} | {entry['provenance']['machine']['precision']} | {pct(entry['teacher_top1'])} | "
                     + "".join(f"{pct(top1)} | " for top1 in entry["rounds"])
                     + f"{entry['stage_minutes']:.1f} | {entry['budget_minutes']:.1f} | "
                       f"{entry['reference_images_per_second']['before']:.0f} / {entry['reference_images_per_second']['after']:.0f} |")
    lines += ["", f"Final top-1 {mean_std(table['final_top1'])} (%) over {table['final_top1']['n']} seed(s); "
                  f"every run within its budget: {'yes' if table['all_within_budget'] else 'no'}; "
                  f"target met: {'yes' if table['target_met'] else 'no'}."]
    return lines


def best_supervised_sentence(demo: dict) -> str:
    """The supervised-baseline sweep's best teacher and the demo's gains against it: with more
    augmentation and a longer schedule, supervised training alone is a stronger baseline than
    the flat plain teacher."""
    table = load("supervised_baseline")
    name, best = max(table["variants"].items(), key=lambda item: item[1]["teacher_top1"]["mean"])
    n = best["teacher_top1"]["n"]
    return (f"Supervised training alone goes further with the student's noise and a longer schedule: the best "
            f"variant of the ResNet supervised-baseline sweep below, `{name}`, "
            f"reaches {mean_std(best['teacher_top1'])}% over {n} seed{'s' * (n > 1)}. Against it this demo "
            f"gains {100 * (demo['final_top1'] - best['teacher_top1']['mean']):+.2f} points (unpaired: other seeds "
            f"and machines).")


def plan_line(name: str, plan: dict) -> str:
    planned = " ".join([plan["config"], *plan.get("overrides", [])])
    return (f"- `noisystudent plan` against the run it planned (`{planned}`, a fresh run on this machine): "
            f"{plan['estimated_total_seconds']:.0f} s estimated for {plan['measured_total_seconds']:.0f} s of stages "
            f"(ratio {plan['total_ratio']:.2f}); by stage: "
            + ", ".join(f"{s['stage']} {s['ratio']:.2f}" for s in plan["stages"] if s["ratio"] is not None)
            + f"; {plan['stages_within_30_percent']} of {plan['stages_total']} stages within 30% "
            f"({link(name)})." + (f" Caveat: {plan['judged_its_own_fit']}." if "judged_its_own_fit" in plan else ""))


def results_lines() -> list[str]:
    """docs/results.md: every benchmark's table but the paper's claims, which docs/paper-fidelity.md holds."""
    demo, robust, shorter = load("demo"), load("robustness"), load("demo_student_7_epochs")
    sweep, ddp = load("teacher_sweep"), load("ddp_overhead")
    select, label = load("select_scale"), load("label_throughput")
    loop, memory, precision = load("loop_overhead"), load("labeled_memory"), load("cpu_precision")
    small, large = sorted(memory["sizes"], key=int)
    lines = [
        f"The demo before AirNet (`configs/demo-resnet.yaml`): Fashion-MNIST, 1,000 labels (100 per class), the "
        f"other 59,000 training images unlabeled, seed {demo['seed']}, one run on {demo['machine']['cpu_count']} CPU cores "
        f"(commit `{demo['commit'][:7]}`, {link('demo')}):",
        "",
        "| model | params | pseudo-label acc. | top-1 |",
        "|---|---|---|---|",
        f"| round-0 teacher `{demo['rounds'][0]['teacher_model']}` | {demo['rounds'][0]['teacher_parameters'] / 1e6:.2f}M "
        f"| - | {pct(demo['teacher_top1'])} |",
    ]
    for r in demo["rounds"]:
        lines.append(f"| round-{r['round']} student `{r['student_model']}` | {r['student_parameters'] / 1e6:.2f}M "
                     f"| {pct(r['pseudo_label_accuracy'])} | {pct(r['student_top1'])} |")
    lines += [
        "",
        f"Final student {demo['gain_points']:+.2f} points over the teacher, the whole run (training, labeling, "
        f"evaluation with robustness, report) in {demo['wall_seconds'] / 60:.1f} min (our target: +3.0 points "
        f"within 45 min). With 7 student epochs instead of 14 (commit `{shorter['commit'][:7]}`, "
        f"{link('demo_student_7_epochs')}): "
        f"{pct(shorter['final_top1'])}, {shorter['gain_points']:+.2f} points, in {shorter['wall_seconds'] / 60:.1f} min.",
        "",
        "The demo's plain teacher is converged: trained alone for several schedules, its test "
        f"top-1 is flat ({link('teacher_sweep')}: "
        + ", ".join(f"{r['teacher_epochs']} epochs {pct(r['teacher_top1'])}" for r in sweep["runs"])
        + f"); against the best of them the final student gains "
        f"{100 * (demo['final_top1'] - max(r['teacher_top1'] for r in sweep['runs'])):+.2f} points. "
        f"Choosing among them on the test set can only favour the teacher. {best_supervised_sentence(demo)}",
        "",
        f"Robustness, round-0 teacher = 100 for mCE and mFR, on {robust['images']} test images "
        f"({link('robustness')}):",
        "",
        "| | top-1 | mCE | mFR | FGSM at eps " + " / ".join(f"{round(float(k) * 255)}/255" for k in list(robust["teacher"]["fgsm"])[1:3])
        + " | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for who in ("teacher", "student"):
        m = robust[who]
        fgsm = " / ".join(pct(v) for v in list(m["fgsm"].values())[1:3])
        lines.append(f"| {who} | {pct(m['top1'])} | {m['mce']:.1f} | {m['mfr']:.1f} | {fgsm} | {m['ece']:.3f} |")
    big = max(select["runs"], key=lambda r: (r["n_images"], r["mode"]))
    by_mode = {r["mode"]: r for r in select["runs"] if r["n_images"] == big["n_images"]}
    lines += [
        "",
        f"Scale and systems ({link('select_scale')}, "
        f"{link('label_throughput')}, "
        f"{link('ddp_overhead')}):",
        "",
        f"- Selection over a synthetic store of {big['n_images']:,} images x {select['classes']} classes (top-{select['top_k']}): "
        + "; ".join(f"{mode} {r['seconds']:.1f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB "
                    f"({r['import_rss_bytes'] / 2**30:.2f} GiB of it the imports)" for mode, r in by_mode.items())
        + "; time ratio to the smallest store: "
        + ", ".join(f"{mode} {ratio}" for mode, ratio in select["time_ratio_largest_to_smallest"].items()) + ".",
        f"- Store size: {select['storage'][str(big['n_images'])]['bytes_per_image']} bytes per image at "
        f"{select['classes']} classes against {select['storage'][str(big['n_images'])]['official_fp32_bytes_per_image']:,} "
        f"for the official fp32 vector.",
        f"- Labeling runs at {label['ratio']:.2f}x the images/s of a bare `model(x)` loop over the same tensors "
        f"({label['model']}, batch {label['batch_size']}); the folder source decodes "
        + ", ".join(f"{rate:.0f} {kind.upper()}/s" for kind, rate in label["decode_images_per_second"].items())
        + " in one thread; labeling a JPEG folder with `data.decode_threads=2` runs at "
        f"{label['decode_threads_speedup']:.2f}x the images/s of decoding inline (images/s by threads: "
        + ", ".join(f"{t}: {rate:.0f}" for t, rate in label["folder_label_images_per_second"].items()) + ").",
        f"- DDP on this CPU, 1 thread per process at {ddp['batch_per_process']} labeled images per process and step, "
        f"medians of {ddp['repeats']} repeats: each of 2 gloo processes trains at "
        f"{ddp['settings']['teacher']['ratio_2_to_1']:.2f}x the images/s of one process alone (the demo's teacher), "
        f"{ddp['settings']['noised_teacher']['ratio_2_to_1']:.2f}x with RandAugment on (each rank augments only its "
        f"own rows); two independent processes at once run at {ddp['settings']['teacher']['ratio_independent_to_1']:.2f}x "
        f"and {ddp['settings']['noised_teacher']['ratio_independent_to_1']:.2f}x, so DDP's gradient all-reduce, "
        f"sharing each process's one core, costs the rest; a checkpoint of "
        f"`{ddp['checkpoint']['model']}` is {ddp['checkpoint']['bytes'] / 1e6:.1f} MB, saved in "
        f"{1000 * ddp['checkpoint']['save_seconds']:.0f} ms and loaded in {1000 * ddp['checkpoint']['load_seconds']:.0f} ms.",
        f"- The training loop against a bare PyTorch loop on batches made in advance ({loop['model']}, "
        f"{loop['batch']['labeled']} + {loop['batch']['unlabeled']} images a step, same threads): "
        + "; ".join(f"{LOOP_SETTINGS[name]} {entry['ratio']:.2f}x" for name, entry in loop["settings"].items())
        + f" ({link('loop_overhead')}).",
        f"- bf16 autocast against fp32 on this CPU ("
        + ("with native bf16 units, so `precision=auto` takes bf16; " if precision["cpu_bf16"]["avx512_bf16"]
           or precision["cpu_bf16"]["amx"] else "without bf16 units, so `precision=auto` stays fp32; ")
        + f"{precision['batch']['labeled']} + {precision['batch']['unlabeled']} images a step with RandAugment, medians of "
        f"{precision['repeats']} paired repeats): "
        + "; ".join(f"{name} training {entry['training']['bf16_speedup']:.2f}x, labeling "
                    f"{entry['labeling']['bf16_speedup']:.2f}x" for name, entry in precision["models"].items())
        + f" ({link('cpu_precision')}).",
        f"- Memory: a short training stage on a labeled folder of {int(small):,} images peaks at "
        f"{memory['sizes'][small]['peak_rss_mb_cached']:.0f} MB, on {int(large):,} images at "
        f"{memory['sizes'][large]['peak_rss_mb_cached']:.0f} MB (+{memory['growth_mb_cached']:.0f} MB; while decoding "
        f"into the cache: +{memory['growth_mb_decoding']:.0f} MB); the {int(large):,} images take "
        f"{memory['sizes'][large]['cache_bytes'] / 2**20:.0f} MiB of cache on disk "
        f"({link('labeled_memory')}).",
    ]
    lines += [plan_line(name, load(name)) for name in ("plan_accuracy", "plan_accuracy_demo", "plan_accuracy_finetune")
              if (RESULTS / f"{name}.json").is_file()]
    lines += speed_lines()
    lines += demo_seeds_lines()
    lines += margin_lines()
    lines += rounds_table_lines("supervised_plateau", "The supervised plateau the AirNet demo must beat "
                                "(`configs/sweeps/supervised-plateau.yaml`: its round-0 teacher alone on the same 1,000 "
                                "labels, noised as in the demo, longer and longer, at both of its AirNets)")
    lines += rounds_table_lines("demo_noise", "The demo with lighter model noise and longer students "
                                "(`configs/sweeps/demo-noise.yaml`; compare each seed with the seeds table's, the same "
                                "labels at 1 thread)")
    lines += rounds_table_lines("scarce_labels", "Where labels are scarce (`configs/sweeps/scarce-labels.yaml`: the demo "
                                "with 10 labels per class against its teacher trained alone for 1x, 4x and 8x the "
                                "demo teacher's images; a negative difference is the method's lead)")
    lines += rounds_table_lines("student_ceiling_airnet", "What an AirNet demo student could reach with perfect "
                                "labels (`configs/sweeps/student-ceiling-airnet.yaml`: its model on all 60,000 true "
                                "labels, for the images one demo student sees, noised as the students are)")
    lines += ["", "The ResNet demo (`configs/demo-resnet.yaml`), measured before AirNet:"]
    lines += rounds_table_lines("supervised_baseline", "The supervised baseline the ResNet demo's gain was measured "
                                "against (`configs/sweeps/supervised-baseline.yaml`: the round-0 teacher alone on the "
                                "same 1,000 labels, with and without the student's noise, at both of the demo's "
                                "architectures, longer schedules and EMA)")
    lines += rounds_table_lines("demo_levers", "Levers toward 90% on the ResNet demo (`configs/sweeps/demo-levers.yaml`: "
                                "the demo's own scale, each variant's changes in its comment there)")
    lines += rounds_table_lines("student_ceiling", "What a ResNet demo student could reach with perfect labels "
                                "(`configs/sweeps/student-ceiling.yaml`: its model on all 60,000 true labels, for the "
                                "images one demo student sees; not the method, its upper bound at the demo's minutes)")
    return lines


def speed_lines() -> list[str]:
    """Test top-1 against reference-scaled minutes per training recipe, on all 60,000 true labels."""
    if not (RESULTS / "speed_to_accuracy.json").is_file():
        return []
    table = load("speed_to_accuracy")
    lines = ["", f"How much each recipe learns per CPU minute: supervised on all 60,000 true labels, one run per "
                 f"schedule length, minutes of training scaled to the reference machine "
                 f"({'PARTIAL' if table['partial'] else 'complete'}, "
                 f"{link('speed_to_accuracy')}; top-1 (%), mean ± sample "
                 f"std where a schedule ran {len(table['final_seeds'])} seeds):", "",
             "| recipe | " + " | ".join(f"{epochs} epochs" for epochs in table["schedule_epochs"])
             + f" | minutes to {pct(table['target_top1'])} |",
             "|---|" + "---|" * len(table["schedule_epochs"]) + "---|"]
    for name, recipe in table["recipes"].items():
        by_epochs = {point["epochs"]: point for point in recipe["curve"]}
        cells = [f"{mean_std({'mean': point['top1'], 'std': point['top1_std']})} in {point['scaled_minutes']:.1f} min"
                 if (point := by_epochs.get(epochs)) else "-" for epochs in table["schedule_epochs"]]
        reached = recipe["minutes_to_93"]
        lines.append(f"| `{name}` ({recipe['about']}) | " + " | ".join(cells)
                     + f" | {'not reached' if reached is None else f'{reached:.1f}'} |")
    return lines


def margin_lines() -> list[str]:
    """The method's final students against the supervised plateau, paired by seed, at the demo's
    labels and where labels are scarce."""
    if not (RESULTS / "method_margin.json").is_file():
        return []
    return ["", *margin_sentences(load("method_margin"))]


def margin_sentences(margin: dict) -> list[str]:
    per_class = load("demo_seeds")["config"]["data"]["labels_per_class"]
    lines = [margin_sentence(margin, f"With the demo's {10 * per_class:,} labels", link("method_margin"))]
    if "scarce_labels" in margin:
        lines += ["", margin_sentence(margin["scarce_labels"], "Where labels are scarce, 10 per class",
                                      f"{link('method_margin')}, {link('scarce_labels')}")]
    return lines


def margin_sentence(margin: dict, setting: str, links: str) -> str:
    """One setting's paired margin: both arms over the paired seeds, the margin with its standard
    error against the target, and the verdict."""
    pairs = margin["pairs"]
    if not pairs:
        return f"{setting}: no seed has both the method and a supervised schedule yet ({links})."
    spread = "" if margin["margin_se"] is None else f" ± {margin['margin_se']:.2f} (standard error)"
    verdict = ("the method pays: the margin meets the target and is more than 2 standard errors above zero" if margin["target_met"]
               else "not yet shown to pay by the target margin")
    return (f"{setting}, paired by seed over {len(pairs)} seed{'s' * (len(pairs) > 1)}"
            f"{' (PARTIAL)' if margin['partial'] else ''}: the demo's final student reaches "
            f"{mean_std(margin['final_top1'])}% against {mean_std(margin['supervised_top1'])}% for the best "
            f"supervised schedule, `{margin['baseline_variant']}`, a margin of {margin['margin_mean']:+.2f}{spread} points "
            f"(target {margin['target_points']:+.1f}); {verdict} ({links}).")


def parity_lines() -> list[str]:
    """docs/paper-fidelity.md: where our formulas differ from the official code's."""
    parity = load("official_parity")
    kinds = {kind: sum(r["match"] and r["kind"] == kind for r in parity["rows"]) for kind in ("formula", "setting")}
    return [
        f"`benchmarks/official_parity.py` re-derives each official formula from its source and compares it with ours "
        f"on a hand-made case ({link('official_parity')}, commit "
        f"`{parity['commit'][:7]}`): {parity['matched']} of {parity['rows_total']} rows match (RandAugment at M=27, "
        f"RMSProp, the schedule, EMA, BatchNorm, weight decay, loss weighting, dropout, the paper preset, mCE); "
        f"{kinds['formula']} of the matches compute ours and re-derive the official formula, {kinds['setting']} only "
        f"compare one of our settings with the official constant. The others:",
        "",
        "| item | ours | official code | why |",
        "|---|---|---|---|",
    ] + [f"| {r['item']} | {r['ours']} | {r['official']} | {r['why']} |" for r in parity["rows"] if not r["match"]]


# ---------------------------------------------------------------------------------------------
# README's headline: teacher, students, the supervised baseline and the ceiling, over seeds


def demo_rows() -> list[tuple[str, str, dict]]:
    """The demo's teacher and each round's student over the seeds of demo_seeds.json."""
    table = load("demo_seeds")
    models, seeds = table["config"]["models"], list(table["seeds"].values())
    noised = ", noised" if table["config"]["noise"]["teacher"] else ""
    rows = [(f"teacher `{models[0]}`", f"the labeled images alone{noised}",
             mean_std_over_seeds([entry["teacher_top1"] for entry in seeds]))]
    rows += [(f"student round {k} `{models[k]}`", "labeled images + the previous model's pseudo labels, noised",
              mean_std_over_seeds([entry["rounds"][k - 1] for entry in seeds])) for k in range(1, len(models))]
    return rows


def supervised_rows() -> list[tuple[str, str, dict]]:
    """The supervised plateau's best variant among those with the most seeds, and its best overall
    (what each variant changes: its sweep file)."""
    table = load("supervised_plateau")
    variants = table["variants"]
    most_seeds = max(entry["teacher_top1"]["n"] for entry in variants.values())
    best = lambda names: max(names, key=lambda name: variants[name]["teacher_top1"]["mean"])  # noqa: E731
    shown = dict.fromkeys([best([name for name, entry in variants.items() if entry["teacher_top1"]["n"] == most_seeds]),
                           best(variants)])
    return [(f"supervised `{name}`", f"the labeled images alone (`{table['sweep_file']}`)",
             variants[name]["teacher_top1"]) for name in shown]


def ceiling_rows() -> list[tuple[str, str, dict]]:
    table = load("student_ceiling_airnet")
    reference = table["reference"]
    return [(f"ceiling `{reference}`", "all 60,000 training images with their true labels: the bound",
             table["variants"][reference]["teacher_top1"])]


HEADLINE_ROWS = (demo_rows, supervised_rows, ceiling_rows)


def headline_lines() -> list[str]:
    seeds = load("demo_seeds")
    demo_final = seeds["final_top1"]["mean"]
    minutes = [entry["stage_minutes"] for entry in seeds["seeds"].values()]
    per_class = seeds["config"]["data"]["labels_per_class"]
    lines = [f"Fashion-MNIST, {10 * per_class:,} labels ({per_class} per class), the other {60_000 - 10 * per_class:,} "
             f"training images as the unlabeled pool; top-1 on the test set, mean ± sample std over seeds "
             f"({link('demo_seeds')}, {link('supervised_plateau')}, {link('student_ceiling_airnet')}):", "",
             "| model | trained on | seeds | top-1 (%) |", "|---|---|---|---|"]
    lines += [f"| {model} | {trained_on} | {summary['n']} | {mean_std(summary)} |"
              for row_function in HEADLINE_ROWS for model, trained_on, summary in row_function()]
    settings = f"with `{' '.join(seeds['overrides'])}`" if seeds["overrides"] else "as it is, what `make demo` runs"
    lines += ["", f"The demo rows ran `configs/demo.yaml` {settings}, each seed in {min(minutes):.1f} to "
                  f"{max(minutes):.1f} min of stages at 1 thread on one core (budget "
                  f"{seeds['budget_minutes_on_reference']:.0f} min on the reference machine; within it: "
                  f"{'yes' if seeds['all_within_budget'] else 'no'}). The final student ends "
                  f"{100 * (demo_final - seeds['teacher_top1_mean']):+.2f} points above its teacher.",
              "", *margin_sentences(load("method_margin"))]
    return lines


# ---------------------------------------------------------------------------------------------
# The blocks and their files

PAPER_FIDELITY = ROOT / "docs" / "paper-fidelity.md"
BLOCKS = {  # name: (the file holding it, its lines)
    "headline": (README, headline_lines),
    "results": (ROOT / "docs" / "results.md", results_lines),
    "ablations": (PAPER_FIDELITY, ablation_lines),
    "out-of-domain": (PAPER_FIDELITY, out_of_domain_lines),
    "parity": (PAPER_FIDELITY, parity_lines),
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def render(name: str) -> str:
    """A block's Markdown; links to the results are written from its file's folder."""
    path, lines = BLOCKS[name]
    text = "\n".join(lines()).strip()
    return text.replace("](benchmarks/", f"]({'../' * len(path.relative_to(ROOT).parent.parts)}benchmarks/")


def block_in(text: str, name: str) -> str:
    start, end = markers(name)
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def replace_block(text: str, name: str, block: str) -> str:
    start, end = markers(name)
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{block}\n{end}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace each block in its file")
    args = parser.parse_args()
    for name, (path, _) in BLOCKS.items():
        block = render(name)
        if args.write:
            path.write_text(replace_block(path.read_text(), name, block))
            print(f"wrote the {name} block of {path.relative_to(ROOT)}")
        else:
            print(f"{markers(name)[0]}  ({path.relative_to(ROOT)})\n{block}\n")


if __name__ == "__main__":
    main()
