"""How the demo's teacher schedule was chosen: the round-0 teacher alone (demo config, 1,000
labels, weak augmentation, no noise) trained for several epoch counts; test top-1 per count.

    python benchmarks/teacher_sweep.py 100,200,300      # ~12 min on 2 cores

A fair baseline is a converged one: the demo uses the count after which test accuracy stops
improving. Choosing it on the test set favours the teacher, which makes the student's gain a
conservative figure. Writes benchmarks/results/teacher_sweep.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.cli import bundled_config  # noqa: E402
from noisystudent.config import load_config  # noqa: E402
from noisystudent.pipeline import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("epochs", nargs="?", default="100,200,300", help="comma-separated epoch counts")
    args = parser.parse_args()
    sweep = []
    with tempfile.TemporaryDirectory(prefix="noisystudent-sweep-") as runs_dir:
        for epochs in [int(e) for e in args.epochs.split(",")]:
            config = load_config(bundled_config("demo"), [f"runs_dir={runs_dir}", f"name=teacher{epochs}", "rounds=0",
                                                          f"teacher.epochs={epochs}", "evaluate.robustness=false"])
            started = time.perf_counter()
            summary = run(config)
            sweep.append({"teacher_epochs": epochs, "teacher_top1": summary["teacher_top1"],
                          "seconds": round(time.perf_counter() - started, 1)})
    write_result("teacher_sweep", {"benchmark": "teacher_sweep", **environment(), "seed": config.seed,
                                   "model": config.models[0], "labels_per_class": config.data.labels_per_class,
                                   "runs": sweep})


if __name__ == "__main__":
    main()
