import pytest

from noisystudent.cli import main
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


def test_help_teaches_with_examples(capsys):
    for argv in (["--help"], ["run", "--help"], ["demo", "--help"], ["evaluate", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "example" in capsys.readouterr().out
