"""Round k's labels, `round-k/labels`: the teacher of round k (round k-1's model) labels the pool,
un-noised, into the label store (labels/store.py)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ..config import Config
from ..data import OOD_LABEL
from ..labels import damaged_shards, in_domain_accuracy, load_labeling_teacher, pseudo_label
from ..noise import student_noise
from ..runs import Stage, stage_dir
from .context import RunContext
from .cost import CostContext, StageCost
from .inputs import common_inputs, without_new_defaults

LABEL_INPUTS = ("temperature", "top_k", "shard_size")
# a field added after runs were made, left out while it is its default (inputs.NEW_DATA_INPUTS).
# ood_score's default became feature_ensemble after runs were made with relative_mahalanobis: that
# value (what they stored) stays out of the inputs, so their folders resume as they were; the new
# default is in the label stages' inputs, so a default run relabels such a folder rather than
# reading the other score from its store.
NEW_LABEL_INPUTS = {"ood_score": "relative_mahalanobis"}
STORE_BYTES_PER_CLASS, STORE_BYTES_FIXED = 6, 40  # int32 id + float16 probability per stored class; id, argmax, ...


def stage(config: Config, run: Path, round_index: int, teacher: Stage) -> Stage:
    """Inputs: the teacher stage's hash, the training data, seed, the label store's settings, and
    `noise` in the noised-teacher ablation (noise.labeling)."""
    labels = {key: getattr(config.labels, key) for key in (*LABEL_INPUTS, *NEW_LABEL_INPUTS)}
    return Stage(stage_dir(run, round_index, "labels"), {
        "upstream": teacher.inputs_hash, **common_inputs(config),
        "labels": without_new_defaults(labels, NEW_LABEL_INPUTS),
        **({"noise": asdict(config.noise)} if config.noise.labeling else {})})


def run(context: RunContext, stage: Stage, teacher_dir: Path) -> dict:
    """Label the pool with the model in `teacher_dir` (every rank labels its share of the shards);
    its stats."""
    if not stage.is_done():
        started = time.perf_counter()
        if context.distributed.is_main:
            stage.begin()
        context.distributed.barrier()
        config = context.config
        noise = student_noise(config.noise) if config.noise.labeling else None  # an ablation only
        teacher, teacher_hash = load_labeling_teacher(teacher_dir, noise)
        store = pseudo_label(teacher, context.unlabeled, config.labels, stage.path, context.device,
                             teacher_hash=teacher_hash, distributed=context.distributed, noise=noise,
                             labeled=context.labeled, reference=context.reference)
        if context.distributed.is_main:
            truth = context.unlabeled.truth  # only Fashion-MNIST's pool has one; your own images do not
            manifest = store.manifest
            stats = {"pool": manifest["count"], "undecodable": manifest["bad_files"],
                     "damaged_shards": damaged_shards(manifest), "teacher": str(teacher_dir),
                     "pseudo_label_accuracy": None if truth is None else in_domain_accuracy(
                         store.column("argmax"), truth)}
            if truth is not None and (truth == OOD_LABEL).any():
                stats["out_of_domain_in_pool"] = int((truth == OOD_LABEL).sum())
            context.finish(stage, "labels", started, stats)
    return context.stats_of(stage)


def cost(context: CostContext, stage: Stage) -> list[StageCost]:
    """The teacher's inference over the pool, and the store it writes."""
    config, classes, pool_size = context.config, context.classes, context.pool_size
    teacher = config.model_for_round(stage.round_index - 1)
    at = context.resolutions(teacher)
    parameters, flops = context.model_facts(teacher, at)
    forward = context.forward_seconds(teacher, config.labels.batch_size, at)
    stored = classes if classes <= 100 else min(config.labels.top_k, classes)
    store_bytes = None if pool_size is None else pool_size * (STORE_BYTES_FIXED + STORE_BYTES_PER_CLASS * stored)
    # the teacher also reads the labeled images: the training ones to fit the out-of-domain
    # score, the held-out ones to score the reference
    seconds = None if forward is None or pool_size is None else (
        (pool_size + len(context.labeled) + context.referenced) * forward)
    return [context.priced(StageCost(context.name(stage), teacher, pool_size, None, parameters, flops, store_bytes or 0,
                                     seconds, "" if pool_size is not None else "pool size unknown until read (tar shards)"))]
