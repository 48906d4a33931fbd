"""A sweep runs variants x seeds as ordinary runs, resumably, and tabulates them with error bars."""

import json
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from noisystudent.cli import main
from noisystudent.provenance import UNRECORDED
from noisystudent.sweep import Sweep, summarize
from waiting import TIMEOUT_S, wait_for


def write_sweep(tmp_path: Path, tiny_idx_root: Path, variants: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""
name: tiny
runs_dir: {tmp_path / 'runs'}
overrides: [data.root={tiny_idx_root}, data.labels_per_class=10, rounds=1, "models=resnet_tiny_32",
            teacher.epochs=8, teacher.batch_size=20, teacher.warmup_epochs=1, student.epochs=1,
            student.batch_size=10, student.unlabeled_ratio=2, selection.confidence_threshold=0,
            noise.randaugment_pixels=relative, evaluate.robustness=false, labels.shard_size=200]
seeds: [0, 1]
reference: full
variants:
{variants}
""")
    return path


def test_a_sweep_runs_every_variant_and_seed_once_and_tabulates_paired_differences(tmp_path, tiny_idx_root, capsys):
    path = write_sweep(tmp_path, tiny_idx_root, "  full: []\n  hard: [labels.kind=hard]\n")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("to run") == 4
    assert main(["sweep", str(path), "--jobs", "2"]) == 0
    root = tmp_path / "runs" / "sweeps" / "tiny"
    table = json.loads((root / "table.json").read_text())
    summaries = {(v, s): json.loads((root / f"{v}-seed{s}" / "summary.json").read_text())
                 for v in ("full", "hard") for s in (0, 1)}
    finals = [summaries["hard", s]["final_top1"] for s in (0, 1)]
    assert table["complete"] and table["variants"]["hard"]["final_top1"]["mean"] == pytest.approx(statistics.fmean(finals))
    assert table["variants"]["hard"]["final_top1"]["std"] == pytest.approx(statistics.stdev(finals))
    assert table["variants"]["hard"]["final_top1_by_seed"] == finals and table["variants"]["hard"]["seeds"] == [0, 1]
    paired = [summaries["hard", s]["final_top1"] - summaries["full", s]["final_top1"] for s in (0, 1)]
    assert table["variants"]["hard"]["vs_reference"]["mean"] == pytest.approx(statistics.fmean(paired))
    assert "vs_reference" not in table["variants"]["full"]
    assert summaries["full", 0]["teacher_top1"] == summaries["hard", 0]["teacher_top1"], "same seed, same teacher"
    assert (root / "plot.png").read_bytes()[:4] == b"\x89PNG" and "hard" in (root / "table.md").read_text()
    # a finished sweep does no work again; a run that lost its summary (as a kill leaves it) is redone alone
    (root / "hard-seed1" / "summary.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in root.glob("full-seed*/summary.json")}
    assert main(["sweep", str(path)]) == 0
    assert "1 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in root.glob("full-seed*/summary.json")} == before

    # a run made on another machine (another numerics fingerprint) does not pair with this machine's reference
    moved = json.loads((root / "hard-seed1" / "summary.json").read_text())
    moved["provenance"]["machine"]["numerics"] = "another-cpu"
    (root / "hard-seed1" / "summary.json").write_text(json.dumps(moved))
    assert main(["sweep", str(path)]) == 0 and "0 to run" in capsys.readouterr().out
    table = json.loads((root / "table.json").read_text())
    hard = table["variants"]["hard"]
    assert hard["seeds"] == [0, 1] and hard["paired_seeds"] == [0] and hard["vs_reference"]["n"] == 1
    assert hard["vs_reference"]["mean"] == pytest.approx(paired[0]) and hard["machine_by_seed"][1] == "another-cpu"
    assert not table["complete"] and table["missing"] == {"hard": 1} and "hard: 1 more runs to pair" in (root / "table.md").read_text()
    # continuing there on a new seed: only the asked runs are made, and the table reads every finished run
    assert main(["sweep", str(path), "--dry-run", "--variants", "full", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "full-seed2: to run" in out and "hard-seed2" not in out and out.count("to run") == 1


@pytest.mark.slow
def test_sigterm_to_a_sweep_stops_its_running_runs_at_a_checkpoint(tmp_path, tiny_idx_root):
    """A scheduler kills the sweep process, not its runs: the sweep passes SIGTERM on, so each run
    checkpoints and stops instead of running on orphaned, and the sweep exits 143."""
    path = write_sweep(tmp_path, tiny_idx_root, "  full: []\n  long: [teacher.epochs=2000, teacher.checkpoint_every=5]\n")
    checkpoint = tmp_path / "runs" / "sweeps" / "tiny" / "long-seed0" / "round-0" / "teacher" / "checkpoints" / "last.pt"
    sweep = subprocess.Popen([sys.executable, "-m", "noisystudent.cli", "sweep", str(path), "--seeds", "0", "--variants", "long"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the sweep sets its SIGTERM handler before it starts a run, and the run saves a checkpoint only
    # inside its own handler's scope: once the checkpoint exists both are ready, however slow the machine
    wait_for(checkpoint.exists, "checkpoint from the sweep's run", sweep)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=TIMEOUT_S)
    assert sweep.returncode == 143, err
    assert "stopped by SIGTERM" in err and "long-seed0: stopped by SIGTERM" in out
    log = (tmp_path / "runs" / "sweeps" / "tiny" / "logs" / "long-seed0.log").read_text()
    assert "stopped by SIGTERM after step" in log, "the run itself got the signal and saved its checkpoint"
    assert not (checkpoint.parent.parent / "DONE").exists()


def test_a_bad_sweep_file_is_refused_naming_the_variant(tmp_path, tiny_idx_root, capsys):
    path = write_sweep(tmp_path, tiny_idx_root, "  full: []\n  broken: [noise.dropout=2]\n")
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "variant 'broken'" in err and "'noise.dropout'" in err and len(err.strip().splitlines()) == 1
    path.write_text("variants: {a: []}\nreference: b\n")
    assert main(["sweep", str(path)]) == 2 and "reference 'b' is not one of the variants" in capsys.readouterr().err


def test_the_paper_ablations_sweep_resolves_every_run():
    from noisystudent.cli import bundled_config, resolve_config
    from noisystudent.sweep import load_sweep

    sweep = load_sweep(bundled_config("sweeps/paper-ablations"), resolve_config)
    assert len(sweep.runs) == 17 * 3 and sweep.reference == "full"
    by_name = {run.config.name: run.config for run in sweep.runs}
    assert by_name["no-noise-seed0"].noise.dropout == 0 and not by_name["no-noise-seed0"].noise.randaugment
    assert by_name["equal-student-seed2"].models == ["resnet_tiny_32"] and by_name["ratio-7-seed1"].student.unlabeled_ratio == 7
    same_steps = by_name["ratio-1-same-steps-seed0"].student
    assert same_steps.epoch_unit == "labeled" and abs(same_steps.epochs * 500 / same_steps.batch_size - 1640) < 1
    assert by_name["teacher-noised-labeling-seed0"].noise.labeling and not by_name["full-seed0"].noise.labeling

    continued = load_sweep(bundled_config("sweeps/paper-ablations"), resolve_config, ["rounds-3", "full"], [7, 8])
    assert [run.config.name for run in continued.runs] == ["rounds-3-seed7", "rounds-3-seed8", "full-seed7", "full-seed8"]
    assert continued.seeds == [0, 1, 2] and len(continued.variants) == 17


def test_the_supervised_baseline_sweep_trains_teachers_alone_with_and_without_noise():
    from noisystudent.cli import bundled_config, resolve_config
    from noisystudent.sweep import load_sweep

    sweep = load_sweep(bundled_config("sweeps/supervised-baseline"), resolve_config)
    by_name = {run.config.name: run.config for run in sweep.runs}
    assert len(sweep.runs) == 8 * 3 and all(config.rounds == 0 for config in by_name.values())
    assert by_name["medium-noised-seed1"].noise.teacher and by_name["medium-noised-seed1"].models == ["resnet_medium_32"]
    assert not by_name["small-plain-seed0"].noise.teacher and by_name["small-noised-600-seed2"].teacher.epochs == 600
    assert by_name["small-noised-1200-seed1"].teacher.epochs == 1200
    assert by_name["small-noised-2400-seed2"].teacher.epochs == 2400
    ema = by_name["small-noised-ema-seed0"]
    assert ema.noise.teacher and ema.teacher.ema_decay == 0.999 and by_name["small-noised-seed0"].teacher.ema_decay == 0


def test_the_demo_levers_sweep_gives_each_ratio_the_demos_pool_images_per_round():
    from noisystudent.cli import bundled_config, resolve_config
    from noisystudent.sweep import load_sweep
    from noisystudent.train.batches import joint_batch_sizes
    from noisystudent.train.loop import steps_for

    sweep = load_sweep(bundled_config("sweeps/demo-levers"), resolve_config)
    images_per_round = {}
    for run in sweep.runs:
        student = run.config.student_for_round(1)
        steps, _ = steps_for(student, 1000, 59000)
        images_per_round[run.variant] = steps * sum(joint_batch_sizes(student.batch_size, student.unlabeled_ratio))
    # the ratio variants change how the compute is cut into steps, not how much of it there is;
    # teacher-600 pays for its teacher's 400 more epochs with 14% fewer student images; the init-teacher
    # variants spend theirs on more rounds or a larger model
    assert {name: round(images / images_per_round["demo"], 2) for name, images in images_per_round.items()} == {
        "demo": 1.0, "noised-teacher": 1.0, "ratio-2": 1.0, "ratio-1": 1.0, "ratio-1-hard": 1.0,
        "ratio-1-magnitude-5": 1.0, "teacher-600": 0.86, "ratio-1-no-dropout": 1.0, "ratio-1-input-noise-only": 1.0,
        "init-teacher-3-rounds": 0.8, "init-teacher-medium": 0.63,
        "init-teacher-5-rounds": 0.46}
    by_name = {run.config.name: run.config for run in sweep.runs}
    assert by_name["teacher-600-seed0"].teacher.epochs == 600 and by_name["ratio-1-hard-seed0"].labels.kind == "hard"
    assert by_name["ratio-1-no-dropout-seed0"].noise.dropout == 0 and by_name["ratio-1-no-dropout-seed0"].noise.survival_prob == 0.8
    assert by_name["ratio-1-input-noise-only-seed0"].noise.survival_prob == 1.0
    three_rounds, medium = by_name["init-teacher-3-rounds-seed0"], by_name["init-teacher-medium-seed0"]
    assert three_rounds.rounds == 3 and three_rounds.init_for_round(3) == "teacher"
    assert by_name["init-teacher-5-rounds-seed0"].init_for_round(5) == "teacher"
    assert medium.model_for_round(0) == medium.model_for_round(2) == "resnet_medium_32" and medium.init_for_round(2) == "teacher"


def test_the_numerics_fingerprint_is_stable_and_leaves_the_random_state_alone():
    import torch

    from noisystudent.provenance import machine_key, numerics_fingerprint

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(3)
        expected = torch.rand(4)
        torch.manual_seed(3)
        one = numerics_fingerprint(torch.device("cpu"))
        assert torch.equal(torch.rand(4), expected), "the fingerprint must not move the run's random stream"
        assert numerics_fingerprint(torch.device("cpu")) == one and len(one) == 12
    finally:
        torch.set_num_threads(threads)
    assert machine_key({"provenance": {"machine": {"numerics": one}}}) == one
    assert machine_key({"name": "made before provenance was recorded"}) == UNRECORDED


def test_runs_without_a_fingerprint_never_pair_and_unmade_runs_are_counted_apart(tmp_path):
    """Two runs that both recorded no fingerprint may come from two machines: no pair. `missing`
    counts the pairs a variant lacks; `to_make`, the runs nobody has made."""
    def finished(run, final, numerics=None):
        summary = {"teacher_top1": 0.8, "rounds": [{"student_top1": final}], "final_top1": final}
        if numerics:
            summary["provenance"] = {"code": "abc", "machine": {"numerics": numerics}}
        (tmp_path / run).mkdir()
        (tmp_path / run / "summary.json").write_text(json.dumps(summary))

    finished("full-seed0", 0.85), finished("hard-seed0", 0.84)  # before fingerprints: unrecorded, both
    finished("full-seed1", 0.86, "cpu-a"), finished("hard-seed1", 0.87, "cpu-a")
    table = summarize(Sweep("s", tmp_path, "full", ["full", "hard", "ratio-1"], [0, 1, 2], runs=[]))
    hard = table["variants"]["hard"]
    assert hard["paired_seeds"] == [1] and hard["vs_reference"]["mean"] == pytest.approx(0.01)
    assert hard["machine_by_seed"] == [UNRECORDED, "cpu-a"]
    assert table["missing"] == {"full": 1, "hard": 2, "ratio-1": 3}, "pairs: hard's seed 0 is made but unpaired"
    assert table["to_make"] == {"full": 1, "hard": 1, "ratio-1": 3}, "runs: seed 2 of each, all of ratio-1"


def _entry(seeds, finals, per_seed=True, **extra):
    stats = {"mean": statistics.fmean(finals), "std": statistics.stdev(finals), "n": len(finals)}
    return {"seeds": seeds, "teacher_top1": stats, "rounds": [stats], "final_top1": stats,
            **({"final_top1_by_seed": finals} if per_seed else {}), **extra}


def test_a_result_carries_the_earlier_runs_it_does_not_include_beside_the_new_ones():
    """benchmarks/sweep_table.py --carry-from: what docs/paper-fidelity.md's ablation table shows when a sweep
    continues on another machine (its runs there pair only with that machine's reference)."""
    import sys
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from sweep_table import carry

    earlier = {"sweep": "s", "reference": "full", "runs_made_with_commit": "aaa", "commit": "bbb", "variants": {
        "full": _entry([0, 1], [0.70, 0.72]),
        "no-noise": _entry([0, 1], [0.74, 0.75], per_seed=False, paired_against="full (earlier runs)"),
        "full (earlier runs)": _entry([0, 1], [0.71, 0.73], paired_against=None),
        "hard-labels": _entry([0, 1], [0.69, 0.71]),
    }}
    result = {"sweep": "s", "reference": "full", "missing": {"no-noise": 1}, "variants": {
        "full": _entry([0, 1, 3], [0.70, 0.72, 0.69]),  # includes the earlier runs (kept, copied back)
        "no-noise": _entry([3, 4], [0.66, 0.68]),  # made again on this machine
        "hard-labels": _entry([0, 1], [0.69, 0.71]),  # the same runs
    }}
    carry(result, earlier, ["full", "no-noise", "hard-labels"])
    assert list(result["variants"]) == ["full", "full (earlier runs)", "no-noise", "no-noise (earlier runs)", "hard-labels"]
    assert result["carried"] == {"from_commit": "aaa", "variants": ["no-noise (earlier runs)", "full (earlier runs)"]}
    assert result["variants"]["no-noise (earlier runs)"]["paired_against"] == "full (earlier runs)"
    assert result["variants"]["no-noise"] == _entry([3, 4], [0.66, 0.68]) and result["missing"] == {"no-noise": 1}

    moved = {"sweep": "s", "reference": "full", "missing": {}, "variants": {"full": _entry([5, 6], [0.60, 0.62])}}
    carry(moved, earlier, ["full", "no-noise", "hard-labels"])  # the earlier reference is not among these runs
    assert moved["variants"]["full (earlier runs 2)"]["paired_against"] is None
    assert moved["variants"]["hard-labels"]["paired_against"] == "full (earlier runs 2)"
    assert moved["variants"]["no-noise"]["paired_against"] == "full (earlier runs)"
    assert not moved["partial"] and moved["complete"]


def test_the_student_ceiling_sweep_trains_on_true_labels_for_one_demo_students_images():
    from noisystudent.cli import bundled_config, resolve_config
    from noisystudent.sweep import load_sweep
    from noisystudent.train.batches import joint_batch_sizes
    from noisystudent.train.loop import steps_for

    ceiling = load_sweep(bundled_config("sweeps/student-ceiling"), resolve_config)
    levers = load_sweep(bundled_config("sweeps/demo-levers"), resolve_config, ["ratio-1"], [0])
    student = levers.runs[0].config.student_for_round(1)
    steps, _ = steps_for(student, 1000, 59000)
    student_images = steps * sum(joint_batch_sizes(student.batch_size, student.unlabeled_ratio))
    for run in ceiling.runs:
        config = run.config
        assert config.rounds == 0 and config.data.labels_per_class == 6000 and config.noise.teacher
        teacher_steps, _ = steps_for(config.teacher, 60000, None)
        assert abs(teacher_steps * config.teacher.batch_size / student_images - 1) < 0.001, run.variant
    assert {run.config.model_for_round(0) for run in ceiling.runs} == {"resnet_small_32", "resnet_medium_32",
                                                                         "resnet_slim_32"}


def test_a_sweep_without_its_own_runs_dir_puts_its_runs_under_the_base_configs(tmp_path):
    from noisystudent.cli import resolve_config
    from noisystudent.sweep import load_sweep

    (tmp_path / "base.yaml").write_text(f"runs_dir: {tmp_path / 'elsewhere'}\n")
    (tmp_path / "sweep.yaml").write_text(f"name: s\nbase: {tmp_path / 'base.yaml'}\nvariants: {{a: []}}\n")
    sweep = load_sweep(tmp_path / "sweep.yaml", resolve_config)
    assert sweep.root == tmp_path / "elsewhere" / "sweeps" / "s"
    assert [run.folder for run in sweep.runs] == [tmp_path / "elsewhere" / "sweeps" / "s" / "a-seed0"]


def test_a_sweep_made_in_code_is_the_sweep_its_file_would_be(tmp_path):
    """make_sweep takes a sweep file's contents (the benchmarks that run seeds build theirs so),
    with the file's checks, named by where they came from."""
    from noisystudent.cli import resolve_config
    from noisystudent.errors import UserError
    from noisystudent.sweep import load_sweep, make_sweep

    spec = {"name": "s", "base": "smoke", "runs_dir": str(tmp_path), "seeds": [0, 1], "reference": "hard",
            "overrides": ["rounds=1"], "variants": {"soft": ["labels.kind=soft"], "hard": ["labels.kind=hard"]}}
    (tmp_path / "s.yaml").write_text(json.dumps(spec))  # JSON is YAML
    made, loaded = make_sweep(spec, "a benchmark", resolve_config), load_sweep(tmp_path / "s.yaml", resolve_config)
    assert made == loaded and made.root == tmp_path / "sweeps" / "s"
    assert [(run.config.name, run.config.labels.kind) for run in made.runs] == [
        ("soft-seed0", "soft"), ("soft-seed1", "soft"), ("hard-seed0", "hard"), ("hard-seed1", "hard")]
    with pytest.raises(UserError, match="^a benchmark, overrides: seed=3 would be replaced"):
        make_sweep({**spec, "overrides": ["seed=3"]}, "a benchmark", resolve_config)
