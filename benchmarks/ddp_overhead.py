"""Training throughput with 1 vs 2 torchrun processes (gloo, CPU) for the same global batch,
and the demo model's checkpoint save / load time and size.

    python benchmarks/ddp_overhead.py            # ~3 min on 2 cores

On a 2-core machine two processes share the cores one thread each, so this measures DDP's
overhead (all-reduce, duplicated batch assembly), not a speed-up. Writes
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

OVERRIDES = ["rounds=0", "teacher.epochs=12", "teacher.warmup_epochs=1", "evaluate.robustness=false",
             "data.test_limit=1000", "seed=0"]


def images_per_second(run_dir: Path) -> float:
    lines = (run_dir / "round-0" / "teacher" / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["images_per_second"] for line in lines[1:]]  # the first window includes start-up
    return statistics.median(rates)


def training_rate(processes: int, runs_dir: Path) -> float:
    name = f"ddp{processes}"
    command = ["-m", "noisystudent.cli", "run", str(bundled_config("demo")), *OVERRIDES, f"runs_dir={runs_dir}",
               f"name={name}"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port=29611", *command]
    command = [sys.executable, *command]  # the venv's Python, whether or not the venv is activated
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    subprocess.run(command, check=True, capture_output=True, env=env)
    return images_per_second(runs_dir / name)


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
        one, two = training_rate(1, runs_dir), training_rate(2, runs_dir)
        result = {"benchmark": "ddp_overhead", **environment(), "seed": 0, "overrides": OVERRIDES,
                  "global_batch": 64, "images_per_second": {"1_process": one, "2_processes_gloo": two},
                  "ratio_2_to_1": round(two / one, 3), "checkpoint": checkpoint_cost(runs_dir)}
    write_result("ddp_overhead", result)


if __name__ == "__main__":
    main()
