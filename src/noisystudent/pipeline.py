"""The rounds of Noisy Student Training, as stages that each leave a finished folder on disk.

    round-0/teacher      train on labeled images (weak augmentation; noised only with noise.teacher)
    round-k/labels       teacher of round k (round k-1's model) labels the pool, un-noised
    round-k/selection    filter by confidence, balance classes
    round-k/student      noised, equal-or-larger student on labeled + selected pseudo labels
    round-k/finetune     optional FixRes-style fine-tune: the round's model
    every trained model  its evaluation (eval.json), a stage of its own

Each stage's inputs, run and cost are its module in stages/; where it lives and when it is
finished is the run contract (runs.py). This module is the round loop. Before anything is
written, every stage on disk is checked against the config: rerunning skips finished stages,
resumes an unfinished one (a training stage from its checkpoint), and refuses a stage whose
inputs changed rather than silently mixing two configs.
"""

from __future__ import annotations

import contextlib
from typing import Callable

from .config import Config, dump_yaml
from .io import exclusive_lock, read_json, write_json, write_text
from .labels import LabelStore
from .models import check_initial_sources, check_student_size, resolved_precision
from .provenance import provenance
from .runs import CONFIG, SUMMARY, RoundPlan, RunPlan, Stage
from .stages import finetune, labels, plan_run, selection, student, teacher
from .stages.context import RunContext
from .summary import describe_selection, fraction, format_summary, robustness_summary, round_summary


class Pipeline(RunContext):
    """The rounds, on one process or under torchrun (RunContext: which rank does what)."""

    def run(self) -> dict:
        config = self.config
        for k in range(1, config.rounds + 1):  # refuse a bad model schedule before training anything
            check_student_size(config.model_for_round(k - 1), config.model_for_round(k), self.labeled.num_classes,
                               self.labeled.channels, config.allow_smaller_student, config.data.image_size)
        check_initial_sources(config.init_sources())  # a missing file stops the run now, not after a round
        plan = plan_run(config)
        plan.check()  # every stage on disk against this config, before anything is written
        with exclusive_lock(self.run_dir) if self.distributed.is_main else contextlib.nullcontext():
            plan.check()  # again: another command may have started stages before this one held the folder
            return self.run_rounds(plan)

    def run_rounds(self, plan: RunPlan) -> dict:
        config = self.config
        if self.distributed.is_main:
            write_text(self.run_dir / CONFIG, dump_yaml(config))
        self.distributed.barrier()
        pool = "streamed" if self.unlabeled.size is None else self.unlabeled.size
        self.log(f"noisystudent run '{config.name}' -> {self.run_dir} on {self.device} "
                 f"({resolved_precision(self.device)}); labeled "
                 f"{len(self.labeled)}, unlabeled {pool}, test {len(self.test)}")
        self.log("round 0")
        teacher_eval = teacher.run(self, (plan.teacher, plan.teacher_eval))
        rounds, teacher_stage = [], plan.teacher
        for round_plan in plan.rounds:
            self.log(f"round {round_plan.index}")
            output_eval = self.run_round(round_plan, teacher_stage)
            rounds.append(round_summary(round_plan, teacher_eval, output_eval, self.round_stats(round_plan)))
            teacher_stage, teacher_eval = round_plan.output[0], output_eval
        first_teacher = read_json(plan.teacher_eval.marker)
        summary = {"name": config.name, "device": str(self.device), "provenance": provenance(self.device),
                   "teacher_top1": first_teacher["top1"],
                   "final_top1": teacher_eval["top1"], "rounds": rounds,
                   "robustness": {"teacher": robustness_summary(first_teacher),
                                  "student": robustness_summary(teacher_eval)}}
        if self.distributed.is_main:
            from .report import build_report

            write_json(self.run_dir / SUMMARY, summary)
            self.log(format_summary(summary))
            self.log(f"report: {build_report(self.run_dir)['html']}")
        self.distributed.barrier()
        return summary

    def run_round(self, plan: RoundPlan, teacher_stage: Stage) -> dict:
        """Label with `teacher_stage`, select, train the student (and fine-tune); the round's eval."""
        label_stats = labels.run(self, plan.labels, teacher_stage.path)
        for reason in label_stats.get("damaged_shards", []):  # absent from stages labeled before it was recorded
            self.log(f"  warning: {reason}")
        store = LabelStore(plan.labels.path)
        selection_stats = selection.run(self, plan.selection, store)
        self.log(f"  pseudo labels: accuracy {fraction(label_stats['pseudo_label_accuracy'])} on the pool; "
                 f"{describe_selection(selection_stats)}")
        for warning in selection_stats.get("warnings", []):  # none in a selection made before them
            self.log(f"  warning: {warning}")
        output_eval = student.run(self, (plan.student, plan.student_eval), store, plan.selection.path,
                                  teacher_stage.path)
        if plan.finetune is not None:
            output_eval = finetune.run(self, (plan.finetune, plan.finetune_eval), plan.student.path)
        return output_eval

    @staticmethod
    def round_stats(plan: RoundPlan) -> dict:
        return {"labels": read_json(plan.labels.path / "stats.json"),
                "selection": read_json(plan.selection.path / "stats.json"),
                "student": read_json(plan.student_eval.marker)}


def run(config: Config, log: Callable[[str], None] = print) -> dict:
    return Pipeline(config, log).run()
