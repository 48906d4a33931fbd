"""What made a run's numbers: the code and the machine, recorded in every run's summary.json.

The same code, config and seed give bit-identical results on one machine, but not on another:
the CPU's instruction set picks other kernels (oneDNN, MKL, ATen's vectorized loops), whose
float sums round differently, and a few hundred steps of training turn those last bits into a
different model (the same paper-ablations run gave 77.65% on one 2-core machine and 77.90% on
another). So a sweep pairs a variant's run only with the reference run of the same seed made
on the same machine (sweep.py), and this module says which machine that is, by its numerics
rather than its name: a fixed tiny training step (convolution, batch norm, linear layer,
backward), run with the run's threads on the run's device, hashed. Two machines whose kernels
round alike print the same fingerprint; a cloud CPU's name ("AMD EPYC") does not tell that.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch
from torch import nn

from .models import autocast, resolved_precision
from .version import __version__


def _code_version() -> str:
    """The git commit of this checkout (+dirty when it has uncommitted changes), else the package version."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                check=True, cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, check=True, cwd=here).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return __version__


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics_fingerprint(device: torch.device) -> str:
    """A hash of one seeded training step's loss and gradients, computed with this process's threads
    and precision (bf16 runs never pair with fp32 ones) on `device`; the global random state is left
    as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), autocast(device):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                              nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).to(device)
        images = torch.randn(32, 3, 32, 32).to(device)
        labels = torch.arange(32).remainder(10).to(device)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
    digest = hashlib.sha256(loss.detach().cpu().numpy().tobytes())
    for parameter in model.parameters():
        digest.update(parameter.grad.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def _machine(device: str, threads: int, precision: str) -> dict:
    torch_device = torch.device(device)
    name = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else _cpu_name()
    return {"device": name, "cores": os.cpu_count(), "threads": threads, "precision": precision,
            "torch": torch.__version__, "numerics": numerics_fingerprint(torch_device)}


def provenance(device: torch.device) -> dict:
    """{"code": commit or version, "machine": {device name, cores, threads, precision, torch, numerics}}.
    `machine["numerics"]` is what a sweep pairs runs by."""
    return {"code": _code_version(),
            "machine": _machine(str(device), torch.get_num_threads(), resolved_precision(device))}


UNRECORDED = "unrecorded"


def machine_key(summary: dict) -> str:
    """The numerics fingerprint a run's summary recorded; UNRECORDED for runs made before it was."""
    return summary.get("provenance", {}).get("machine", {}).get("numerics", UNRECORDED)


def same_machine(summary: dict, other: dict) -> bool:
    """Whether two runs were made on one machine, so that their difference measures the settings.
    A run that recorded no fingerprint pairs with none: runs of one commit made before the
    fingerprint existed ran on several machines, and nothing says which."""
    return machine_key(summary) == machine_key(other) != UNRECORDED
