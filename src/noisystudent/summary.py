"""The run's summary: what summary.json holds and how it reads, on the console and in the report."""

from __future__ import annotations

from .runs import RoundPlan

ROUNDS_HEADER = ["round", "teacher -> student", "parameters", "pseudo-label acc (%)", "kept (%)",
                 "est. out of domain (%)", "teacher top-1 (%)", "student top-1 (%)"]
ROBUSTNESS_HEADER = ["model", "top-1 (%)", "mCE", "relative mCE", "mFR", "ECE"]


def round_summary(plan: RoundPlan, teacher_eval: dict, output_eval: dict, stats: dict) -> dict:
    """One row of summary.json: a round's teacher and model, its pseudo labels and selection."""
    student_eval = stats["student"]
    return {
        "round": plan.index, "teacher_model": plan.teacher_model, "student_model": plan.student_model,
        "teacher_parameters": teacher_eval["parameters"], "student_parameters": student_eval["parameters"],
        "pseudo_label_accuracy": stats["labels"]["pseudo_label_accuracy"],
        "undecodable": stats["labels"]["undecodable"],
        # a damaged shard lost an unknown number of samples, which no count above covers
        "damaged_shards": stats["labels"].get("damaged_shards", []),
        "kept_fraction": stats["selection"]["kept_fraction"],
        # the pool's out-of-domain share as the teacher's scores estimate it (labels/ood.py)
        "estimated_ood_share": stats["selection"].get("out_of_domain", {}).get("estimated_share"),
        "teacher_top1": teacher_eval["top1"], "student_top1": output_eval["top1"], "student_top5": output_eval["top5"],
        **({"before_finetune_top1": student_eval["top1"]} if plan.finetune is not None else {}),
    }


def describe_selection(stats: dict) -> str:
    """A selection stage in one line: where the pool's images went (each filter's count) and the
    estimated out-of-domain share with its 95% interval. Also the stats of a selection made before
    the out-of-domain reference (a finished run folder resumed): they count no drops apart and
    their estimate has no interval."""
    if "dropped_out_of_domain" in stats:
        dropped = (f"{stats['dropped_out_of_domain']} dropped as out of domain, "
                   f"{stats['dropped_low_confidence']} below the confidence threshold")
    else:
        dropped = f"{stats['pool'] - stats['kept']} dropped by the filters"
    line = (f"of {stats['pool']}: {dropped}, {stats['kept']} kept; "
            f"{stats['selected']} selected ({stats['selected'] - stats['unique']} as duplicate copies)")
    ood = stats.get("out_of_domain")
    if ood and ood.get("estimated_share") is not None:
        line += f"; est. out of domain {100 * ood['estimated_share']:.1f}%"
        if "interval" in ood:
            low, high = ood["interval"]
            line += f" [{100 * low:.1f}, {100 * high:.1f}]"
        line += f" ({ood['score']}), {ood['above']} flagged"
    return line


def robustness_summary(metrics: dict) -> dict:
    """The headline numbers of one eval.json: top1, mce, mfr, fgsm, pgd, ece."""
    keys = ("top1", "mce", "relative_mce", "mfr", "fgsm", "pgd", "ece")
    return {key: metrics.get(key) for key in keys}


def fraction(value: float | None, spec: str = ".4f") -> str:
    # relative mCE / mFR are undefined when the baseline's is 0 (e.g. a constant predictor never flips)
    return "n/a" if value is None else format(value, spec)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def rounds_rows(summary: dict) -> list[list[str]]:
    """One row per round under ROUNDS_HEADER."""
    return [[str(r["round"]), f"{r['teacher_model']} -> {r['student_model']}",
             f"{r['teacher_parameters']:,} -> {r['student_parameters']:,}", percent(r["pseudo_label_accuracy"]),
             percent(r["kept_fraction"]), percent(r.get("estimated_ood_share")), percent(r["teacher_top1"]),
             percent(r["student_top1"])]
            for r in summary["rounds"]]


def robustness_rows(teacher: dict, student: dict) -> list[list[str]]:
    """The round-0 teacher and the final model under ROBUSTNESS_HEADER."""
    return [[label, percent(m["top1"]), fraction(m.get("mce"), ".1f"), fraction(m.get("relative_mce"), ".1f"),
             fraction(m.get("mfr"), ".1f"), f"{m['ece']:.4f}"]
            for label, m in (("round-0 teacher", teacher), ("final student", student))]


def headline(summary: dict) -> str:
    teacher = f"Round-0 teacher {percent(summary['teacher_top1'])}%"
    if not summary["rounds"]:
        return f"{teacher} test top-1; rounds=0, so no student was trained."
    gain = 100 * (summary["final_top1"] - summary["teacher_top1"])
    return f"{teacher} -> final student {percent(summary['final_top1'])}% test top-1 ({gain:+.2f} points)."


def damage_warnings(summary: dict) -> list[str]:
    """One line per damaged pool shard a round labeled from: its lost samples are in no count."""
    return [f"round {r['round']}: {reason}" for r in summary["rounds"] for reason in r.get("damaged_shards", [])]


def format_summary(summary: dict) -> str:
    """The console's view: the rounds table, the headline and the robustness line."""
    if not summary["rounds"]:
        return headline(summary)
    rows = rounds_rows(summary)
    widths = [max(len(cell) for cell in column) for column in zip(ROUNDS_HEADER, *rows)]
    line = lambda cells: "  ".join(cell.ljust(width) for cell, width in zip(cells, widths))  # noqa: E731
    table = [line(ROUNDS_HEADER), line(["-" * w for w in widths]), *map(line, rows), headline(summary),
             *(f"warning: {warning}" for warning in damage_warnings(summary))]
    teacher, student = summary["robustness"]["teacher"], summary["robustness"]["student"]
    if student["mce"] is not None or student["mfr"] is not None:  # robustness was evaluated
        table.append(f"robustness (round-0 teacher = 100): final student mCE {fraction(student['mce'], '.1f')}, "
                     f"mFR {fraction(student['mfr'], '.1f')}; ECE {fraction(teacher['ece'], '.3f')} -> "
                     f"{fraction(student['ece'], '.3f')}")
    return "\n".join(table)
