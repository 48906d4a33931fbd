"""The training loop shared by teacher and student, read top to bottom in `train_model`.

The parts live beside it: what a step trains on (batches.py: the rows, their augmentation,
prefetch), what it minimizes (objective.py), how it updates (optim.py) and what a resume
restores (state.py). Model noise (dropout, stochastic depth) is part of the model the caller
builds; input noise (RandAugment) is the `randaugment` the caller passes.

A step waits on the host once: one small tensor of stop flags (non-finite loss on any rank,
SIGTERM on any rank) is reduced and read before the optimizer step, so no rank ever applies a
non-finite update. The loss for the log stays on the device until a log line is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data import ImageSet
from ..distributed import SINGLE, Distributed
from ..errors import UserError
from ..faults import InjectedCrash, should_inject
from ..io import remove_stale_temps
from ..labels import PseudoLabeledSet
from ..models import autocast, export_weights
from ..noise import RandAugment
from . import objective
from .batches import STEP_STREAM, BatchBuilder, Prefetcher, joint_batch_sizes, seed_for
from .optim import learning_rate
from .state import TrainState


def steps_for(config: TrainConfig, labeled_size: int, pseudo_size: int | None) -> tuple[int, int]:
    """(total steps, steps per epoch): `epochs` passes over the labeled set (teacher, or a
    student with epoch_unit=labeled) or over the pseudo-labeled selection."""
    batch, unlabeled = joint_batch_sizes(config.batch_size, config.unlabeled_ratio)
    if pseudo_size is None or config.epoch_unit == "labeled":
        per_epoch = math.ceil(labeled_size / batch)
    else:
        per_epoch = math.ceil(pseudo_size / unlabeled)
    return max(1, round(config.epochs * per_epoch)), per_epoch


def freeze_shallow_layers(model: torch.nn.Module, fraction: float) -> list[torch.nn.Module]:
    """Freeze the first `fraction` of the layers with parameters, in definition (= forward, for
    timm's convnets) order: no gradient, and eval mode, so frozen BatchNorms keep their running
    statistics while the unfrozen ones re-estimate theirs at the new resolution (FixRes)."""
    layers = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    frozen = layers[:int(fraction * len(layers))]
    for layer in frozen:
        layer.requires_grad_(False)
        layer.eval()
    return frozen


class Preempted(Exception):
    """SIGTERM arrived (a scheduler's preemption): the step finished and a checkpoint was saved."""

    exit_code = 143  # 128 + SIGTERM, what schedulers expect


class _TerminationFlag:
    """Turns SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self):
        self.raised, self.previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def inputs_fingerprint(labeled: ImageSet, pseudo: PseudoLabeledSet | None, config: TrainConfig, seed: int) -> str:
    """Hash of everything a training stage learns from; a checkpoint only resumes against the same."""
    digest = hashlib.sha256()
    # a cached set is named by its cache key (every file's id, size and mtime): reading a large
    # set's pixels to hash them would cost as much as an epoch
    digest.update((labeled.digest or "").encode())
    tensors = (labeled.labels,) if labeled.digest else (labeled.images, labeled.labels)
    if pseudo is not None:  # a selection is named by its digest, like a cached set
        digest.update((pseudo.digest or "").encode())
        tensors += () if pseudo.digest else (pseudo.images, pseudo.class_ids, pseudo.probs, pseudo.rows)
    for tensor in tensors:
        for start in range(0, len(tensor), 4096):  # a block at a time: memory-mapped images stay on disk
            digest.update(tensor[start:start + 4096].contiguous().numpy().data)
    digest.update(json.dumps({"config": config.inputs(), "seed": seed}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def prepare_model(model: torch.nn.Module, config: TrainConfig, device: torch.device, distributed: Distributed,
                  freeze_fraction: float, desc: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model on its device, channels_last, in training mode with its shallow layers frozen;
    what a step calls: under torchrun wrapped in DDP, with SyncBatchNorm when `sync_bn`; compiled
    when `compile`)."""
    model.to(device).to(memory_format=torch.channels_last).train()
    freeze_shallow_layers(model, freeze_fraction)
    forward = model
    if distributed.enabled:
        if config.sync_bn:
            if device.type != "cuda":
                raise UserError(f"{desc}: sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); set sync_bn=false")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        forward = torch.compile(forward)
    return model, forward


class MetricsLog:
    """`metrics.jsonl`: a line every `every` steps with the mean loss and the images/s since the
    last line. Losses stay on the device between lines (reading one would wait for the step)."""

    def __init__(self, path: Path, every: int, steps_per_epoch: int, enabled: bool):
        self.path, self.every, self.steps_per_epoch, self.enabled = path, every, steps_per_epoch, enabled
        self._reset()

    def _reset(self) -> None:
        self.loss, self.images, self.steps, self.started = 0.0, 0, 0, time.perf_counter()

    def truncate(self, step: int) -> None:
        """Drop lines past the checkpoint we resume from, so the log has no repeated steps."""
        if self.enabled and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def add(self, done: int, total: int, lr: float, loss: torch.Tensor, images: int) -> float | None:
        """Count a finished step; return the mean loss when it wrote a line."""
        self.loss, self.images, self.steps = self.loss + loss.detach(), self.images + images, self.steps + 1
        if not self.enabled or (done % self.every and done != total):
            return None
        seconds = time.perf_counter() - self.started
        record = {"step": done, "epoch": round(done / self.steps_per_epoch, 3), "lr": lr,
                  "loss": float(self.loss) / self.steps, "images_per_second": round(self.images / max(seconds, 1e-9), 1)}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._reset()
        return record["loss"]


def train_model(model: torch.nn.Module, labeled: ImageSet, config: TrainConfig, stage_dir: Path, seed: int,
                device: torch.device, pseudo: PseudoLabeledSet | None = None,
                randaugment: RandAugment | None = None, freeze_fraction: float = 0.0,
                desc: str = "train", distributed: Distributed = SINGLE, config_key: str = "train") -> torch.nn.Module:
    """Train (or resume training), export `stage_dir/final.safetensors`, return the exported model
    (the EMA weights when `config.ema_decay` is set). `config_key` is the config section `config`
    came from (teacher, student, finetune), for messages that name the setting to change.

    Under torchrun each rank builds its own rows of the global batch (batches.py); DDP averages
    gradients, so W processes follow the 1-process run up to BatchNorm statistics, which are
    per rank unless `sync_bn` (CUDA only). Rank 0 alone writes metrics, checkpoints and weights.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = stage_dir / "checkpoints" / "last.pt"
    world, main = distributed.world_size, distributed.is_main
    batch, unlabeled = joint_batch_sizes(config.batch_size, config.unlabeled_ratio)
    if batch % world or (pseudo is not None and unlabeled % world):
        raise UserError(f"{desc}: batch sizes {batch} labeled / {unlabeled if pseudo is not None else 0} unlabeled "
                        f"must divide by the {world} processes (batch sizes in the config are global)")
    model, forward = prepare_model(model, config, device, distributed, freeze_fraction, desc)
    state = TrainState(model, config)
    total_steps, steps_per_epoch = steps_for(config, len(labeled), None if pseudo is None else len(pseudo))
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    fingerprint = inputs_fingerprint(labeled, pseudo, config, seed)
    metrics = MetricsLog(stage_dir / "metrics.jsonl", max(1, min(50, total_steps // 20)), steps_per_epoch, main)
    if main and checkpoint_path.parent.is_dir():  # a SIGKILL mid-save leaves its temp file
        remove_stale_temps(checkpoint_path.parent)
    if checkpoint_path.is_file():
        state.load(checkpoint_path, fingerprint)
        metrics.truncate(state.step)
    spec = getattr(model, "spec", None)  # a Classifier's own resolutions (models/registry.py)
    batches = BatchBuilder(labeled, config, seed, device, pseudo, randaugment, distributed.rank, world,
                           spec and (spec.train_resolution or spec.resolution), spec and spec.crop_fraction)
    prefetch = config.prefetch if config.prefetch is not None else (2 if device.type == "cuda" else 0)
    bar = tqdm(total=total_steps, initial=state.step, desc=desc, unit="step", disable=None if main else True,
               leave=False)
    with _TerminationFlag() as termination:
        for step, (inputs, targets) in Prefetcher(batches.build, range(state.step, total_steps), prefetch):
            lr = learning_rate(step, total_steps, warmup_steps, config.lr, config.lr_schedule, steps_per_epoch,
                               config.lr_decay_epochs)
            state.set_learning_rate(lr)
            torch.manual_seed(seed_for(seed, STEP_STREAM, step))  # dropout and stochastic-depth masks
            with autocast(device):
                logits = forward(inputs)
            loss = objective.joint_loss(logits, targets, batches.labeled_rows_per_rank, config)
            if should_inject("nan", step, distributed.rank):
                loss = loss * float("nan")
            if should_inject("crash", step, distributed.rank):
                raise InjectedCrash(f"injected crash at step {step} on rank {distributed.rank}")
            state.backward(loss)
            # after the backward pass, whose gradient all-reduce already brought the ranks into
            # step: a check before it would be a second point where each waits for the slowest
            non_finite, stop = distributed.any_of(~torch.isfinite(loss.detach()), termination.raised, device=device)
            if non_finite:  # every rank stops before the update
                raise UserError(f"{desc}: loss became non-finite ({loss.item()} on rank {distributed.rank}) at step "
                                f"{step}; lower {config_key}.lr (now {config.lr}) or check the data")
            state.update()
            mean_loss = metrics.add(state.step, total_steps, lr, loss, len(inputs) * world)
            bar.update(1)
            if mean_loss is not None:
                bar.set_postfix(loss=f"{mean_loss:.3f}")
            if state.step % config.checkpoint_every == 0 or state.step == total_steps or stop:
                if main:
                    state.save(checkpoint_path, fingerprint)
                distributed.barrier()
            if stop and state.step < total_steps:
                raise Preempted(f"{desc}: stopped by SIGTERM after step {state.step}; checkpoint saved, run the "
                                f"same command again to resume")
    bar.close()
    final = state.final_model.eval()
    if main:
        export_weights(stage_dir / "final.safetensors", final)
    distributed.barrier()
    return final
