"""The run report: `report.md` and a self-contained `report.html` (figures embedded), built
only from what the run wrote to disk (summary.json, eval.json, stats.json, metrics.jsonl and
the label store), so it can be rebuilt any time with `noisystudent report RUN_DIR`.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import UserError  # noqa: E402
from .io import atomic_write, read_json, write_text  # noqa: E402
from .runs import CONFIG, DONE, SUMMARY, round_indices, stage_dir, teacher_dir  # noqa: E402
from .summary import (ROBUSTNESS_HEADER, ROUNDS_HEADER, damage_warnings, describe_selection, headline,  # noqa: E402
                      robustness_rows, rounds_rows)


def _stages(run_dir: Path) -> list[Path]:
    """Training stages in order: round-0 teacher, then each round's student (and fine-tune)."""
    stages = [teacher_dir(run_dir)]
    for k in round_indices(run_dir):
        stages += [path for path in (stage_dir(run_dir, k, "student"), stage_dir(run_dir, k, "finetune"))
                   if (path / "eval.json").is_file()]
    return stages


def _save(figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(figure)
    return path


def plot_accuracy_per_round(summary: dict, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 3.2))
    rounds = [0] + [r["round"] for r in summary["rounds"]]
    accuracy = [summary["teacher_top1"]] + [r["student_top1"] for r in summary["rounds"]]
    axis.plot(rounds, [100 * a for a in accuracy], "o-", label="model of the round")
    axis.axhline(100 * summary["teacher_top1"], color="gray", ls="--", label="round-0 teacher")
    axis.set(xlabel="round (0 = supervised teacher)", ylabel="test top-1 (%)", title="Accuracy per round",
             xticks=rounds)
    axis.legend()
    return _save(figure, path)


def plot_corruption_errors(teacher: dict, student: dict, path: Path) -> Path:
    names = [n for n in teacher.get("corruption_errors", {}) if isinstance(teacher["corruption_errors"][n], list)]
    figure, axis = plt.subplots(figsize=(8, 3.4))
    x = np.arange(len(names))
    for offset, (label, metrics) in zip((-0.2, 0.2), (("round-0 teacher", teacher), ("final student", student))):
        errors = [100 * np.mean(metrics["corruption_errors"][n]) for n in names]
        axis.bar(x + offset, errors, width=0.4, label=label)
    axis.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=7)
    axis.set(ylabel="top-1 error (%), mean of severities", title="Corruption errors (ImageNet-C protocol)",
             ylim=(0, 119))
    axis.legend(loc="upper center", ncol=2)
    return _save(figure, path)


def plot_adversarial(teacher: dict, student: dict, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 3.2))
    for label, metrics, color in (("round-0 teacher", teacher, "C0"), ("final student", student, "C1")):
        for attack, style in (("fgsm", "o-"), ("pgd", "s--")):
            if attack in metrics:
                eps = [float(e) * 255 for e in metrics[attack]]
                axis.plot(eps, [100 * a for a in metrics[attack].values()], style, color=color,
                          label=f"{label}, {attack.upper()}")
    axis.set(xlabel="epsilon (x 1/255)", ylabel="accuracy (%)", title="Adversarial accuracy")
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_confidence_histogram(labels_dir: Path, threshold: float, path: Path) -> Path:
    from .labels import LabelStore

    confidence = LabelStore(labels_dir).column("confidence")
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.hist(confidence, bins=50, range=(0, 1), color="C2")
    axis.axvline(threshold, color="red", ls="--", label=f"threshold {threshold}")
    axis.set(xlabel="teacher confidence (max probability)", ylabel="images", yscale="log",
             title=f"Pseudo-label confidence ({labels_dir.parent.name})")
    axis.legend()
    return _save(figure, path)


def plot_selection_counts(stats: dict, classes: list[str] | None, path: Path) -> Path:
    per_class = stats["per_class"]
    names = [classes[c["class"]] if classes else str(c["class"]) for c in per_class]
    x = np.arange(len(per_class))
    kept_once = [c["selected"] - c["duplicated"] for c in per_class]
    figure, axis = plt.subplots(figsize=(8, 3.4))
    axis.bar(x, kept_once, label="kept")
    axis.bar(x, [c["duplicated"] for c in per_class], bottom=kept_once, label="duplicated")
    dropped = [c["dropped_low_confidence"] + c["dropped_over_target"] for c in per_class]
    axis.bar(x, dropped, bottom=[c["selected"] for c in per_class], label="dropped", color="lightgray")
    axis.axhline(stats["images_per_class"], color="black", ls=":", label="target per class")
    axis.set_xticks(x, names, fontsize=7, rotation=30)
    axis.set(ylabel="images", title="Selection per class (round 1)")
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_learning_curves(stages: list[Path], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.4))
    for stage in stages:
        lines = (stage / "metrics.jsonl").read_text().splitlines() if (stage / "metrics.jsonl").is_file() else []
        records = [json.loads(line) for line in lines if line]
        if records:
            axis.plot([r["step"] for r in records], [r["loss"] for r in records],
                      label=f"{stage.parent.name}/{stage.name}")
    axis.set(xlabel="step", ylabel="training loss", yscale="log", title="Learning curves")
    axis.legend(fontsize=7)
    return _save(figure, path)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def selection_notes(run_dir: Path) -> list[str]:
    """Per round: where the pool's images went and the estimated out-of-domain share
    (summary.describe_selection), then its warnings (a class whose copies are mostly suspect)."""
    notes = []
    for k in round_indices(run_dir):
        path = stage_dir(run_dir, k, "selection") / "stats.json"
        if path.is_file():
            stats = read_json(path)
            notes += [f"round {k}: {describe_selection(stats)}", *(f"warning (round {k}): {w}" for w in stats.get("warnings", []))]
    return notes


def build_report(run_dir: str | Path) -> dict[str, Path]:
    """Write report/ figures, report.md and report.html into the run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} not found; give a run's folder, runs_dir/<name> (e.g. runs/demo)")
    if not (run_dir / SUMMARY).is_file():
        raise UserError(f"{run_dir} has no {SUMMARY}; finish the run first (the same `run` command resumes it)")
    summary = read_json(run_dir / SUMMARY)
    config = (run_dir / CONFIG).read_text() if (run_dir / CONFIG).is_file() else ""
    stages = _stages(run_dir)
    teacher = read_json(stages[0] / "eval.json")
    student = read_json(stages[-1] / "eval.json")
    figures_dir = run_dir / "report"
    figures = {"accuracy per round": plot_accuracy_per_round(summary, figures_dir / "accuracy_per_round.png"),
               "learning curves": plot_learning_curves(stages, figures_dir / "learning_curves.png")}
    if "corruption_errors" in teacher and "corruption_errors" in student:
        figures["corruption errors"] = plot_corruption_errors(teacher, student, figures_dir / "corruption_errors.png")
        figures["adversarial accuracy"] = plot_adversarial(teacher, student, figures_dir / "adversarial.png")
    labels, selection = stage_dir(run_dir, 1, "labels"), stage_dir(run_dir, 1, "selection")
    if (selection / DONE).is_file():
        threshold = read_json(selection / DONE)["inputs"]["selection"]["confidence_threshold"]  # what it ran with
        figures["pseudo-label confidence"] = plot_confidence_histogram(labels, threshold,
                                                                       figures_dir / "confidence_histogram.png")
        classes = list(teacher.get("per_class_accuracy", {}))
        figures["selection per class"] = plot_selection_counts(read_json(selection / "stats.json"),
                                                               classes or None, figures_dir / "selection_per_class.png")
    tables = [("Rounds", ROUNDS_HEADER, rounds_rows(summary)),
              ("Robustness (baseline for mCE / mFR: the round-0 teacher = 100)", ROBUSTNESS_HEADER,
               robustness_rows(teacher, student))]

    warnings = damage_warnings(summary)
    notes = selection_notes(run_dir)
    markdown = [f"# Noisy Student run `{summary['name']}`", "", headline(summary), ""]
    if warnings:
        markdown += ["## Damaged pool shards", "", *(f"- {warning}" for warning in warnings), ""]
    for title, header, rows in tables:
        markdown += [f"## {title}", "", _markdown_table(header, rows), ""]
    if notes:
        markdown += ["## Selection", "", *(f"- {note}" for note in notes), ""]
    for title, path in figures.items():
        markdown += [f"## {title.capitalize()}", "", f"![{title}](report/{path.name})", ""]
    write_text(run_dir / "report.md", "\n".join(markdown))

    parts = [f"<h1>Noisy Student run <code>{html.escape(summary['name'])}</code></h1>", f"<p>{html.escape(headline(summary))}</p>"]
    if warnings:
        parts += ["<h2>Damaged pool shards</h2><ul>", *(f"<li>{html.escape(warning)}</li>" for warning in warnings),
                  "</ul>"]
    for title, header, rows in tables:
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
    if notes:
        parts += ["<h2>Selection</h2><ul>", *(f"<li>{html.escape(note)}</li>" for note in notes), "</ul>"]
    for title, path in figures.items():
        encoded = base64.b64encode(path.read_bytes()).decode()
        parts += [f"<h2>{html.escape(title.capitalize())}</h2>", f'<img alt="{html.escape(title)}" src="data:image/png;base64,{encoded}">']
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(config)}</pre>"]
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}img{max-width:100%}")
    write_text(run_dir / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>noisystudent "
                                        f"{html.escape(summary['name'])}</title><style>{style}</style></head><body>"
                                        + "".join(parts) + "</body></html>\n")
    return {"markdown": run_dir / "report.md", "html": run_dir / "report.html", **figures}
