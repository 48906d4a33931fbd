import dataclasses
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from noisystudent.cli import main
from noisystudent.pipeline import run
from noisystudent.report import build_report
from noisystudent.summary import ROUNDS_HEADER

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_report_builds_from_a_tiny_run_with_valid_figures_and_the_runs_numbers(tiny_config, capsys):
    # with the out-of-domain reference (opt-in: data.reference_fraction), so the report has its estimate
    tiny_config = dataclasses.replace(tiny_config, data=dataclasses.replace(tiny_config.data, reference_fraction=0.1))
    summary = run(tiny_config, log=lambda line: None)
    run_dir = Path(tiny_config.runs_dir) / tiny_config.name
    outputs = build_report(run_dir)
    figures = {name: path for name, path in outputs.items() if name not in ("markdown", "html")}
    assert set(figures) == {"accuracy per round", "learning curves", "corruption errors", "adversarial accuracy",
                            "pseudo-label confidence", "selection per class"}
    for path in figures.values():
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        with Image.open(path) as image:
            image.verify()
    markdown = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures), "the HTML is self-contained"
    round_row = next(line for line in markdown.splitlines() if line.startswith("| 1 |"))
    cells = [cell.strip() for cell in round_row.strip("|").split("|")]
    first = summary["rounds"][0]
    column = {name: cells[i] for i, name in enumerate(ROUNDS_HEADER)}
    assert float(column["teacher top-1 (%)"]) == pytest.approx(100 * first["teacher_top1"], abs=0.005)
    assert float(column["student top-1 (%)"]) == pytest.approx(100 * first["student_top1"], abs=0.005)
    assert float(column["est. out of domain (%)"]) == pytest.approx(100 * first["estimated_ood_share"], abs=0.005)
    assert float(cells[3]) == pytest.approx(100 * first["pseudo_label_accuracy"], abs=0.005)
    student_eval = json.loads((run_dir / "round-1" / "student" / "eval.json").read_text())
    student_row = next(line for line in markdown.splitlines() if line.startswith("| final student |"))
    mce = float(student_row.strip("|").split("|")[2])
    assert mce == pytest.approx(student_eval["mce"], abs=0.05)
    assert re.search(rf"{100 * summary['final_top1']:.2f}", html)
    assert main(["report", str(run_dir)]) == 0 and "report.html" in capsys.readouterr().out
    stats_path = run_dir / "round-1" / "selection" / "stats.json"
    stats = json.loads(stats_path.read_text())
    assert f"- round 1: of {stats['pool']}: {stats['dropped_out_of_domain']} dropped as out of domain" in markdown
    stats["warnings"] = ["class 3: 80% of its 40 selected copies score out of domain"]  # a class mostly suspect
    stats_path.write_text(json.dumps(stats))
    build_report(run_dir)
    assert "- warning (round 1): class 3: 80%" in (run_dir / "report.md").read_text()
    assert "<li>warning (round 1): class 3: 80%" in (run_dir / "report.html").read_text()


def test_report_of_an_unfinished_run_says_what_to_do(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "finish the run first" in capsys.readouterr().err
