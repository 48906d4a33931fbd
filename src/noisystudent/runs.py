"""The run contract: where each stage of a run lives, what its result depends on, when it is done.

    runs/<name>/
      config.yaml                 the resolved config of the last run command that was accepted
      round-0/teacher/            inputs.json, checkpoints/, metrics.jsonl, final.safetensors, eval.json, DONE
      round-k/labels/             the label store (labels/store.py), stats.json, inputs.json, DONE
      round-k/selection/          selection.parquet, images.npy, stats.json, inputs.json, DONE
      round-k/student/            like the teacher
      round-k/finetune/           like the teacher (only with finetune.epochs > 0)
      summary.json, report.html, report.md, report/ (figures)

A stage's inputs are the settings its result depends on, and nothing else, plus the inputs hash
of the stage it reads ("upstream"), so a change anywhere upstream reaches every stage after it.
A stage writes `inputs.json` when it starts and `DONE` (hash, inputs, contract version) last.
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
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Config
from .errors import UserError
from .io import changed_keys, read_json, write_json

CONTRACT = 2  # 2: inputs named after their config sections, inputs.json, label kind moved to the student
DONE, INPUTS = "DONE", "inputs.json"
CONFIG, SUMMARY = "config.yaml", "summary.json"
# What no stage's result depends on (see the module docstring).
NOT_DATA_INPUTS = ("max_bad_fraction", "decode_threads")  # and TrainConfig.inputs() leaves out checkpoint_every


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

    @property
    def inputs_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()[:16]

    def check(self) -> None:
        """Refuse a stage on disk (finished or started) whose inputs differ from these."""
        if (self.path / DONE).is_file():
            recorded, state = read_json(self.path / DONE), "finished"
        elif (self.path / INPUTS).is_file():
            recorded, state = {"inputs": read_json(self.path / INPUTS), "contract": CONTRACT}, "started"
        else:
            return
        if recorded.get("contract") != CONTRACT:
            raise UserError(f"{self.path} was made by an older noisystudent (run contract "
                            f"{recorded.get('contract', 1)}, now {CONTRACT}); start a new run (name=...) or delete "
                            f"{self.path.parent.parent} to redo it")
        changed = changed_keys(recorded["inputs"], self.inputs)
        if changed:
            raise UserError(f"{self.path} was {state} with other settings (changed: {', '.join(changed)}); set them "
                            f"back, use a new run name (name=...), or delete {self.path} and the stages after it")

    def is_done(self) -> bool:
        self.check()
        return (self.path / DONE).is_file()

    def begin(self) -> None:
        """Record the inputs of a stage about to do work (a resume must have the same)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / INPUTS).is_file():
            write_json(self.path / INPUTS, self.inputs)

    def mark_done(self, **info) -> None:
        write_json(self.path / DONE, {"contract": CONTRACT, "inputs_hash": self.inputs_hash, "inputs": self.inputs,
                                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info})


@dataclass
class RoundPlan:
    index: int
    teacher_model: str
    student_model: str
    labels: Stage
    selection: Stage
    student: Stage
    finetune: Stage | None

    @property
    def output(self) -> Stage:
        """The round's model: evaluated, summarized and the next round's teacher."""
        return self.finetune or self.student


@dataclass
class RunPlan:
    teacher: Stage
    rounds: list[RoundPlan]

    def stages(self) -> list[Stage]:
        return [self.teacher] + [stage for r in self.rounds
                                 for stage in (r.labels, r.selection, r.student, r.finetune) if stage is not None]

    def check(self) -> None:
        for stage in self.stages():
            stage.check()


def plan_run(config: Config) -> RunPlan:
    """Every stage of a run and its inputs, from the config alone (nothing is read or written)."""
    run = run_dir(config)
    data = {key: value for key, value in asdict(config.data).items() if key not in NOT_DATA_INPUTS}
    common = {"data": data, "seed": config.seed}
    teacher = Stage(teacher_dir(run), {**common, "models": {"teacher": config.model_for_round(0)},
                                       "teacher": config.teacher.inputs()})
    rounds, previous = [], teacher
    for k in range(1, config.rounds + 1):
        labels = Stage(stage_dir(run, k, "labels"), {
            "upstream": previous.inputs_hash, **common,
            "labels": {key: getattr(config.labels, key) for key in ("temperature", "top_k", "shard_size")}})
        selection = Stage(stage_dir(run, k, "selection"), {"upstream": labels.inputs_hash,
                                                           "selection": asdict(config.selection)})
        student = Stage(stage_dir(run, k, "student"), {
            "upstream": selection.inputs_hash, **common, "models": {"student": config.model_for_round(k)},
            "student": config.student.inputs(), "noise": asdict(config.noise),
            "labels": {"kind": config.labels.kind}})
        finetune = None
        if config.finetune.epochs > 0:
            finetune = Stage(stage_dir(run, k, "finetune"), {
                "upstream": student.inputs_hash, **common, "finetune": asdict(config.finetune),
                "student": {"weight_decay": config.student.weight_decay}})
        plan = RoundPlan(k, config.model_for_round(k - 1), config.model_for_round(k), labels, selection, student,
                         finetune)
        rounds.append(plan)
        previous = plan.output
    return RunPlan(teacher, rounds)
