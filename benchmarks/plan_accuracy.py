"""`noisystudent plan` against the run it plans: every stage's estimated time beside its
measured time (timings.jsonl), side by side on this machine.

    python benchmarks/plan_accuracy.py               # the quick demo (smoke): ~8 min on 2 cores
    python benchmarks/plan_accuracy.py --config demo # the full demo: ~45 min
    python benchmarks/plan_accuracy.py --result plan_accuracy_finetune finetune.epochs=1.5
                                                     # the quick demo with a fine-tune after each student

Targets: every stage within +-30% of its measured time, the sum of the stages within +-20%.
The plan probes a few steps of each model on synthetic data; the run is a fresh one in a
temporary folder. Overrides (KEY=VALUE, as `noisystudent run` takes them) go to both. Writes
benchmarks/results/plan_accuracy.json (plan_accuracy_<config>.json for another config, --result
for a run with overrides, so it does not replace the plain config's result).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="smoke")
    parser.add_argument("--result", help="the result file's name (default: from --config)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for the plan and the run")
    args = parser.parse_args()
    if args.overrides and not args.result:
        parser.error("a run with overrides needs --result, so it does not replace the config's own result")
    with tempfile.TemporaryDirectory(prefix="noisystudent-plan-") as folder:
        overrides = [*args.overrides, f"runs_dir={folder}", "name=planned", f"seed={SEED}"]
        started = time.perf_counter()
        planned = json.loads(subprocess.run([sys.executable, "-m", "noisystudent.cli", "plan", args.config, *overrides,
                                             "--json"], check=True, capture_output=True, text=True).stdout)
        plan_seconds = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "noisystudent.cli", "run", args.config, *overrides], check=True,
                       capture_output=True)
        run_seconds = time.perf_counter() - started
        measured = {}
        for line in (Path(folder) / "planned" / "timings.jsonl").read_text().splitlines():
            record = json.loads(line)
            key = record["stage"] + (" (eval)" if record["kind"] == "eval" else "")
            measured[key] = measured.get(key, 0.0) + record["seconds"]
    stages = []
    for cost in planned:
        actual = measured.get(cost["stage"])
        ratio = None if actual is None or cost["seconds"] is None else round(cost["seconds"] / actual, 3)
        stages.append({"stage": cost["stage"], "estimated_seconds": cost["seconds"], "measured_seconds": actual,
                       "ratio": ratio, "within_30_percent": ratio is not None and 0.7 <= ratio <= 1.3})
        print(stages[-1], flush=True)
    estimated = sum(s["estimated_seconds"] or 0 for s in stages)
    actual = sum(s["measured_seconds"] or 0 for s in stages)
    default_result = "plan_accuracy" if args.config == "smoke" else f"plan_accuracy_{args.config}"
    write_result(args.result or default_result, {
        "benchmark": "plan_accuracy", **environment(), "seed": SEED, "config": args.config,
        "overrides": args.overrides, "stages": stages,
        "stages_within_30_percent": sum(s["within_30_percent"] for s in stages), "stages_total": len(stages),
        "estimated_total_seconds": round(estimated, 1), "measured_total_seconds": round(actual, 1),
        "total_ratio": round(estimated / actual, 3), "total_within_20_percent": 0.8 <= estimated / actual <= 1.2,
        "plan_command_seconds": round(plan_seconds, 1), "run_command_seconds": round(run_seconds, 1)})


if __name__ == "__main__":
    main()
