"""Injected faults: a crash or a full disk while saving, non-finite weights, changed inputs,
SIGTERM (preemption), and training under torchrun with 2 processes."""

import errno
import os
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from noisystudent.config import TrainConfig, dump_yaml
from noisystudent.errors import UserError
from noisystudent.models import build_model
from noisystudent.train import state as checkpoint_module
from noisystudent.train import load_checkpoint, save_checkpoint, train_model
from noisystudent.models import export_weights, load_exported
from conftest import make_images, write_idx
from test_train import labeled_set, pseudo_set
from waiting import TIMEOUT_S, child_ranks, wait_for


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
@pytest.mark.parametrize("signal_number, expected_code", [(signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)])
def test_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_config, signal_number, expected_code):
    """SIGTERM: the step finishes, a checkpoint is written, exit 143. SIGKILL: no warning at all,
    the last committed checkpoint is where the rerun starts. Either way: bit-identical weights."""
    straight = tiny_run_config(tiny_config, "straight")
    assert subprocess.run(cli("run", str(straight)), capture_output=True).returncode == 0
    stopped = tiny_run_config(tiny_config, "stopped")
    stage = Path(tiny_config.runs_dir) / "stopped" / "round-0" / "teacher"
    process = subprocess.Popen(cli("run", str(stopped)), stderr=subprocess.PIPE, text=True)
    # a checkpoint is saved only inside the loop's SIGTERM handler, so once one exists the run is
    # ready for the signal however slow the machine; and SIGKILL then has a checkpoint to resume from
    wait_for((stage / "checkpoints" / "last.pt").exists, "teacher checkpoint", process)
    process.send_signal(signal_number)
    _, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == expected_code, err
    if signal_number == signal.SIGTERM:
        assert "stopped by SIGTERM after step" in err
    assert not (stage / "DONE").exists()
    assert subprocess.run(cli("run", str(stopped)), capture_output=True).returncode == 0
    assert not list(stage.rglob("*.tmp")), "a temp file left by SIGKILL mid-save is cleaned up on resume"
    a = load_exported(Path(tiny_config.runs_dir) / "straight" / "round-0" / "teacher").state_dict()
    b = load_exported(stage).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "stop + resume == straight through"


def one_image_root(path: Path) -> Path:
    """Fashion-MNIST-format files whose images are all one image, under 10 different labels."""
    rng = np.random.default_rng(0)
    path.mkdir()
    for split, per_class in (("train", 60), ("t10k", 20)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        write_idx(path / f"{split}-images-idx3-ubyte.gz", np.repeat(make_images(labels[:1], rng), len(labels), axis=0))
        write_idx(path / f"{split}-labels-idx1-ubyte.gz", labels)
    return path


@pytest.mark.slow
def test_two_torchrun_processes_train_the_weights_of_one_process(tiny_config, tmp_path):
    """Same global batch; DDP averages gradients. On real images the two runs differ by design:
    BatchNorm statistics are per rank on CPU (SyncBatchNorm is CUDA-only). Here every image is
    the same one, unaugmented, so each rank's batch statistics are the global batch's, and the
    runs must agree up to float rounding: the mean loss over the global batch is the mean of
    the ranks' losses. Only the labels differ between rows, so a rank that builds the wrong
    rows or a gradient not averaged moves the weights by orders of magnitude more than rounding.
    Measured after 3 steps: 3e-6 relative L2 (rounding, which these near-constant BatchNorm inputs
    amplify about 3x a step); 1.3e-2 with every rank building rank 0's rows."""
    tiny_config.data.root = str(one_image_root(tmp_path / "one-image"))
    tiny_config.teacher.augment = False  # crops and flips would make the rows differ again
    tiny_config.teacher.warmup_epochs = 0.2
    # precision=auto is bf16 on a CPU with bf16 units (the child processes do not see conftest's
    # fp32 CPU), and bf16 rounds differently at the two batch sizes: 2e-2 after 10 steps
    tiny_config.precision = "fp32"
    one = tiny_run_config(tiny_config, "one-process", epochs=0.6)  # 3 steps of 20 images
    assert subprocess.run(cli("run", str(one)), capture_output=True).returncode == 0
    two = tiny_run_config(tiny_config, "two-processes", epochs=0.6)
    result = subprocess.run(torchrun(two), capture_output=True, text=True, env=quiet_env(), timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = Path(tiny_config.runs_dir)
    a = load_exported(runs / "one-process" / "round-0" / "teacher").state_dict()
    b = load_exported(runs / "two-processes" / "round-0" / "teacher").state_dict()
    # running variances are unbiased over each rank's half of the rows (n / (n - 1) differs), and
    # never used in training; everything else the steps computed is compared
    weights = [k for k in a if a[k].is_floating_point() and "running_var" not in k]
    difference = torch.cat([(a[k] - b[k]).flatten() for k in weights]).norm()
    relative = (difference / torch.cat([a[k].flatten() for k in weights]).norm()).item()
    print(f"relative L2 difference, 2 processes vs 1: {relative:.2e}")
    assert relative < 1e-4, relative
    # Exact, unlike the weights: steps, epochs and learning rates are functions of the global batch
    # and the step alone, so the 2-process log (rank 0's only) repeats the 1-process one line for
    # line; a schedule counted per rank (twice the steps, or half the epochs) fails here.
    def schedule(name: str) -> list[tuple]:
        lines = (runs / name / "round-0" / "teacher" / "metrics.jsonl").read_text().splitlines()
        return [(record["step"], record["epoch"], record["lr"]) for record in map(yaml.safe_load, lines)]

    assert schedule("two-processes") == schedule("one-process"), "one log line per step, from rank 0, same schedule"


def torchrun(config_path: Path | None, *extra: str, command: tuple[str, ...] = ()) -> list[str]:
    """2-process torchrun of `noisystudent run CONFIG` (or of `command`, when given). --standalone:
    the rendezvous binds a port the OS picks, so tests run in parallel never collide on a fixed one."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *extra,
            "-m", "noisystudent.cli", *(command or ("run", str(config_path)))]


def quiet_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_torchrun_restart_after_an_injected_crash_resumes_to_the_same_weights(tiny_config):
    straight = tiny_run_config(tiny_config, "ddp-straight", epochs=2)
    assert subprocess.run(torchrun(straight), capture_output=True, env=quiet_env()).returncode == 0
    crashed = tiny_run_config(tiny_config, "ddp-crashed", epochs=2)
    result = subprocess.run(torchrun(crashed, "--max-restarts=1"), capture_output=True, text=True,
                            env=quiet_env(NOISYSTUDENT_INJECT="crash@7"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "injected crash at step 7" in result.stderr, "the first attempt did crash"
    runs = Path(tiny_config.runs_dir)
    a = load_exported(runs / "ddp-straight" / "round-0" / "teacher").state_dict()
    b = load_exported(runs / "ddp-crashed" / "round-0" / "teacher").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_before_the_update(tiny_config):
    path = tiny_run_config(tiny_config, "ddp-nan", epochs=2)
    result = subprocess.run(torchrun(path), capture_output=True, text=True,
                            env=quiet_env(NOISYSTUDENT_INJECT="nan@3:rank1"), timeout=300)
    assert result.returncode != 0
    assert "non-finite" in result.stderr and "at step 3" in result.stderr
    stage = Path(tiny_config.runs_dir) / "ddp-nan" / "round-0" / "teacher"
    assert not (stage / "DONE").exists()
    state = torch.load(stage / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] <= 3 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_sigterm_to_one_of_two_ranks_stops_both_and_the_run_resumes(tiny_config):
    path = tiny_run_config(tiny_config, "ddp-term", epochs=40)
    stage = Path(tiny_config.runs_dir) / "ddp-term" / "round-0" / "teacher"
    launcher = subprocess.Popen(torchrun(path), stderr=subprocess.PIPE, text=True, env=quiet_env(),
                                start_new_session=True)  # its workers can be killed with it if the test fails
    # rank 0 saves a checkpoint only after every rank entered the loop (the step's all-reduce), so
    # from then on both have their SIGTERM handlers; rank 1 is picked by its RANK, not by pid order
    wait_for((stage / "checkpoints" / "last.pt").exists, "checkpoint from the 2-rank run", launcher)
    wait_for(lambda: 1 in child_ranks(launcher.pid), "rank-1 worker among the launcher's children", launcher)
    os.kill(child_ranks(launcher.pid)[1], signal.SIGTERM)  # the rank that does not write: it must stop rank 0
    _, err = launcher.communicate(timeout=TIMEOUT_S)  # no hang
    assert "stopped by SIGTERM after step" in err
    assert not (stage / "DONE").exists()
    assert subprocess.run(torchrun(path), capture_output=True, env=quiet_env()).returncode == 0
    assert (stage / "DONE").exists()


@pytest.mark.slow
def test_two_rank_torchrun_labeling_writes_the_single_process_store(tiny_config, tmp_path):
    tiny_config.labels.shard_size = 7  # several shards per rank, an odd count
    config_path = tmp_path / "label.yaml"
    config_path.write_text(dump_yaml(tiny_config))
    teacher = tmp_path / "teacher.safetensors"
    torch.manual_seed(0)
    export_weights(teacher, build_model("resnet_tiny_32", 10, 1))
    label = lambda out: ("label", str(teacher), str(out), "--config", str(config_path))  # noqa: E731
    one = subprocess.run(cli(*label(tmp_path / "one")), capture_output=True, text=True, env=quiet_env())
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun(None, command=label(tmp_path / "two")), capture_output=True, text=True,
                         env=quiet_env(), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len([n for n in names if n.startswith("shard-")]) >= 3 and "manifest.json" in names
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_labeling_killed_and_rerun_writes_a_byte_identical_store(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from noisystudent.config import LabelConfig
    from noisystudent.labels import pseudo_label
    from test_labels import make_pool

    pool, teacher, config = make_pool(60), build_model("resnet_tiny_32", 10, 1), LabelConfig(batch_size=16, shard_size=20)
    pseudo_label(teacher, pool, config, tmp_path / "straight", torch.device("cpu"))
    real_write, calls = pq.write_table, {"n": 0}

    def dies_on_second_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while writing shard 2")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        pseudo_label(teacher, pool, config, tmp_path / "resumed", torch.device("cpu"))
    monkeypatch.setattr(pq, "write_table", real_write)
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["header.json", "shard-00000.parquet"]
    pseudo_label(teacher, pool, config, tmp_path / "resumed", torch.device("cpu"))
    for path in sorted((tmp_path / "straight").iterdir()):
        assert (tmp_path / "resumed" / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.slow
def test_two_rank_torchrun_predict_writes_the_single_process_file(tmp_path):
    from test_folder_data import COLORS, make_tree
    make_tree(tmp_path / "images", 5, seed=8)  # 15 images: chunks of 4 shared by two ranks
    weights = tmp_path / "final.safetensors"
    torch.manual_seed(0)
    export_weights(weights, build_model("resnet_tiny_32", 3, 3, classes=list(COLORS), image_size=16))
    predict = lambda out: ("predict", str(weights), str(tmp_path / "images"), "--output", str(out),  # noqa: E731
                           "--chunk-size", "4")
    one = subprocess.run(cli(*predict(tmp_path / "one.jsonl")), capture_output=True, text=True, env=quiet_env())
    assert one.returncode == 0, one.stderr
    two = subprocess.run(torchrun(None, command=predict(tmp_path / "two.jsonl")), capture_output=True,
                         text=True, env=quiet_env(), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert len((tmp_path / "two.jsonl").read_text().splitlines()) == 15
