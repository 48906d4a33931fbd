"""Per-process training throughput of 2 torchrun processes (gloo, CPU, 1 thread each) against
1 process with 1 thread, at the same per-process batch; and the demo model's checkpoint save /
load time and size.

    python benchmarks/ddp_overhead.py            # ~15 min on 2 cores

Each process has a core of its own, so a ratio of 1 would be perfect scaling; what it loses is
what two busy processes cost each other on this machine (shared caches and memory bandwidth;
measured alone by two independent runs at once), DDP's all-reduce, and whatever each rank does
for rows that are not its own. Measured on the
demo's teacher stage twice: as configured (crop + flip only), and noised (`noise.teacher=true`:
RandAugment too, the input work each rank now does for its own rows only). Writes
benchmarks/results/ddp_overhead.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.cli import bundled_config  # noqa: E402
from noisystudent.models import build_model  # noqa: E402
from noisystudent.train import load_checkpoint, save_checkpoint  # noqa: E402

BATCH_PER_PROCESS, REPEATS = 64, 3
OVERRIDES = ["rounds=0", "teacher.epochs=12", "teacher.warmup_epochs=1", "evaluate.robustness=false",
             "data.test_limit=1000", "seed=0"]


def images_per_second(run_dir: Path) -> float:
    lines = (run_dir / "round-0" / "teacher" / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["images_per_second"] for line in lines[1:]]  # the first window includes start-up
    return statistics.median(rates)


def command(name: str, processes: int, noised: bool, runs_dir: Path) -> list[str]:
    """A demo teacher run: each process 1 thread and BATCH_PER_PROCESS labeled images a step."""
    arguments = ["-m", "noisystudent.cli", "run", str(bundled_config("demo")), *OVERRIDES, f"runs_dir={runs_dir}",
                 f"name={name}", f"teacher.batch_size={BATCH_PER_PROCESS * processes}", "threads=1",
                 f"noise.teacher={str(noised).lower()}"]
    if processes > 1:
        # --standalone: the rendezvous binds a port the OS picks, so a fixed one taken by another
        # job (or another benchmark) cannot fail or join the run
        arguments = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *arguments]
    return [sys.executable, *arguments]  # the venv's Python, whether or not the venv is activated


def per_process_rates(noised: bool, runs_dir: Path) -> dict:
    """images/s per process, REPEATS times in turn: one process alone; two independent processes
    at once (what sharing the machine costs, without DDP); two torchrun processes training one
    model. Medians, and the median of each repeat's paired ratios."""
    kind, env = "noised" if noised else "plain", {**os.environ, "OMP_NUM_THREADS": "1"}
    measured = []
    for repeat in range(REPEATS):
        tag = f"{kind}-{repeat}"
        subprocess.run(command(f"alone-{tag}", 1, noised, runs_dir), check=True, capture_output=True, env=env)
        pair = [subprocess.Popen(command(f"pair{i}-{tag}", 1, noised, runs_dir), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env) for i in range(2)]
        if any(process.wait() for process in pair):
            raise RuntimeError("an independent run failed")
        subprocess.run(command(f"ddp-{tag}", 2, noised, runs_dir), check=True, capture_output=True, env=env)
        measured.append({"1_process": images_per_second(runs_dir / f"alone-{tag}"),
                         "2_independent_processes": statistics.fmean(
                             images_per_second(runs_dir / f"pair{i}-{tag}") for i in range(2)),
                         "2_processes_gloo": images_per_second(runs_dir / f"ddp-{tag}") / 2})
    ratio = lambda a, b: round(statistics.median(m[a] / m[b] for m in measured), 3)  # noqa: E731
    return {"images_per_second_per_process": {key: [round(m[key], 1) for m in measured] for key in measured[0]},
            "ratio_2_to_1": ratio("2_processes_gloo", "1_process"),
            "ratio_independent_to_1": ratio("2_independent_processes", "1_process"),
            "ratio_ddp_to_independent": ratio("2_processes_gloo", "2_independent_processes")}


def checkpoint_cost(folder: Path) -> dict:
    model = build_model("resnet_small_32", 10, 1, dropout=0.5, survival_prob=0.8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(8, 1, 32, 32)).sum().backward()
    optimizer.step()  # so that the optimizer has its momentum buffers
    path = folder / "last.pt"
    saves, loads = [], []
    for _ in range(5):
        started = time.perf_counter()
        save_checkpoint(path, model, optimizer, step=1)
        saves.append(time.perf_counter() - started)
        started = time.perf_counter()
        load_checkpoint(path, model, optimizer)
        loads.append(time.perf_counter() - started)
    return {"model": "resnet_small_32", "bytes": path.stat().st_size, "save_seconds": statistics.median(saves),
            "load_seconds": statistics.median(loads)}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="noisystudent-ddp-") as folder:
        runs_dir = Path(folder)
        settings = {}
        for noised in (False, True):
            settings["noised_teacher" if noised else "teacher"] = per_process_rates(noised, runs_dir)
            print(settings, flush=True)
        result = {"benchmark": "ddp_overhead", **environment(), "seed": 0, "overrides": OVERRIDES,
                  "batch_per_process": BATCH_PER_PROCESS, "threads_per_process": 1, "repeats": REPEATS, "target_ratio": 0.85,
                  "settings": settings, "checkpoint": checkpoint_cost(runs_dir)}
    write_result("ddp_overhead", result)


if __name__ == "__main__":
    main()
