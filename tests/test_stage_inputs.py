"""Every stage's inputs (its fingerprint) are what they were when tests/golden/stage_inputs.json
was written, for the bundled configs and the demo with every optional input on: a run directory
made then still resumes and skips its finished stages. Rewrite the file (`python
tests/test_stage_inputs.py`) only with a contract change that means to change them, and raise
runs.CONTRACT with it."""

import json
from pathlib import Path

import pytest

from noisystudent.cli import bundled_config
from noisystudent.config import load_config
from noisystudent.stages import plan_run

GOLDEN = Path(__file__).parent / "golden" / "stage_inputs.json"
CASES = {name: (name, []) for name in ("demo", "smoke", "imagenet-paper", "imagenet-paper-v1", "demo-resnet")}
CASES["demo-all-optional"] = ("demo", ["rounds=2", "finetune.epochs=1", "noise.teacher=true", "noise.labeling=true",
                                       "data.reference_fraction=0.1", "labels.ood_score=energy"])


def stage_inputs(name: str) -> list[dict]:
    config_name, overrides = CASES[name]
    config = load_config(bundled_config(config_name), overrides + ["runs_dir=runs", "name=golden"])
    run = Path("runs") / "golden"
    return [{"stage": stage.path.relative_to(run).as_posix(), "marker": stage.marker.name, "resumes": stage.resumes,
             "inputs_hash": stage.inputs_hash, "inputs": stage.inputs} for stage in plan_run(config).stages()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_stage_inputs_and_their_hashes_match_the_recorded_ones(name):
    assert stage_inputs(name) == json.loads(GOLDEN.read_text())[name]


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({name: stage_inputs(name) for name in CASES}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
