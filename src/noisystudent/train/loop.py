"""The training loop shared by teacher and student.

A teacher step is B weakly augmented labeled images. A student step is a joint batch: B labeled
plus U = round(r * B) pseudo-labeled images, both noised with RandAugment on top of the weak
augmentation, and the loss is one mean cross-entropy over the concatenated B + U rows, or the
official mean over the B plus r times the mean over the U (`loss_weighting`); soft targets for
pseudo labels, as in the paper. Model noise (dropout, stochastic depth) is part of the model the
caller builds.

Every random choice of step s (which images, crops, flips, RandAugment ops, dropout masks) is
drawn from generators seeded with (seed, s). That makes training a pure function of the seed,
and a resume from a checkpoint at step s continues exactly as if never interrupted: a
checkpoint needs only model, optimizer and step.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.optim import RMSpropTF
from timm.utils.model_ema import ModelEmaV3
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data import ImageSet, weak_augment
from ..distributed import SINGLE, Distributed
from ..errors import UserError
from ..faults import InjectedCrash, should_inject
from ..io import remove_stale_temps
from ..models import autocast, export_weights, to_model_input
from ..noise import RandAugment
from .checkpoint import load_checkpoint, save_checkpoint

LABELED_STREAM, UNLABELED_STREAM, STEP_STREAM = 1, 2, 3
NORM_LAYERS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
               torch.nn.GroupNorm, torch.nn.LayerNorm)


@dataclass
class PseudoLabeledSet:
    """The selection the student trains on: each selected image once, with the number of times
    it enters the set (duplicates of short classes) kept as a count, not as copies of pixels.
    Targets are sparse (top-k) and made dense per batch; `images` may be memory-mapped
    (labels/gather.py), so a step reads only its own rows."""

    images: torch.Tensor  # uint8 [U, C, H, W]
    class_ids: torch.Tensor  # int64 [U, k]: each image's target classes
    probs: torch.Tensor  # float32 [U, k]: their probabilities, summing to 1 (k = 1, p = 1: a hard label)
    num_classes: int
    copies: torch.Tensor | None = None  # int64 [U]; None = each image once

    def __post_init__(self):
        if not (len(self.images) == len(self.class_ids) == len(self.probs)) or self.class_ids.shape != self.probs.shape:
            raise ValueError(f"images {tuple(self.images.shape)}, class_ids {tuple(self.class_ids.shape)} and probs "
                             f"{tuple(self.probs.shape)} must have one row per image and the same k")
        unique = torch.arange(len(self.images))
        self.rows = unique if self.copies is None else unique.repeat_interleave(self.copies)  # set row -> image

    def __len__(self) -> int:
        return len(self.rows)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Dense targets [n, num_classes] of image indices `images`."""
        return dense_targets(self.class_ids[images], self.probs[images], self.num_classes)


def dense_targets(class_ids: torch.Tensor, probs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[n, num_classes] with probs[i, j] at class_ids[i, j], zero elsewhere."""
    return torch.zeros(len(probs), num_classes).scatter_(1, class_ids.long(), probs.float())


def joint_batch_sizes(batch_size: int, unlabeled_ratio: float) -> tuple[int, int]:
    """(B labeled, U unlabeled) per step; U = round(r * B), at least 1."""
    return batch_size, max(1, round(unlabeled_ratio * batch_size))


def _seed(seed: int, stream: int, index: int) -> int:
    # Distinct, well-spread seeds per (seed, stream, index); torch wants < 2**63.
    return (seed * 1_000_003 + stream * 7_919 + index * 104_729) % (2**63 - 1)


def sample_indices(n: int, count: int, step: int, seed: int, stream: int) -> torch.Tensor:
    """Rows for `step`: consecutive slices of per-epoch permutations (each epoch sees every row once)."""
    start = step * count
    rows = []
    while count > 0:
        epoch, offset = divmod(start, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, stream, epoch)))
        take = min(count, n - offset)
        rows.append(order[offset:offset + take])
        start, count = start + take, count - take
    return torch.cat(rows)


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float, schedule: str = "cosine",
                  steps_per_epoch: int = 1, decay_epochs: float = 2.4) -> float:
    """Linear warm-up to `peak`, then cosine decay to 0 at `total_steps`, or the official
    staircase: x0.97 every `decay_epochs` epochs counted from step 0, warm-up included
    (official utils.build_learning_rate: exponential_decay of the global step, then the warm-up
    replaces it for the first steps)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "exponential":
        return peak * 0.97 ** (step // max(1, round(decay_epochs * steps_per_epoch)))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # the official code decays every variable but BatchNorm's (main.py: 'batch_normalization' not in name)
    norms = set() if config.weight_decay_norms else {
        id(p) for module in model.modules() if isinstance(module, NORM_LAYERS) for p in module.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    parameters = [{"params": [p for p in trainable if id(p) not in norms], "weight_decay": config.weight_decay},
                  {"params": [p for p in trainable if id(p) in norms], "weight_decay": 0.0}]
    if config.optimizer == "rmsprop":
        # TF's RMSProp (decay 0.9, eps 1e-3 inside the square root, mean square started at 1),
        # which torch.optim.RMSprop is not: its eps outside the root and mean square from 0 make
        # the first steps up to ~30x larger at the paper's lr. timm's RMSpropTF is TF's.
        return RMSpropTF(parameters, lr=config.lr, alpha=0.9, eps=1e-3, momentum=config.momentum)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def ema_decay(decay: float, updates: int) -> float:
    """The official EMA's decay after `updates` optimizer steps (tf.train.ExponentialMovingAverage
    with num_updates): min(decay, (1 + s) / (10 + s)), so early averages forget the random init."""
    return min(decay, (1 + updates) / (10 + updates))


def labeled_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_k t_k log p_k (equals F.cross_entropy for one-hot targets)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def joint_loss(logits: torch.Tensor, targets: torch.Tensor, labeled_rows: int, config: TrainConfig) -> torch.Tensor:
    """The step's loss; the first `labeled_rows` rows are labeled, the rest pseudo-labeled."""
    if config.loss_weighting == "official" and labeled_rows < len(logits):
        return (soft_cross_entropy(logits[:labeled_rows], targets[:labeled_rows])
                + config.unlabeled_ratio * soft_cross_entropy(logits[labeled_rows:], targets[labeled_rows:]))
    return soft_cross_entropy(logits, targets)


def build_batch(step: int, seed: int, labeled: ImageSet, config: TrainConfig, device: torch.device,
                pseudo: PseudoLabeledSet | None, randaugment: RandAugment | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (float [0,1], channels_last, on device) and targets for one step."""
    generator = torch.Generator().manual_seed(_seed(seed, STEP_STREAM, step))
    batch, unlabeled = joint_batch_sizes(config.batch_size, config.unlabeled_ratio)
    rows = sample_indices(len(labeled), batch, step, seed, LABELED_STREAM)
    images = [labeled.images[rows]]
    targets = [labeled_targets(labeled.labels[rows], labeled.num_classes, config.label_smoothing)]
    if pseudo is not None:
        rows = pseudo.rows[sample_indices(len(pseudo), unlabeled, step, seed, UNLABELED_STREAM)]
        images.append(pseudo.images[rows])
        targets.append(pseudo.targets(rows))
    pixels = torch.cat(images).to(device)
    if config.augment:
        pixels = weak_augment(pixels, generator)
    if randaugment is not None:
        pixels = randaugment(pixels, generator)
    return to_model_input(pixels, device), torch.cat(targets).to(device)


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
    tensors = (labeled.images, labeled.labels)
    if pseudo is not None:
        tensors += (pseudo.images, pseudo.class_ids, pseudo.probs, pseudo.rows)
    for tensor in tensors:
        for start in range(0, len(tensor), 4096):  # a block at a time: memory-mapped images stay on disk
            digest.update(tensor[start:start + 4096].contiguous().numpy().data)
    digest.update(json.dumps({"config": config.inputs(), "seed": seed}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def train_model(model: torch.nn.Module, labeled: ImageSet, config: TrainConfig, stage_dir: Path, seed: int,
                device: torch.device, pseudo: PseudoLabeledSet | None = None,
                randaugment: RandAugment | None = None, freeze_fraction: float = 0.0,
                desc: str = "train", distributed: Distributed = SINGLE, config_key: str = "train") -> torch.nn.Module:
    """Train (or resume training), export `stage_dir/final.safetensors`, return the exported model
    (the EMA weights when `config.ema_decay` is set). `config_key` is the config section `config`
    came from (teacher, student, finetune), for messages that name the setting to change.

    Under torchrun every rank builds the same global batch (a function of seed and step) and
    takes rows rank, rank + W, ...; DDP averages gradients, so W processes follow the 1-process
    run up to BatchNorm statistics, which are per rank unless `sync_bn` (CUDA only). Rank 0
    alone writes metrics, checkpoints and weights.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = stage_dir / "checkpoints" / "last.pt"
    metrics_path = stage_dir / "metrics.jsonl"
    world, main = distributed.world_size, distributed.is_main
    batch, unlabeled = joint_batch_sizes(config.batch_size, config.unlabeled_ratio)
    if batch % world or (pseudo is not None and unlabeled % world):
        raise UserError(f"{desc}: batch sizes {batch} labeled / {unlabeled if pseudo is not None else 0} unlabeled "
                        f"must divide by the {world} processes (batch sizes in the config are global)")
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
    optimizer = make_optimizer(model, config)
    total_steps, steps_per_epoch = steps_for(config, len(labeled), None if pseudo is None else len(pseudo))
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay > 0 else None
    fingerprint = inputs_fingerprint(labeled, pseudo, config, seed)
    if main and checkpoint_path.parent.is_dir():  # a SIGKILL mid-save leaves its temp file
        remove_stale_temps(checkpoint_path.parent)
    start = 0
    if checkpoint_path.is_file():
        start = load_checkpoint(checkpoint_path, model, optimizer, ema.module if ema else None, fingerprint)
        if main:
            _truncate_metrics(metrics_path, start)
    log_every = max(1, min(50, total_steps // 20))
    bar = tqdm(total=total_steps, initial=start, desc=desc, unit="step", disable=None if main else True, leave=False)
    window_loss, window_images, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
    with _TerminationFlag() as termination:
        for step in range(start, total_steps):
            lr = learning_rate(step, total_steps, warmup_steps, config.lr, config.lr_schedule, steps_per_epoch,
                               config.lr_decay_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = build_batch(step, seed, labeled, config, device, pseudo, randaugment)
            inputs, targets = inputs[distributed.rank::world], targets[distributed.rank::world]
            torch.manual_seed(_seed(seed, STEP_STREAM, step))  # dropout and stochastic-depth masks
            with autocast(device):
                logits = forward(inputs)
            loss = joint_loss(logits, targets, batch // world, config)  # rows are labeled first on every rank
            if should_inject("nan", step, distributed.rank):
                loss = loss * float("nan")
            if should_inject("crash", step, distributed.rank):
                raise InjectedCrash(f"injected crash at step {step} on rank {distributed.rank}")
            if distributed.any(not torch.isfinite(loss).item(), device):  # every rank stops before the update
                raise UserError(f"{desc}: loss became non-finite ({loss.item()} on rank {distributed.rank}) at step "
                                f"{step}; lower {config_key}.lr (now {config.lr}) or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.apply_update_(model, ema_decay(config.ema_decay, step + 1))
            window_loss += loss.item()
            window_images += len(inputs) * world
            window_steps += 1
            bar.update(1)
            done = step + 1
            if main and (done % log_every == 0 or done == total_steps):
                seconds = time.perf_counter() - window_start
                record = {"step": done, "epoch": round(done / steps_per_epoch, 3), "lr": lr,
                          "loss": window_loss / window_steps,
                          "images_per_second": round(window_images / max(seconds, 1e-9), 1)}
                with open(metrics_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                window_loss, window_images, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
            stop = distributed.any(termination.raised, device)
            if done % config.checkpoint_every == 0 or done == total_steps or stop:
                if main:
                    save_checkpoint(checkpoint_path, model, optimizer, done, ema.module if ema else None, fingerprint)
                distributed.barrier()
            if stop and done < total_steps:
                raise Preempted(f"{desc}: stopped by SIGTERM after step {done}; checkpoint saved, run the same "
                                f"command again to resume")
    bar.close()
    final = (ema.module if ema else model).eval()
    if main:
        export_weights(stage_dir / "final.safetensors", final)
    distributed.barrier()
    return final


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so the log has no repeated steps."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))
