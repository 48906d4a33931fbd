"""The run contract: where each stage of a run lives, what its result depends on, when it is done.

    runs/<name>/
      config.yaml                 the resolved config of the last run command that was accepted
      round-0/teacher/            inputs.json, checkpoints/, metrics.jsonl, final.safetensors, DONE, eval.json
      round-k/labels/             the label store (labels/store.py), stats.json, inputs.json, DONE
      round-k/selection/          selection.parquet, images.npy or encoded.bin, stats.json, inputs.json, DONE
      round-k/student/            like the teacher, and its pseudo-label targets (targets-*.npy)
      round-k/finetune/           like the teacher (only with finetune.epochs > 0)
      summary.json, report.html, report.md, report/ (figures)

A stage's inputs are the settings its result depends on, and nothing else, plus the inputs hash
of the stage it reads ("upstream"), so a change anywhere upstream reaches every stage after it;
each stage's module in stages/ defines them, and `stages.plan_run` names every stage of a run.
A stage writes `inputs.json` when it starts and `DONE` (hash, inputs, contract version) last.
Each trained model's evaluation is a stage of its own whose record is its `eval.json`: when
only evaluation settings change (another suite, another subset), the models are re-evaluated,
not retrained.
Before a run writes anything, every stage that exists on disk is checked against the inputs the
config gives it now; one that differs is refused with the changed keys named, so a refused
command changes nothing, not even config.yaml. Settings that only decide how fast or how
often something happens (decode threads, label batch size, checkpoint interval, the bad-file
tolerance) are not inputs: changing them resumes the run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import UserError
from .io import LOCK, changed_keys, read_json, write_json

# 2: inputs named after their config sections, inputs.json, label kind moved to the student,
#    evaluation a stage of its own
# 3: training batches drawn per global batch and built per rank (train/batches.py): a stage of
#    contract 2 would resume on other random choices than it started with
# 4: a student's checkpoint names its selection by digest (labels/gather.py, selection_digest)
#    instead of hashing its pixels, and selection.storage is not a selection input
CONTRACT = 4
DONE, INPUTS, EVAL = "DONE", "inputs.json", "eval.json"
CONFIG, SUMMARY, TIMINGS = "config.yaml", "summary.json", "timings.jsonl"
def run_dir(config: Config) -> Path:
    return Path(config.runs_dir) / config.name


def stage_dir(run: Path, round_index: int, name: str) -> Path:
    return run / f"round-{round_index}" / name


def teacher_dir(run: Path) -> Path:
    """The round-0 teacher: the baseline of every robustness ratio."""
    return stage_dir(run, 0, "teacher")


def round_indices(run: Path) -> list[int]:
    """The student rounds (k >= 1) that exist on disk, in order."""
    indices = (path.name.removeprefix("round-") for path in run.glob("round-*"))
    return sorted(int(index) for index in indices if index.isdigit() and int(index) > 0)


@dataclass
class Stage:
    path: Path
    inputs: dict
    # An evaluation is a leaf that holds no training state: when its inputs change (another
    # robustness suite, another test subset) it is redone rather than refused, and its record
    # is eval.json itself, so the model's folder keeps one file with its numbers.
    redo_when_changed: bool = False
    # False where an unfinished stage is redone from scratch (the selection): nothing of a started
    # one is reused, so it takes new inputs as one that has made nothing yet does
    resumes: bool = True

    @property
    def marker(self) -> Path:
        """Written last: the stage is finished (DONE; eval.json for an evaluation)."""
        return self.path / (EVAL if self.redo_when_changed else DONE)

    @property
    def kind(self) -> str:
        """The stage's kind, its folder's name (stages/), or "evaluation"."""
        return "evaluation" if self.redo_when_changed else self.path.name

    @property
    def round_index(self) -> int:
        return int(self.path.parent.name.removeprefix("round-"))

    @property
    def inputs_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()[:16]

    def check(self) -> None:
        """Refuse a stage on disk (finished or started) whose inputs differ from these."""
        if self.redo_when_changed:
            return
        if (self.path / DONE).is_file():
            recorded, state = read_json(self.path / DONE), "finished"
        elif (self.path / INPUTS).is_file() and self.resumes and self.has_output():
            recorded, state = {"inputs": read_json(self.path / INPUTS), "contract": CONTRACT}, "started"
        else:  # not started, or failed before it made anything (a refused init, a threshold nothing passed)
            return
        if recorded.get("contract") != CONTRACT:
            raise UserError(f"{self.path} was made by an older noisystudent (run contract "
                            f"{recorded.get('contract', 1)}, now {CONTRACT}); start a new run (name=...) or delete "
                            f"{self.path.parent.parent} to redo it")
        changed = changed_keys(recorded["inputs"], self.inputs)
        if changed:
            raise UserError(f"{self.path} was {state} with other settings (changed: {', '.join(changed)}); set them "
                            f"back, use a new run name (name=...), or delete {self.path} and the stages after it")

    def has_output(self) -> bool:
        """Whether a started stage made anything a resume would build on: more than its inputs.json,
        its lock, and the temp files of writes a kill cut short."""
        return any(path.name not in (INPUTS, LOCK) and not (path.name.startswith(".") and path.name.endswith(".tmp"))
                   for path in self.path.iterdir())

    def is_done(self) -> bool:
        self.check()
        if not self.marker.is_file():
            return False
        return not self.redo_when_changed or read_json(self.marker).get("inputs_hash") == self.inputs_hash

    def begin(self) -> None:
        """Record the inputs of a stage about to do work (a resume must have the same)."""
        self.path.mkdir(parents=True, exist_ok=True)
        # check() let other recorded inputs through only where nothing made with them is reused
        if not self.redo_when_changed and (not (self.path / INPUTS).is_file()
                                           or read_json(self.path / INPUTS) != self.inputs):
            write_json(self.path / INPUTS, self.inputs)

    def mark_done(self, **record) -> None:
        """Write the marker: `record` (an evaluation's metrics), then the contract and the inputs."""
        write_json(self.marker, {**record, "contract": CONTRACT, "inputs_hash": self.inputs_hash,
                                 "inputs": self.inputs, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


@dataclass
class RoundPlan:
    index: int
    teacher_model: str
    student_model: str
    labels: Stage
    selection: Stage
    student: Stage
    student_eval: Stage
    finetune: Stage | None
    finetune_eval: Stage | None

    @property
    def output(self) -> tuple[Stage, Stage]:
        """The round's model and its evaluation: summarized, and the next round's teacher."""
        if self.finetune is not None:
            return self.finetune, self.finetune_eval
        return self.student, self.student_eval


@dataclass
class RunPlan:
    teacher: Stage
    teacher_eval: Stage
    rounds: list[RoundPlan]

    def stages(self) -> list[Stage]:
        return [self.teacher, self.teacher_eval] + [
            stage for r in self.rounds
            for stage in (r.labels, r.selection, r.student, r.student_eval, r.finetune, r.finetune_eval)
            if stage is not None]

    def check(self) -> None:
        for stage in self.stages():
            stage.check()
