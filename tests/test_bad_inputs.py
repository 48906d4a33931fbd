"""Bad inputs and faults, one row each: the command exits with code 2 and one line naming the key
or file and the fix, and nothing an earlier command wrote is lost or changed.

Each row's `setup` makes what it needs under a fresh folder and returns the command line; rows
that damage a finished run work on a copy of one run made once for the module.

Corners tried by hand beyond the issues' lists, each now a row or a test below: NaN weights in
evaluate, label, predict and as `init`; `init` a text file; a model of other classes or channels
in evaluate, in --baseline and in label; pool images rewritten under the same names; a shard
copied under a second name, in label (across store shards) and predict; a second command on a
run folder, label store or predict OUTPUT in use; a stage that failed before it made anything, rerun with the
advised fix; sweep files setting name=, runs_dir= or seed=, or listing a seed twice; predict
with flags out of range, OUTPUT a folder, SOURCE missing, every image undecodable; a config that
is not UTF-8; a reader that closes the pipe early; two TorchScript exports of one model; `init` from
hub weights without internet (a blocked socket, HF_HUB_OFFLINE), a timm model without weights or a
tag it does not have.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from noisystudent.cli import main
from noisystudent.config import load_config
from noisystudent.models import build_model, export_weights
from noisystudent.pipeline import run
from noisystudent.summary import format_summary
from test_folder_data import COLORS, make_tree, write_shard


def files_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` by content: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_idx_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished one-round run on the tiny data (no robustness suites: fast), and its overrides."""
    runs = tmp_path_factory.mktemp("finished")
    overrides = [f"data.root={tiny_idx_root}", "data.labels_per_class=10", f"runs_dir={runs}", "name=tiny",
                 "rounds=1", "models=resnet_tiny_32", "threads=2", "teacher.epochs=6", "teacher.batch_size=20",
                 "student.epochs=1", "student.batch_size=10", "student.unlabeled_ratio=2",
                 "selection.confidence_threshold=0", "evaluate.robustness=false", "labels.shard_size=200"]
    run(load_config(overrides=overrides), log=lambda line: None)
    return runs / "tiny", overrides


def copy_of(finished_run, tmp: Path) -> tuple[Path, list[str]]:
    """A private copy of the finished run, and the overrides that address the copy."""
    run_dir, overrides = finished_run
    shutil.copytree(run_dir, tmp / "runs" / "tiny")
    return tmp / "runs" / "tiny", [o for o in overrides if not o.startswith("runs_dir=")] + [f"runs_dir={tmp / 'runs'}"]


def folder_data(tmp: Path, unlabeled: Path | str | None = None) -> Path:
    """Class folders for training and testing, a pool, and a config naming them; returns the config."""
    make_tree(tmp / "train", 4, seed=1)
    make_tree(tmp / "test", 2, seed=2)
    if unlabeled is None:
        make_tree(tmp / "pool", 5, seed=3)
        unlabeled = tmp / "pool"
    config = tmp / "folders.yaml"
    config.write_text(f"data:\n  dataset: folder\n  labeled: {tmp / 'train'}\n  test: {tmp / 'test'}\n"
                      f"  unlabeled: '{unlabeled}'\n  image_size: 16\n  max_bad_fraction: 0.0\n"
                      f"runs_dir: {tmp / 'runs'}\nmodels: [resnet_tiny_32]\nrounds: 1\n"
                      f"teacher:\n  epochs: 2\n  batch_size: 6\n  warmup_epochs: 0\nstudent:\n  epochs: 1\n  batch_size: 6\n"
                      f"selection:\n  confidence_threshold: 0\nevaluate:\n  robustness: false\n")
    return config


def weights(tmp: Path, seed: int, classes: int = 3, channels: int = 3) -> Path:
    torch.manual_seed(seed)
    path = tmp / f"weights-{seed}.safetensors"
    export_weights(path, build_model("resnet_tiny_32", classes, channels))
    return path


def labeled_store(tmp: Path) -> tuple[list[str], Path]:
    """A finished label store of the folder pool; returns the label command's tail and the store."""
    config = folder_data(tmp)
    assert main(["label", str(weights(tmp, 0)), str(tmp / "store"), "--config", str(config)]) == 0
    return ["--config", str(config)], tmp / "store"


def pool_shard(tmp: Path, images: int = 60) -> Path:
    """One tar shard of `images` PNGs (20 per class)."""
    make_tree(tmp / "shard-source", images // len(COLORS), seed=4)
    names = sorted(p.relative_to(tmp / "shard-source").as_posix() for p in (tmp / "shard-source").rglob("*.png"))
    write_shard(tmp / "pool-0.tar", [(name, (tmp / "shard-source" / name).read_bytes()) for name in names])
    return tmp / "pool-0.tar"


# -- the rows ----------------------------------------------------------------------------------
# setup(tmp, finished_run) -> (argv, folder that must not change, or None)

def other_teacher(tmp, _):
    tail, store = labeled_store(tmp)
    return ["label", str(weights(tmp, 1)), str(store), *tail], store


def other_temperature(tmp, _):
    tail, store = labeled_store(tmp)
    return ["label", str(weights(tmp, 0)), str(store), *tail, "labels.temperature=2"], store


def other_pool(tmp, _):
    tail, store = labeled_store(tmp)
    return ["label", str(weights(tmp, 0)), str(store), *tail, "data.unlabeled_limit=5"], store


def retrained_teacher_in_the_pipeline(tmp, finished_run):
    run_dir, overrides = copy_of(finished_run, tmp)
    (run_dir / "round-1/labels/DONE").unlink()  # as a kill between the manifest and DONE leaves it
    teacher = run_dir / "round-0/teacher/final.safetensors"
    torch.manual_seed(1)
    export_weights(teacher, build_model("resnet_tiny_32", 10, 1))  # weights the store was not made with
    return ["run", str(write_config(tmp, overrides))], run_dir / "round-1"


def write_config(tmp: Path, overrides: list[str]) -> Path:
    """A YAML config with these overrides applied, for `run`."""
    from noisystudent.config import dump_yaml

    path = tmp / "config.yaml"
    path.write_text(dump_yaml(load_config(overrides=overrides)))
    return path


def truncated_shard(tmp, _):
    shard = pool_shard(tmp)
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) // 2])
    return ["label", str(weights(tmp, 0)), str(tmp / "store"), "--config", str(folder_data(tmp, shard))], None


def garbage_tar(tmp, _):
    (tmp / "pool-0.tar").write_bytes(b"this is not a tar archive" * 40)
    return ["label", str(weights(tmp, 0)), str(tmp / "store"), "--config", str(folder_data(tmp, tmp / "pool-0.tar"))], None


def refused_rerun(tmp, finished_run):
    run_dir, overrides = copy_of(finished_run, tmp)
    return ["run", str(write_config(tmp, overrides + ["seed=1"]))], run_dir


def changed_teacher_lr(tmp, finished_run):
    run_dir, overrides = copy_of(finished_run, tmp)
    return ["run", str(write_config(tmp, overrides + ["teacher.lr=0.2"]))], run_dir


def changed_unlabeled_ratio(tmp, finished_run):
    run_dir, overrides = copy_of(finished_run, tmp)
    return ["run", str(write_config(tmp, overrides + ["student.unlabeled_ratio=5"]))], run_dir


def changed_setting_of_a_started_stage(tmp, finished_run):
    run_dir, overrides = copy_of(finished_run, tmp)
    (run_dir / "round-1/student/DONE").unlink()  # started (inputs.json, checkpoint), not finished
    return ["run", str(write_config(tmp, overrides + ["student.lr=0.01"]))], run_dir


def corrupt_final_weights(tmp, finished_run):
    run_dir, overrides = copy_of(finished_run, tmp)
    (run_dir / "round-1/labels/DONE").unlink()
    (run_dir / "round-0/teacher/final.safetensors").write_bytes(b"\x00" * 100)
    return ["run", str(write_config(tmp, overrides))], run_dir / "round-1"


def empty_class_folder(tmp, _):
    config = folder_data(tmp)
    (tmp / "train" / "violet").mkdir()
    return ["run", str(config)], None


def one_class(tmp, _):
    config = folder_data(tmp)
    for name in ("green", "blue"):
        shutil.rmtree(tmp / "train" / name)
    return ["run", str(config)], None


def missing_labeled_folder(tmp, _):
    return ["run", str(folder_data(tmp)), f"data.labeled={tmp / 'nowhere'}"], None


def missing_test_folder(tmp, _):
    return ["run", str(folder_data(tmp)), f"data.test={tmp / 'nowhere'}"], None


def missing_shards(tmp, _):
    return ["run", str(folder_data(tmp, tmp / "pool-{0..3}.tar"))], None


def undecodable_pool(tmp, _):
    for i in range(4):
        (tmp / "junk" / f"{i}.png").parent.mkdir(exist_ok=True)
        (tmp / "junk" / f"{i}.png").write_bytes(b"not a png")
    return ["run", str(folder_data(tmp, tmp / "junk")), "data.max_bad_fraction=1"], None


def runs_dir_is_a_file(tmp, _):
    (tmp / "a-file").write_text("")
    return ["run", str(folder_data(tmp)), f"runs_dir={tmp / 'a-file'}"], None


def report_cannot_write(tmp, finished_run):
    run_dir, _ = copy_of(finished_run, tmp)
    shutil.rmtree(run_dir / "report", ignore_errors=True)
    (run_dir / "report").write_text("a file where the figures go")
    return ["report", str(run_dir)], run_dir / "round-1"


def weights_with_other_tensors(tmp, _):
    small, tiny = build_model("resnet_small_32", 3, 3), build_model("resnet_tiny_32", 3, 3)
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(tmp / "mixed.safetensors"),
              metadata=tiny.spec.to_metadata())
    return ["evaluate", str(tmp / "mixed.safetensors"), "--config", str(folder_data(tmp))], None


def config_is_a_directory(tmp, _):
    return ["run", str(tmp)], None


def scalar_where_a_section_goes(tmp, _):
    (tmp / "bad.yaml").write_text("teacher: 5\n")
    return ["run", str(tmp / "bad.yaml"), "teacher.lr=0.1"], None


def nan_weights(tmp: Path) -> Path:
    """Weights whose tensors are NaN, with a valid model description: what a diverged export holds."""
    model = build_model("resnet_tiny_32", 3, 3)
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v.contiguous()
               for k, v in model.state_dict().items()}, str(tmp / "nan.safetensors"), metadata=model.spec.to_metadata())
    return tmp / "nan.safetensors"


def evaluate_nan_weights(tmp, _):
    return ["evaluate", str(nan_weights(tmp)), "--config", str(folder_data(tmp))], None


def init_from_nan_weights(tmp, _):
    return ["run", str(folder_data(tmp)), f"init=[{nan_weights(tmp)}]"], None


def init_from_a_text_file(tmp, _):
    (tmp / "notes.pth").write_text("# a text file, not weights\n" * 20)
    return ["run", str(folder_data(tmp)), f"init=[{tmp / 'notes.pth'}]"], None


def evaluate_on_other_classes(tmp, finished_run):
    _, overrides = finished_run
    data = [o for o in overrides if o.startswith("data.")]
    return ["evaluate", str(weights(tmp, 0)), *data, "evaluate.robustness=false"], None


def label_with_a_teacher_of_other_classes(tmp, finished_run):
    _, overrides = finished_run
    data = [o for o in overrides if o.startswith("data.")]
    return ["label", str(weights(tmp, 0)), str(tmp / "store"), *data], None


def baseline_of_other_classes(tmp, finished_run):
    run_dir, overrides = finished_run
    data = [o for o in overrides if o.startswith("data.")]
    return ["evaluate", str(run_dir / "round-1/student"), "--baseline", str(weights(tmp, 0)), *data,
            "evaluate.robustness=false"], None


def pool_rewritten_under_the_same_names(tmp, _):
    tail, store = labeled_store(tmp)
    make_tree(tmp / "pool", 5, seed=7)  # the same file names, other pixels
    return ["label", str(weights(tmp, 0)), str(store), *tail], store


def copied_shards(tmp: Path) -> str:
    """Two shards holding the same samples: a shard copied under a second name."""
    shutil.copy(pool_shard(tmp), tmp / "pool-1.tar")
    return str(tmp / "pool-{0..1}.tar")


def label_copied_shards(tmp, _):
    config = folder_data(tmp, copied_shards(tmp))  # a store shard of 50 items: the copies meet in other chunks
    return ["label", str(weights(tmp, 0)), str(tmp / "store"), "--config", str(config), "labels.shard_size=50"], None


def predict_copied_shards(tmp, _):
    return predict(tmp, copied_shards(tmp)), None


def predict(tmp: Path, source: Path | str, *options: str) -> list[str]:
    """`predict` with weights of the folder data's model (made without a recorded image size)."""
    return ["predict", str(weights(tmp, 0)), str(source), "--output", str(tmp / "out.csv"), "--image-size", "16",
            *options]


def images(tmp: Path) -> Path:
    make_tree(tmp / "images", 2, seed=5)
    return tmp / "images"


def predict_undecodable(tmp, _):
    for i in range(3):
        (tmp / "junk" / f"{i}.png").parent.mkdir(exist_ok=True)
        (tmp / "junk" / f"{i}.png").write_bytes(b"not a png")
    return predict(tmp, tmp / "junk"), None


def latin1_config(tmp, _):
    (tmp / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    return ["run", str(tmp / "latin1.yaml")], None


def sweep_file(tmp: Path, text: str) -> list[str]:
    (tmp / "sweep.yaml").write_text(text)
    return ["sweep", str(tmp / "sweep.yaml"), "--dry-run"]


@dataclass
class Case:
    setup: Callable
    message: str  # a regex the one-line message must contain


CASES = {
    "label store of another teacher": Case(other_teacher, r"labeled by another teacher.*teacher_sha256"),
    "label store of another temperature": Case(other_temperature, r"temperature: 1\.0 in the store, 2\.0 now"),
    "label store of another pool": Case(other_pool, r"pool\.limit: None in the store, 5 now"),
    "pipeline store of a retrained teacher": Case(retrained_teacher_in_the_pipeline,
                                                  r"round-1/labels was labeled by another teacher"),
    "truncated tar shard": Case(truncated_shard, r"1 of 3\d images of .*pool-0\.tar could not be decoded.*"
                                                 r"pool-0\.tar \(damaged shard\): .*cut short after \d+ whole samples"),
    "garbage tar shard": Case(garbage_tar, r"pool-0\.tar \(damaged shard\): .*is not a tar archive"),
    "refused rerun": Case(refused_rerun, r"round-0/teacher was finished with other settings \(changed: seed\)"),
    "changed teacher.lr": Case(changed_teacher_lr, r"\(changed: teacher\.lr\)"),
    "changed student.unlabeled_ratio": Case(changed_unlabeled_ratio, r"\(changed: student\.unlabeled_ratio\)"),
    "changed setting of a started stage": Case(changed_setting_of_a_started_stage,
                                               r"round-1/student was started with other settings \(changed: "
                                               r"student\.lr\)"),
    "corrupt final weights": Case(corrupt_final_weights, r"final\.safetensors is not a readable safetensors file.*"
                                                         r"delete its stage folder"),
    "empty class folder": Case(empty_class_folder, r"data\.labeled: class folder .*violet holds no images"),
    "one class": Case(one_class, r"data\.labeled: .* has 1 class \(red\); classification needs at least 2"),
    "missing labeled folder": Case(missing_labeled_folder, r"data\.labeled: folder .*nowhere not found"),
    "missing test folder": Case(missing_test_folder, r"data\.test: folder .*nowhere not found"),
    "shard pattern matching nothing": Case(missing_shards, r"WebDataset shard .*pool-0\.tar not found"),
    "no decodable image in the pool": Case(undecodable_pool, r"no image of the unlabeled pool could be decoded "
                                                             r"\(4 of 4 failed"),
    "runs_dir is a file": Case(runs_dir_is_a_file, r"a-file.*runs_dir and the run folder must be writable"),
    "report folder cannot be written": Case(report_cannot_write, r"report.*must be writable"),
    "weights with other tensors": Case(weights_with_other_tensors, r"tensors are not those of its described model"),
    "threads=-1": Case(lambda tmp, _: (["run", str(folder_data(tmp)), "threads=-1"], None), r"'threads': must be >= 1"),
    "precision=fp16": Case(lambda tmp, _: (["run", str(folder_data(tmp)), "precision=fp16"], None),
                           r"'precision': must be auto, bf16 or fp32"),
    "teacher.epochs=.inf": Case(lambda tmp, _: (["run", str(folder_data(tmp)), "teacher.epochs=.inf"], None),
                                r"'teacher\.epochs': must be a finite number"),
    "config is a directory": Case(config_is_a_directory, r"is a directory; give a YAML file"),
    "init file missing": Case(lambda tmp, _: (["run", str(folder_data(tmp)), "rounds=1", f"init=[{tmp / 'nope.pth'}]"], None),
                              r"init\[0\]: .*nope\.pth not found"),
    "init a timm model without weights": Case(
        # timm builds such a model with random weights, and says so only in a log line
        lambda tmp, _: (["run", str(folder_data(tmp)), "init=[timm/noisystudent_resnet_tiny_32]"], None),
        r"init timm/noisystudent_resnet_tiny_32: timm has no pretrained weights for noisystudent_resnet_tiny_32; give"),
    "init a hub tag that does not exist": Case(
        lambda tmp, _: (["plan", str(folder_data(tmp)), "--no-probe", "init=[timm/resnet18.nosuchtag]"], None),
        r"init timm/resnet18\.nosuchtag: Invalid pretrained tag \(nosuchtag\) for resnet18\. "
        r"`timm\.list_pretrained\('resnet18\*'\)` lists its tags"),
    "scalar where a section goes": Case(scalar_where_a_section_goes, r"'teacher': is a section of keys, got 5"),
    "NaN weights": Case(evaluate_nan_weights, r"nan\.safetensors: tensor .* holds NaN or Inf values"),
    "init from NaN weights": Case(init_from_nan_weights, r"init .*nan\.safetensors: tensor .* holds NaN or Inf"),
    "init from a text file": Case(init_from_a_text_file, r"init .*notes\.pth cannot be read as weights "
                                                         r"\(\w+\); give"),
    "evaluate on other classes": Case(evaluate_on_other_classes,
                                      r"weights-0\.safetensors is a model of 3 classes \(unnamed\) on 3-channel "
                                      r"images, the test set has 10 classes \(T-shirt/top, .*\) on 1-channel"),
    "label with a teacher of other classes": Case(label_with_a_teacher_of_other_classes,
                                                  r"weights-0\.safetensors is a model of 3 classes \(unnamed\) on "
                                                  r"3-channel images, the unlabeled pool's data has 10 classes"),
    "baseline of other classes": Case(baseline_of_other_classes, r"weights-0\.safetensors is a model of 3 classes"),
    "pool rewritten under the same names": Case(pool_rewritten_under_the_same_names,
                                                r"from another pool \(pool\.items_sha256: '\w+' in the store"),
    "label copied shards": Case(label_copied_shards, r"pool-\{0\.\.1\}\.tar holds the sample '\w+/\d+\.png' more "
                                                     r"than once"),
    "predict copied shards": Case(predict_copied_shards, r"holds the sample '\w+/\d+\.png' more than once"),
    "sweep variant setting name=": Case(lambda tmp, _: (sweep_file(tmp, "variants: {a: [], b: [name=mine]}\n"), None),
                                        r"variant 'b': name=mine would be replaced: the sweep names each run"),
    "sweep overrides setting runs_dir=": Case(
        lambda tmp, _: (sweep_file(tmp, f"overrides: [runs_dir={tmp}]\nvariants: {{a: []}}\n"), None),
        r"overrides: runs_dir=.* would be replaced.*set the sweep file's runs_dir or seeds key instead"),
    "sweep seed listed twice": Case(lambda tmp, _: (sweep_file(tmp, "seeds: [0, 1, 0]\nvariants: {a: []}\n"), None),
                                    r"sweep\.yaml: seeds lists 0 more than once; list each once"),
    "sweep --seeds listed twice": Case(lambda tmp, _: ([*sweep_file(tmp, "variants: {a: []}\n"), "--seeds", "3,3"],
                                                       None), r"--seeds lists 3 more than once"),
    "predict --decode-threads -3": Case(lambda tmp, _: (predict(tmp, images(tmp), "--decode-threads", "-3"), None),
                                        r"--decode-threads -3: must be >= 0"),
    "predict --max-bad-fraction 2": Case(lambda tmp, _: (predict(tmp, images(tmp), "--max-bad-fraction", "2"), None),
                                         r"--max-bad-fraction 2\.0: must be between 0 and 1"),
    "predict into a folder": Case(lambda tmp, _: (["predict", str(weights(tmp, 0)), str(tmp), "--output", str(tmp)],
                                                  None), r"--output .* is a folder; give a file in it"),
    "predict of a missing folder": Case(lambda tmp, _: (predict(tmp, tmp / "nowhere"), None),
                                        r"^noisystudent: error: SOURCE: folder .*nowhere not found"),
    "predict of undecodable images": Case(predict_undecodable, r"3 of 3 images of .*junk could not be decoded \(more "
                                                               r"than --max-bad-fraction=0\.01\).*the chunks predicted "
                                                               r"so far stay in .*out\.csv\.parts for the rerun"),
    "config not UTF-8": Case(latin1_config, r"latin1\.yaml is not UTF-8 text \(byte 9: invalid"),
    "plan of a config not UTF-8": Case(lambda tmp, _: (["plan", latin1_config(tmp, _)[0][1], "--no-probe"], None),
                                       r"latin1\.yaml is not UTF-8 text"),
    "no such bundled config": Case(lambda tmp, _: (["config", "nosuch"], None),
                                   r"config nosuch: no such file, nor a bundled config of that name; bundled: demo, demo-resnet, "
                                   r"imagenet-paper, imagenet-paper-v1, smoke"),
    "report of a missing folder": Case(lambda tmp, _: (["report", str(tmp / "runs" / "nosuch")], None),
                                       r"run folder .*nosuch not found; give a run's folder"),
}


@pytest.mark.parametrize("name", CASES, ids=[name.replace(" ", "-") for name in CASES])  # ids a shell can pass
def test_a_bad_input_stops_with_one_line_naming_the_fix_and_loses_nothing(name, tmp_path, finished_run, capsys):
    case = CASES[name]
    argv, kept = case.setup(tmp_path, finished_run)
    before = files_digest(kept) if kept is not None else None
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert __import__("re").search(case.message, err), err
    if kept is not None:
        assert files_digest(kept) == before, "a refused command changes nothing that was there"
    assert not list(tmp_path.rglob(".*.tmp")), "no half-written file is left behind"


def offline(monkeypatch, tmp: Path, how: str) -> list[tuple]:
    """This process without internet, as on a machine that has none: every name lookup and connection
    fails (`socket`), or the hub library is in its offline mode (`HF_HUB_OFFLINE`). Empty weight
    caches, so weights downloaded on this machine before do not count. Returns the lookups tried."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp / "hf-cache"))  # what HF_HUB_CACHE sets at import
    monkeypatch.setenv("TORCH_HOME", str(tmp / "torch-home"))  # timm's cache of weights it fetches by URL
    lookups = []
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import

    def no_network(*args, **kwargs):
        lookups.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (no network in this test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return lookups


@pytest.mark.parametrize("how", ["socket", "HF_HUB_OFFLINE"])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_init_from_hub_weights_without_internet_stops_at_once_naming_the_model_and_the_fix(command, how, tmp_path,
                                                                                         monkeypatch, capsys):
    """timm's own download asks the hub five times per file name before it gives up (a minute), and
    a run loads a round's init only when the round starts: refused before anything trains, after
    one question to the hub at most."""
    lookups = offline(monkeypatch, tmp_path, how)
    config = folder_data(tmp_path)
    argv = [command, str(config), "rounds=1", "init=[null,timm/test_efficientnet.r160_in1k]"]
    capsys.readouterr()
    assert main(argv + (["--no-probe"] if command == "plan" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "init timm/test_efficientnet.r160_in1k: the weights of test_efficientnet.r160_in1k must be downloaded, " \
           "and timm/test_efficientnet.r160_in1k cannot be reached" in err, err
    assert "copy that folder here, or save the model's state_dict to a .safetensors file and point init at it" in err
    assert "HF_HUB_OFFLINE unset" in err
    # one question to the hub, not retried (its HTTP client may look the name up twice); timm's own
    # download asked 6 times for each of 2 file names
    assert len(lookups) <= 2, lookups
    assert not (tmp_path / "runs" / "demo" / "round-0").exists(), "refused before any stage started"


def test_hub_weights_in_the_local_cache_load_without_internet(tmp_path, monkeypatch):
    """Weights downloaded before (here: a file laid out as the Hugging Face cache keeps a download)
    load offline through timm's own loading, without a question to the hub."""
    import timm

    from noisystudent.models import load_initial_weights

    lookups = offline(monkeypatch, tmp_path, "socket")
    torch.manual_seed(1)
    hub = timm.create_model("test_efficientnet", num_classes=1000)
    snapshot = tmp_path / "hf-cache" / "models--timm--test_efficientnet.r160_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in hub.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    model = build_model("test_efficientnet", 3, 3)
    load_initial_weights(model, "timm/test_efficientnet.r160_in1k")
    assert not lookups
    loaded, own = model.backbone.state_dict(), hub.state_dict()
    assert all(torch.equal(loaded[k], own[k]) for k in own if not k.startswith("classifier."))
    assert loaded["classifier.weight"].shape == (3, own["classifier.weight"].shape[1]), "a new head for 3 classes"


def test_a_damaged_shard_within_the_tolerance_is_listed_in_the_manifest_and_named(tmp_path, finished_run, capsys):
    import json

    argv, _ = truncated_shard(tmp_path, finished_run)
    capsys.readouterr()
    assert main([*argv, "data.max_bad_fraction=0.5"]) == 0
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    (entry,) = manifest["shards"][0]["bad_files"]
    assert entry["id"] == "pool-0.tar (damaged shard)" and "cut short after" in entry["reason"]
    assert manifest["bad_files"] == 1 and 0 < manifest["count"] < 60
    assert f"warning: {entry['reason']}" in capsys.readouterr().err, "a loss no count covers is said, not only listed"
    assert "at least 1 sample after them is lost" in entry["reason"]


def test_a_shard_cut_inside_a_sample_keeps_every_whole_sample_before_it(tmp_path):
    from noisystudent.data import open_pool

    shard = pool_shard(tmp_path, images=9)
    with tarfile.open(shard) as archive:
        fifth = archive.getmembers()[4]
    shard.write_bytes(shard.read_bytes()[:fifth.offset_data + fifth.size // 2])  # its header whole, its data cut
    ids = [image_id for image_id, _ in open_pool(str(shard), 16, 3, 1.0, list(COLORS)).items()]
    assert len(ids) == 5 and ids[-1] == "pool-0.tar (damaged shard)", "the 4 whole samples, then the damage"


def test_a_run_on_a_damaged_shard_says_so_on_the_console_in_the_summary_and_the_report(tmp_path, finished_run):
    import json

    _, config = truncated_shard(tmp_path, finished_run)[0][-2:]
    lines = []
    run(load_config(Path(config), ["data.max_bad_fraction=0.5"]), log=lines.append)
    summary = json.loads((tmp_path / "runs" / "demo" / "summary.json").read_text())
    (reason,) = summary["rounds"][0]["damaged_shards"]
    assert "pool-0.tar is cut short after" in reason and summary["rounds"][0]["undecodable"] == 1
    assert sum(reason in line for line in lines) == 2, "when the round labels, and in the closing summary"
    assert reason in (tmp_path / "runs" / "demo" / "report.md").read_text()


def test_changing_only_the_checkpoint_interval_resumes_a_started_stage(tmp_path, finished_run):
    run_dir, overrides = copy_of(finished_run, tmp_path)
    (run_dir / "round-1/student/DONE").unlink()
    assert main(["run", str(write_config(tmp_path, overrides + ["student.checkpoint_every=7"]))]) == 0
    assert (run_dir / "round-1/student/DONE").is_file()


def test_the_summary_of_a_run_without_rounds_names_no_student():
    summary = {"teacher_top1": 0.8, "final_top1": 0.8, "rounds": [],
               "robustness": {"teacher": {"mce": 100.0}, "student": {"mce": 100.0}}}
    assert format_summary(summary) == "Round-0 teacher 80.00% test top-1; rounds=0, so no student was trained."


def test_a_shard_that_lost_its_end_block_is_damaged_too(tmp_path):
    from noisystudent.data import open_pool

    shard = pool_shard(tmp_path, images=9)
    with tarfile.open(shard) as archive:  # cut right after the last member's data: only the end block is lost
        last = archive.getmembers()[-1]
    shard.write_bytes(shard.read_bytes()[:last.offset_data + last.size + (-last.size % 512)])
    items = list(open_pool(str(shard), 16, 3, 1.0, list(COLORS)).items())
    assert [image_id for image_id, _ in items][-1] == "pool-0.tar (damaged shard)"
    assert len(items) == 9, "the 8 samples before the last, which may be incomplete, and the damage"


def test_changing_only_evaluation_settings_re_evaluates_without_retraining(tmp_path, finished_run, tiny_idx_root):
    import json

    run_dir, overrides = copy_of(finished_run, tmp_path)
    trained = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != "eval.json"
               and path.parent.name in ("teacher", "student", "labels", "selection")}
    before = json.loads((run_dir / "round-1/student/eval.json").read_text())
    assert "corruption_errors" not in before
    suite = ["evaluate.robustness=true", "evaluate.images=12", "evaluate.severities=[1]",
             "evaluate.corruptions=[gaussian_noise,contrast]", "evaluate.perturbation_frames=2", "evaluate.pgd_steps=1",
             f"evaluate.cache_dir={tmp_path / 'cache'}"]
    assert main(["run", str(write_config(tmp_path, overrides + suite))]) == 0
    after = json.loads((run_dir / "round-1/student/eval.json").read_text())
    assert after["top1"] == before["top1"] and after["robustness_images"] == 12
    assert set(after["corruption_errors"]) == {"gaussian_noise", "contrast"} and after["mce"] is not None
    assert all(path.read_bytes() == data for path, data in trained.items()), "no stage was redone but the evaluations"


def test_a_second_command_on_a_folder_in_use_stops_naming_the_holder_and_changes_nothing(tmp_path, finished_run, capsys):
    import os

    from noisystudent.io import LOCK, exclusive_lock

    run_dir, overrides = copy_of(finished_run, tmp_path)
    (run_dir / "round-1/student/DONE").unlink()  # work left to do, which the second command must not start
    config = write_config(tmp_path, overrides)
    tail, store = labeled_store(tmp_path / "store-data")
    (store / "manifest.json").unlink()
    parts = tmp_path / "out.csv.parts"  # where a predict in progress puts its chunks
    parts.mkdir()
    before = files_digest(run_dir), files_digest(store), files_digest(parts)
    capsys.readouterr()
    for folder, argv in ((run_dir, ["run", str(config)]),
                         (store, ["label", str(weights(tmp_path, 0)), str(store), *tail]),
                         (parts, predict(tmp_path, images(tmp_path)))):
        with exclusive_lock(folder):  # as another process running on it holds it
            assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{folder} is in use by another noisystudent command (pid " \
                                               f"{os.getpid()})" in err, err
    assert (files_digest(run_dir), files_digest(store), files_digest(parts)) == before
    assert main(["run", str(config)]) == 0, "the holder gone, the run goes on"
    assert not (run_dir / LOCK).exists(), "and it let go of its folder as it ended, leaving no lock file"


@pytest.mark.parametrize("argv", [["models"], ["config", "smoke"]], ids=" ".join)
def test_a_reader_that_goes_away_ends_the_command_quietly(argv):
    """`noisystudent models | head -1`: the reader has what it wanted; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes its first line
    try:
        result = subprocess.run([sys.executable, "-m", "noisystudent.cli", *argv], stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == b"", result.stderr.decode()


def test_a_stage_that_failed_before_it_made_anything_takes_the_fix_it_advised(tmp_path, finished_run):
    import json

    run_dir, overrides = copy_of(finished_run, tmp_path)
    shutil.rmtree(run_dir / "round-1/student")
    selection = run_dir / "round-1/selection"
    (selection / "DONE").unlink()  # as a selection that no image passed leaves it, with its inputs.json
    inputs = json.loads((selection / "inputs.json").read_text())
    inputs["selection"]["confidence_threshold"] = 0.99
    (selection / "inputs.json").write_text(json.dumps(inputs))
    assert main(["run", str(write_config(tmp_path, overrides + [f"init=[null,{nan_weights(tmp_path)}]"]))]) == 2
    assert main(["run", str(write_config(tmp_path, overrides))]) == 0, "neither the selection nor the student refuses"
    assert json.loads((run_dir / "round-1/student/inputs.json").read_text())["models"]["init"] is None
