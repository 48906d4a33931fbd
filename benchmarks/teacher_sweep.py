"""How the demo's teacher schedule was chosen: the round-0 teacher alone (demo config, 1,000
labels, weak augmentation, no noise) trained for several epoch counts; test top-1 per count.

    python benchmarks/teacher_sweep.py 100,200,300      # ~12 min on 2 cores

A fair baseline is a converged one: the demo uses the count after which test accuracy stops
improving. Choosing it on the test set favours the teacher, which makes the student's gain a
conservative figure. The runs are a sweep (noisystudent.sweep: <runs-dir>/sweeps/teacher-sweep/,
a variant `teacher<epochs>` per count; an interrupted one resumes); `seconds` is each run's
stages' time. Writes benchmarks/results/teacher_sweep.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, stage_seconds, write_result  # noqa: E402

from noisystudent.cli import resolve_config  # noqa: E402
from noisystudent.io import read_json  # noqa: E402
from noisystudent.runs import SUMMARY  # noqa: E402
from noisystudent.sweep import make_sweep, run_sweep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("epochs", nargs="?", default="100,200,300", help="comma-separated epoch counts")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the sweep goes under its sweeps/teacher-sweep/")
    args = parser.parse_args()
    counts = list(dict.fromkeys(int(e) for e in args.epochs.split(",")))  # a count given twice is one variant
    sweep = make_sweep({"name": "teacher-sweep", "base": "demo", "runs_dir": str(args.runs_dir),
                        "overrides": ["rounds=0", "evaluate.robustness=false"],
                        "variants": {f"teacher{epochs}": [f"teacher.epochs={epochs}"] for epochs in counts}},
                       "teacher_sweep.py", resolve_config)
    run_sweep(sweep)
    runs = [{"teacher_epochs": epochs, "teacher_top1": read_json(run.folder / SUMMARY)["teacher_top1"],
             "seconds": round(stage_seconds(run.folder), 1)} for epochs, run in zip(counts, sweep.runs)]
    config = sweep.runs[0].config
    write_result("teacher_sweep", {"benchmark": "teacher_sweep", **environment(), "seed": config.seed,
                                   "model": config.models[0], "labels_per_class": config.data.labels_per_class,
                                   "runs": runs})


if __name__ == "__main__":
    main()
