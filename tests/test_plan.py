"""`noisystudent plan`: every stage of the run, sizes from the config, times from a probe."""

import json
from pathlib import Path

from noisystudent.cli import main
from noisystudent.pipeline import Pipeline
from noisystudent.plan import plan_costs, selected_image_cost
from noisystudent.runs import plan_run
from noisystudent.train import steps_for


def test_plan_lists_every_stage_with_sizes_and_writes_nothing(tiny_config, capsys):
    costs = plan_costs(tiny_config, probe=False, log=lambda line: None)
    stages = plan_run(tiny_config).stages()
    expected = [f"{s.path.parent.name}/{s.path.name}" + (" (eval)" if s.redo_when_changed else "") for s in stages]
    assert [cost.stage for cost in costs] == expected
    teacher = costs[0]
    steps, _ = steps_for(tiny_config.teacher, 100, None)  # 10 labels per class
    assert teacher.steps == steps and teacher.images == steps * tiny_config.teacher.batch_size
    assert teacher.parameters > 0 and teacher.flops_per_image > 0 and teacher.disk_bytes > 4 * teacher.parameters
    labels = costs[2]
    assert labels.stage == "round-1/labels" and labels.images == 500 and labels.disk_bytes > 0  # the pool
    assert all(cost.seconds is None for cost in costs if cost.steps), "no probe, no training time"
    assert not Path(tiny_config.runs_dir).exists(), "a plan writes nothing under runs_dir"


def test_plan_with_a_probe_times_every_stage(tiny_config, capsys):
    code = main(["plan", "smoke", f"runs_dir={tiny_config.runs_dir}", f"data.root={tiny_config.data.root}", "data.labels_per_class=10",
                 "data.unlabeled_limit=200", "data.test_limit=50", "models=resnet_tiny_32", "rounds=1",
                 "evaluate.robustness=false", "--json", "--probe-steps", "2", "threads=2"])
    assert code == 0
    costs = json.loads(capsys.readouterr().out)
    assert [cost["stage"] for cost in costs][:3] == ["round-0/teacher", "round-0/teacher (eval)", "round-1/labels"]
    assert all(cost["seconds"] is not None and cost["seconds"] > 0 for cost in costs)
    student = next(cost for cost in costs if cost["stage"] == "round-1/student")
    assert student["images"] == student["steps"] * (32 + 96), "a student step: labeled + 3x pseudo-labeled images"


def test_the_selections_disk_follows_its_storage(tiny_config):
    """pixels: the decoded images (1 x 32 x 32 bytes each here); encoded: what the pool's own
    bytes measure, sampled (Fashion-MNIST rows as PNG: smaller than their pixels)."""
    disk = {}
    for storage in ("pixels", "encoded"):
        tiny_config.selection.storage = storage
        selection = plan_costs(tiny_config, probe=False, log=lambda line: None)[3]
        assert selection.stage == "round-1/selection"
        disk[storage] = selection.disk_bytes / selection.images
    assert disk["pixels"] == 32 * 32
    assert 50 < disk["encoded"] < 32 * 32
    pool = Pipeline(tiny_config).unlabeled
    assert selected_image_cost(pool, "pixels")[1] == 0, "pixels are read, not decoded"
    assert selected_image_cost(pool, "encoded")[1] > 0, "encoded images are decoded every time a batch reads them"
