from pathlib import Path

import pytest

from noisystudent.cli import build_parser, main, resolve_config
from noisystudent.config import Config, load_config
from noisystudent.errors import ConfigError


def test_defaults_are_the_papers_where_the_paper_says():
    config = Config()
    assert config.selection.confidence_threshold == 0.3
    assert config.noise.dropout == 0.5 and config.noise.survival_prob == 0.8
    assert config.noise.randaugment_layers == 2 and config.noise.randaugment_magnitude == 27
    assert config.labels.kind == "soft"


def test_yaml_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("student:\n  unlabeled_ratio: 7\nnoise:\n  dropout: 0.1\n")
    config = load_config(path, ["noise.dropout=0", "models=resnet_tiny_32,resnet_small_32", "data.test_limit=null"])
    assert config.student.unlabeled_ratio == 7.0 and isinstance(config.student.unlabeled_ratio, float)
    assert config.noise.dropout == 0.0
    assert config.models == ["resnet_tiny_32", "resnet_small_32"]
    assert config.data.test_limit is None


@pytest.mark.parametrize("override, key", [
    ("student.unlabeled_ratio=-1", "student.unlabeled_ratio"),
    ("selection.confidence_threshold=1.5", "selection.confidence_threshold"),
    ("teacher.epochs=abc", "teacher.epochs"),
    ("noise.dropuot=0.2", "noise.dropuot"),
    ("labels.kind=fuzzy", "labels.kind"),
    ("models=resnet_tiny_32,not_a_model", "models[1]"),
    ("noise.randaugment=maybe", "noise.randaugment"),
    ("rounds=1.5", "rounds"),
])
def test_bad_value_names_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[override])
    assert error.value.key == key
    assert key in str(error.value)


def test_bad_config_exits_2_with_one_line_and_no_traceback(capsys, tmp_path):
    code = main(["run", str(tmp_path / "missing.yaml")])
    assert code == 2 and "missing.yaml not found" in capsys.readouterr().err
    code = main(["demo", "--quick", "selection.confidence_threshold=2", f"runs_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "selection.confidence_threshold" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_every_help_teaches_with_examples_that_are_valid_commands(capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])  # examples name configs/ from the repository root
    commands = build_parser()._subparsers._group_actions[0].choices
    for argv in ([], *([name] for name in commands)):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        examples = [line.split("#")[0].split(">")[0].split() for line in text.splitlines()
                    if line.strip().startswith("noisystudent ")]
        assert examples, f"`noisystudent {' '.join(argv)} --help` shows no example command"
        parsed = [build_parser().parse_args(example[1:]) for example in examples]  # a bad example exits
        assert not argv or argv[0] in [args.command for args in parsed], f"no example of {argv[0]}"
        for args in parsed:
            if args.command in ("run", "demo", "config"):  # every config named, key and value is valid
                load_config(resolve_config(getattr(args, "config", None)), args.overrides)


@pytest.mark.parametrize("preset, models, ratios", [
    # arXiv:1911.04252v4, section 4: B7 -> L2 -> L2 -> L2, unlabeled ratios 14, 14, 28
    ("imagenet-paper", ["efficientnet-b7"] + ["efficientnet-l2"] * 3, [14, 14, 28]),
    # arXiv:1911.04252v1: B7 -> B7 -> L0 -> L1 -> L2 -> L2, ratio 3
    ("imagenet-paper-v1", ["efficientnet-b7", "efficientnet-b7", "efficientnet-l0", "efficientnet-l1",
                           "efficientnet-l2", "efficientnet-l2"], [3] * 5),
])
def test_imagenet_paper_presets_validate_round_by_round_and_their_models_build_on_meta(preset, models, ratios):
    from noisystudent.cli import bundled_config
    from noisystudent.models import check_student_size, count_parameters, model_resolutions
    from noisystudent.stages import plan_run

    config = load_config(bundled_config(preset))
    assert [config.model_for_round(k) for k in range(config.rounds + 1)] == models
    assert [config.student_for_round(k).unlabeled_ratio for k in range(1, config.rounds + 1)] == ratios
    for k in range(1, config.rounds + 1):
        student = config.student_for_round(k)
        assert student.batch_size == 2048 and student.optimizer == "rmsprop" and student.lr == pytest.approx(0.016 * 2048 / 256)
        assert student.loss_weighting == "official" and student.lr_schedule == "exponential"
        check_student_size(config.model_for_round(k - 1), config.model_for_round(k), 1000, 3, allow_smaller=False)
    plan = plan_run(config)
    assert [r.student.inputs["student"]["unlabeled_ratio"] for r in plan.rounds] == ratios, "each round's own ratio"
    assert config.selection.images_per_class == 130_000 and config.noise.randaugment_magnitude == 27
    assert config.noise.teacher and config.evaluate.alexnet_mce and config.teacher.weight_decay_norms is False
    assert config.finetune.epochs == 1.5 and config.finetune.resolution is None, "FixRes at each model's own"
    # official efficientnet_builder.py resolutions (L0 / L1: the paper's Table 7); crop: S / (S + 32)
    assert config.data.resolution == "model" and config.student.crop == "inception"
    train_test = {"efficientnet-b7": (600, 600), "efficientnet-l0": (380, 500), "efficientnet-l1": (380, 500),
                  "efficientnet-l2": (475, 800)}
    for name in set(models):
        resolutions, (train, test) = model_resolutions(name), train_test[name]
        assert (resolutions["train_resolution"], resolutions["resolution"]) == (train, test), name
        assert resolutions["crop_fraction"] == pytest.approx(test / (test + 32)), name
    assert count_parameters(models[-1], 1000, 3) > 470e6


def test_per_round_student_settings_are_checked_like_the_student_section():
    with pytest.raises(ConfigError, match=r"student_rounds\[1\].lr"):
        load_config(overrides=["rounds=2", "student_rounds=[{unlabeled_ratio: 5}, {lr: -1}]"])
    with pytest.raises(ConfigError, match=r"student_rounds\[0\].bogus.*unknown key"):
        load_config(overrides=["rounds=2", "student_rounds=[{bogus: 1}]"])
    config = load_config(overrides=["rounds=3", "student_rounds=[{unlabeled_ratio: 5}]"])
    assert [config.student_for_round(k).unlabeled_ratio for k in (1, 2, 3)] == [5, 3, 3]
