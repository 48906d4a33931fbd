"""Injected faults: a crash or a full disk while saving, non-finite weights, changed inputs,
SIGTERM (preemption), and training under torchrun with 2 processes."""

import errno
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml

from noisystudent.config import TrainConfig, dump_yaml
from noisystudent.errors import UserError
from noisystudent.models import build_model
from noisystudent.train import checkpoint as checkpoint_module
from noisystudent.train import load_checkpoint, save_checkpoint, train_model
from noisystudent.train.checkpoint import load_exported
from test_train import labeled_set, pseudo_set


def model_and_optimizer():
    model = build_model("resnet_tiny_32", 10, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_crash_while_saving_keeps_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    model, optimizer = model_and_optimizer()
    save_checkpoint(path, model, optimizer, step=5)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(path, model, optimizer, step=6)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"], "no temp file left behind"
    monkeypatch.undo()
    assert load_checkpoint(path, *model_and_optimizer()) == 5


def test_save_is_refused_when_free_space_is_below_twice_the_size(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer()
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))
    with pytest.raises(UserError, match="twice its size"):
        save_checkpoint(tmp_path / "last.pt", model, optimizer, step=1)
    assert not (tmp_path / "last.pt").exists()


def test_non_finite_weights_are_never_written(tmp_path):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path / "last.pt", model, optimizer, step=1)
    with torch.no_grad():
        model.backbone.fc.weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="not finite at step 2"):
        save_checkpoint(tmp_path / "last.pt", model, optimizer, step=2)
    assert load_checkpoint(tmp_path / "last.pt", *model_and_optimizer()) == 1


def test_resume_against_changed_inputs_is_refused(tmp_path):
    labeled, pseudo = labeled_set(), pseudo_set()
    config = TrainConfig(epochs=1, batch_size=8, unlabeled_ratio=2, checkpoint_every=2)
    train_model(build_model("resnet_tiny_32", 10, 1), labeled, config, tmp_path, 0, torch.device("cpu"), pseudo)
    changed = pseudo_set(seed=5)
    with pytest.raises(UserError, match="different data or settings"):
        train_model(build_model("resnet_tiny_32", 10, 1), labeled, config, tmp_path, 0, torch.device("cpu"), changed)


def tiny_run_config(tiny_config, name: str, epochs: float = 40) -> Path:
    tiny_config.name = name
    tiny_config.rounds = 0
    tiny_config.teacher.epochs = epochs
    tiny_config.teacher.checkpoint_every = 2
    tiny_config.evaluate.robustness = False
    path = Path(tiny_config.runs_dir) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(tiny_config))
    return path


def cli(*args):
    return [sys.executable, "-m", "noisystudent.cli", *args]


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_exits_143_and_resumes_exactly(tiny_config):
    straight = tiny_run_config(tiny_config, "straight")
    assert subprocess.run(cli("run", str(straight)), capture_output=True).returncode == 0
    preempted = tiny_run_config(tiny_config, "preempted")
    stage = Path(tiny_config.runs_dir) / "preempted" / "round-0" / "teacher"
    process = subprocess.Popen(cli("run", str(preempted)), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (stage / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM after step" in err and not (stage / "DONE").exists()
    assert subprocess.run(cli("run", str(preempted)), capture_output=True).returncode == 0
    a = load_exported(Path(tiny_config.runs_dir) / "straight" / "round-0" / "teacher").state_dict()
    b = load_exported(stage).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "kill + resume == straight through"


@pytest.mark.slow
def test_two_torchrun_processes_match_one_process_within_tolerance(tiny_config):
    """Same global batch; gradients averaged by DDP. BatchNorm statistics are per rank on CPU
    (SyncBatchNorm is CUDA-only), so the weights agree closely but not bit for bit, and the gap
    grows with training (chaotically: 25% after 200 steps on 10-image shards). We compare after
    10 steps and require a relative L2 difference under 3% (measured here: 1.4%)."""
    tiny_config.teacher.warmup_epochs = 0.5
    one = tiny_run_config(tiny_config, "one-process", epochs=2)
    assert subprocess.run(cli("run", str(one)), capture_output=True).returncode == 0
    two = tiny_run_config(tiny_config, "two-processes", epochs=2)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port=29533", "-m", "noisystudent.cli", "run", str(two)],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = Path(tiny_config.runs_dir)
    a = load_exported(runs / "one-process" / "round-0" / "teacher").state_dict()
    b = load_exported(runs / "two-processes" / "round-0" / "teacher").state_dict()
    weights = [k for k in a if a[k].is_floating_point() and "running" not in k]
    difference = torch.cat([(a[k] - b[k]).flatten() for k in weights]).norm()
    relative = (difference / torch.cat([a[k].flatten() for k in weights]).norm()).item()
    print(f"relative L2 difference, 2 processes vs 1: {relative:.5f}")
    assert relative < 0.03, relative
    lines = (runs / "two-processes" / "round-0" / "teacher" / "metrics.jsonl").read_text().splitlines()
    steps = [yaml.safe_load(line)["step"] for line in lines]
    assert steps == sorted(set(steps)), "only rank 0 writes the log"
