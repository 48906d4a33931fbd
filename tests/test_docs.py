"""docs/architecture.md names the stages, config sections and modules that exist, and no others."""

import dataclasses
from pathlib import Path

from noisystudent.config import Config, load_config
from noisystudent.stages import plan_run

ROOT = Path(__file__).parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def table_after(heading_line: str) -> list[list[str]]:
    """Rows (cells, backticks stripped) of the Markdown table after the line starting so, without its header."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_line))
    rows = []
    for line in lines[start + 1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows[1:]


def test_the_stage_table_lists_every_stage_a_run_plans():
    folders = {row[0]: row[1] for row in table_after("Stages, their folders")}
    plan = plan_run(load_config(overrides=["rounds=1", "finetune.epochs=1"]))
    trained = {stage.path.name: stage for stage in plan.stages() if not stage.redo_when_changed}
    assert set(folders) - {"evaluation"} == set(trained), "every planned stage is in the table, and nothing else"
    for name, stage in trained.items():
        assert stage.path.parent.name.replace("1", "k") == folders[name].split("/")[0], name
        assert folders[name].endswith(f"/{name}"), name
    assert "evaluation" in folders and any(stage.redo_when_changed for stage in plan.stages())


def test_the_config_section_table_lists_every_section():
    sections = {field.name for field in dataclasses.fields(Config) if dataclasses.is_dataclass(getattr(Config(), field.name))}
    assert {row[0] for row in table_after("Config sections")} == sections


def test_every_module_named_exists():
    for row in table_after("`src/noisystudent/` has a package per kind of work"):
        for part in row[0].split("`, `"):
            assert (ROOT / "src" / "noisystudent" / part.strip("`")).exists(), part
