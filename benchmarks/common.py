"""What every benchmark records beside its numbers: machine, versions, commit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REFERENCE_WORKLOAD = "torchvision resnet18, random 32 px batches of 64, SGD"


def environment() -> dict:
    import numpy
    import timm
    import torch
    import torchvision

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
        # another benchmark's result written meanwhile is not a change to the code measured
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                     ":(top,exclude)benchmarks/results"], capture_output=True,
                                    text=True, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": numpy.__version__},
        "commit": commit, "dirty": dirty,
    }


def stage_seconds(run_dir: Path, kind: str | None = None) -> float:
    """Seconds a run's stages took (its timings.jsonl), of one kind (train, eval, ...) or all: the
    whole run's, however many calls it took to finish (a sweep resumes runs)."""
    records = [json.loads(line) for line in (run_dir / "timings.jsonl").read_text().splitlines()]
    return sum(record["seconds"] for record in records if kind is None or record["kind"] == kind)


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def reference_speed(seconds: float = 60.0, seed: int = 0) -> dict:
    """A fixed workload that does not depend on our code, to compare machines: a bare PyTorch
    loop training torchvision's resnet18 (10 classes) on random 32 px batches of 64 with SGD for
    `seconds`. Returns its images/s (after 3 warm-up steps) and the threads it ran with."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    for _ in range(3):
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return {"workload": REFERENCE_WORKLOAD, "seconds": seconds,
            "images_per_second": round(64 * steps / (time.perf_counter() - started), 1),
            "threads": torch.get_num_threads()}
