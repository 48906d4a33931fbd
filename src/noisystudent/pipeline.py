"""The rounds of Noisy Student Training, as stages that each leave a finished folder on disk.

    round-0/teacher      train on labeled images (weak augmentation; noised only with noise.teacher)
    round-k/labels       teacher of round k (round k-1's model) labels the pool, un-noised
    round-k/selection    filter by confidence, balance classes
    round-k/student      noised, equal-or-larger student on labeled + selected pseudo labels
    round-k/finetune     optional FixRes-style fine-tune: the round's model
    every trained model  its evaluation (eval.json), a stage of its own

Where each stage lives, what its inputs are and when it is finished is the run contract
(runs.py). Before anything is written, every stage on disk is checked against the config:
rerunning skips finished stages, resumes an unfinished one (a training stage from its
checkpoint), and refuses a stage whose inputs changed rather than silently mixing two configs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import INIT_FROM_TEACHER, Config, TrainConfig, dump_yaml
from .data import OOD_LABEL, ImageSet, hold_out_reference, load_splits
from .distributed import init_from_environment
from .evaluate import compare_to_baseline, evaluate_weights
from .io import exclusive_lock, read_json, remove_stale_temps, write_json, write_text
from .labels import (LabelStore, PseudoLabeledSet, damaged_shards, in_domain_accuracy, load_labeling_teacher,
                     load_pseudo_labeled, pseudo_label, select_and_gather)
from .models import (build_model, check_initial_sources, check_student_size, load_exported, load_initial_weights, model_resolutions,
                     resolved_precision)
from .noise import RandAugment, student_noise
from .provenance import provenance
from .runs import CONFIG, EVAL, SUMMARY, TIMINGS, RoundPlan, RunPlan, Stage, plan_run, run_dir, teacher_dir
from .session import start_session
from .summary import describe_selection, fraction, format_summary, robustness_summary, round_summary
from .train import train_model


class Pipeline:
    """The rounds. Under torchrun every rank trains; rank 0 alone labels, selects, evaluates and
    writes, while the others wait at a barrier and then read what it wrote."""

    def __init__(self, config: Config, log: Callable[[str], None] = print):
        self.config = config
        self.distributed, device_name = init_from_environment(config.device)
        self.log = log if self.distributed.is_main else (lambda line: None)
        self.run_dir = run_dir(config)
        session = start_session(config, device_name)
        # session.labeled is what models train on: the out-of-domain reference (session.reference,
        # data.reference_fraction) is held out of every model's training and scored like the pool
        self.device, self.labeled, self.unlabeled, self.test, self.reference = (
            session.device, session.labeled, session.unlabeled, session.test, session.reference)

    # -- stages ---------------------------------------------------------------------------------

    def train_stage(self, stages: tuple[Stage, Stage], desc: str, make_model: Callable[[], torch.nn.Module],
                    train: TrainConfig, config_key: str, pseudo: PseudoLabeledSet | None = None,
                    randaugment: RandAugment | None = None, freeze_fraction: float = 0.0,
                    labeled: Callable[[], ImageSet] | None = None) -> dict:
        """Train (or resume) the model `make_model` builds and mark the stage done; then its
        evaluation stage. `stages` is (training, evaluation); `labeled` gives the labeled set
        when it is not the run's (a FixRes fine-tune's, at its resolution)."""
        stage, evaluation = stages
        if not stage.is_done():
            started = time.perf_counter()
            if self.distributed.is_main:
                stage.begin()
            torch.manual_seed(self.config.seed)  # the initial weights, too, are a function of the seed
            train_model(make_model(), labeled() if labeled else self.labeled, train, stage.path, self.config.seed, self.device, pseudo=pseudo,
                        randaugment=randaugment, freeze_fraction=freeze_fraction, desc=desc,
                        distributed=self.distributed, config_key=config_key)
            if self.distributed.is_main:
                stage.mark_done(train_seconds=round(time.perf_counter() - started, 1))
            self.record_time(stage, "train", started)
            self.distributed.barrier()
        metrics = self.evaluation_stage(evaluation)
        self.log(f"  {desc}: {metrics['model']} test top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}")
        return metrics

    def evaluation_stage(self, evaluation: Stage) -> dict:
        """The full evaluation of a stage's exported weights (redone when only evaluation settings
        changed); ratios (mCE, mFR) against the round-0 teacher, which is the baseline, so its own
        mCE and mFR are 100 by definition."""
        if not evaluation.is_done() and self.distributed.is_main:
            started = time.perf_counter()
            baseline_path = teacher_dir(self.run_dir) / EVAL
            is_baseline = evaluation.path == teacher_dir(self.run_dir)
            baseline = None if is_baseline else read_json(baseline_path)
            result = evaluate_weights(evaluation.path, self.test, self.device, self.config.evaluate,
                                      self.config.corruption_cache(), self.config.seed, baseline)
            evaluation.mark_done(**(compare_to_baseline(result, result) if is_baseline else result))
            self.record_time(evaluation, "eval", started)
        self.distributed.barrier()
        return read_json(evaluation.marker)

    def build(self, round_index: int, teacher: Path | None = None, **noise) -> torch.nn.Module:
        """Round `round_index`'s model for this run's data, from its `init` weights when given (the
        round's `teacher` folder for init `teacher`); its classes (by name) and image size travel
        with its weights."""
        name = self.config.model_for_round(round_index)
        resolutions = model_resolutions(name) if self.config.data.resolution == "model" else {}
        model = build_model(name, self.labeled.num_classes, self.labeled.channels, classes=self.labeled.classes,
                            image_size=self.config.data.image_size, **resolutions, **noise)
        init = self.config.init_for_round(round_index)
        if init == INIT_FROM_TEACHER:
            init = str(teacher)
        if init is not None:
            load_initial_weights(model, init)
        return model

    def teacher_stage(self, stages: tuple[Stage, Stage]) -> dict:
        """Round 0: cross-entropy on labeled images with weak augmentation; noised only with
        noise.teacher (as every official run trains it). It labels un-noised either way."""
        noise = student_noise(self.config.noise) if self.config.noise.teacher else None
        make = lambda: self.build(0, **(noise.model_kwargs if noise else {}))  # noqa: E731
        return self.train_stage(stages, "teacher round 0", make, self.config.teacher, "teacher",
                                randaugment=noise.randaugment if noise else None)

    def student_stage(self, stages: tuple[Stage, Stage], round_index: int, store: LabelStore,
                      selection_dir: Path, teacher: Path) -> dict:
        """A noised student on joint batches of labeled and pseudo-labeled images."""
        noise = student_noise(self.config.noise)
        make = lambda: self.build(round_index, teacher, **noise.model_kwargs)  # noqa: E731
        train = self.config.student_for_round(round_index)
        pseudo = None
        if not stages[0].is_done():
            # built before anything is recorded, so weights refused (a bad init) leave the stage
            # unstarted and open to the fix; from the seed, as train_stage would build it
            torch.manual_seed(self.config.seed)
            model = make()
            make = lambda: model  # noqa: E731
            load = functools.partial(load_pseudo_labeled, store, selection_dir, self.config.labels.kind,
                                     self.labeled.num_classes, train.label_smoothing,
                                     max(1, self.config.data.decode_threads), stages[0].path)
            if self.distributed.is_main:
                stages[0].begin()  # its inputs are on record before its targets are written into its folder
                pseudo = load()
            self.distributed.barrier()
            if pseudo is None:  # the other ranks map the targets rank 0 wrote
                pseudo = load()
        return self.train_stage(stages, f"student round {round_index}", make, train, "student", pseudo,
                                noise.randaugment)

    def finetune_stage(self, stages: tuple[Stage, Stage], student_dir: Path, round_index: int) -> dict:
        """FixRes-style: un-augmented labeled images at the test resolution (`finetune.resolution`,
        else the model's own), shallow layers frozen. With data.resolution=model the inputs are the
        evaluation's center crop of the labeled images decoded at the size that crop needs, so
        they are real pixels at that resolution, not upsampled training images."""
        finetune = self.config.finetune
        make = lambda: load_exported(student_dir, resolution=finetune.resolution,  # noqa: E731
                                     train_at_test_resolution=True)
        per_model = self.config.data.resolution == "model"
        return self.train_stage(stages, f"fine-tune round {round_index}", make,
                                self.config.finetune_training(round_index), "finetune",
                                freeze_fraction=finetune.freeze_fraction,
                                labeled=(lambda: self.labeled_for(make().spec)) if per_model else None)

    def labeled_for(self, spec) -> ImageSet:
        """The labeled set stored at the size whose center crop is `spec`'s test resolution, so a
        FixRes fine-tune sees real pixels at that resolution rather than upsampled ones."""
        size = round(spec.resolution / (spec.crop_fraction or 1.0))
        if size == self.labeled.images.shape[-1]:
            return self.labeled
        data = dataclasses.replace(self.config.data, image_size=size)
        labeled = load_splits(data, self.config.seed, cache_dir=self.config.image_cache())[0]
        return hold_out_reference(labeled, data.reference_fraction, self.config.seed)[0]

    def label_stage(self, stage: Stage, teacher_dir: Path) -> dict:
        if not stage.is_done():  # every rank labels its share of the shards
            started = time.perf_counter()
            if self.distributed.is_main:
                stage.begin()
            self.distributed.barrier()
            noise = student_noise(self.config.noise) if self.config.noise.labeling else None  # an ablation only
            teacher, teacher_hash = load_labeling_teacher(teacher_dir, noise)
            store = pseudo_label(teacher, self.unlabeled, self.config.labels, stage.path, self.device,
                                 teacher_hash=teacher_hash, distributed=self.distributed, noise=noise,
                                 labeled=self.labeled, reference=self.reference)
            if self.distributed.is_main:
                truth = self.unlabeled.truth  # only Fashion-MNIST's pool has one; your own images do not
                manifest = store.manifest
                stats = {"pool": manifest["count"], "undecodable": manifest["bad_files"],
                         "damaged_shards": damaged_shards(manifest), "teacher": str(teacher_dir),
                         "pseudo_label_accuracy": None if truth is None else in_domain_accuracy(
                             store.column("argmax"), truth)}
                if truth is not None and (truth == OOD_LABEL).any():
                    stats["out_of_domain_in_pool"] = int((truth == OOD_LABEL).sum())
                write_json(stage.path / "stats.json", stats)
                stage.mark_done()
            self.record_time(stage, "labels", started)
        self.distributed.barrier()
        return read_json(stage.path / "stats.json")

    def selection_stage(self, stage: Stage, store: LabelStore) -> dict:
        """Filter and balance (streamed over the store), then gather the selected images into a
        memory-mapped file the student reads by row (labels/gather.py)."""
        if not stage.is_done() and self.distributed.is_main:
            started = time.perf_counter()
            stage.begin()
            remove_stale_temps(stage.path)  # a SIGKILL mid-write leaves its temp file (images.npy can be GBs)
            stats = select_and_gather(store, stage.path, self.unlabeled, store.reference_scores,
                                      self.config.selection, self.labeled.num_classes, self.config.labels.batch_size,
                                      self.config.seed)
            write_json(stage.path / "stats.json", stats)
            stage.mark_done()
            self.record_time(stage, "selection", started)
        self.distributed.barrier()
        return read_json(stage.path / "stats.json")

    def record_time(self, stage: Stage, kind: str, started: float) -> None:
        """Append a stage's wall seconds (this attempt's) to timings.jsonl: what `noisystudent plan`
        estimates, measured."""
        if self.distributed.is_main:
            record = {"stage": stage.path.relative_to(self.run_dir).as_posix(), "kind": kind,
                      "seconds": round(time.perf_counter() - started, 2)}
            with open(self.run_dir / TIMINGS, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    # -- the rounds -----------------------------------------------------------------------------

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
        teacher_eval = self.teacher_stage((plan.teacher, plan.teacher_eval))
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

    def run_round(self, plan: RoundPlan, teacher: Stage) -> dict:
        """Label with `teacher`, select, train the student (and fine-tune); the round's eval."""
        label_stats = self.label_stage(plan.labels, teacher.path)
        for reason in label_stats.get("damaged_shards", []):  # absent from stages labeled before it was recorded
            self.log(f"  warning: {reason}")
        store = LabelStore(plan.labels.path)
        selection_stats = self.selection_stage(plan.selection, store)
        self.log(f"  pseudo labels: accuracy {fraction(label_stats['pseudo_label_accuracy'])} on the pool; "
                 f"{describe_selection(selection_stats)}")
        for warning in selection_stats.get("warnings", []):  # none in a selection made before them
            self.log(f"  warning: {warning}")
        output_eval = self.student_stage((plan.student, plan.student_eval), plan.index, store, plan.selection.path,
                                         teacher.path)
        if plan.finetune is not None:
            output_eval = self.finetune_stage((plan.finetune, plan.finetune_eval), plan.student.path, plan.index)
        return output_eval

    @staticmethod
    def round_stats(plan: RoundPlan) -> dict:
        return {"labels": read_json(plan.labels.path / "stats.json"),
                "selection": read_json(plan.selection.path / "stats.json"),
                "student": read_json(plan.student_eval.marker)}


def run(config: Config, log: Callable[[str], None] = print) -> dict:
    return Pipeline(config, log).run()
