"""One config object for a whole run: dataclasses, loaded from YAML, overridden by `a.b=value`.

Defaults reproduce the paper where the paper says something (threshold 0.3, head dropout 0.5,
stochastic-depth survival 0.8 at the last block, RandAugment N=2, soft labels); the sizes of
models and schedules default to what fits a 2-core CPU on Fashion-MNIST. Every field is
documented once, here, next to its default.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, UserError
from .models import MODEL_NAMES_HELP, PRECISIONS, is_known_model
from .registries import DATA_SOURCES, SUITES, TARGET_KINDS

INIT_FROM_TEACHER = "teacher"  # an `init` entry: start a student from the teacher that labeled its pool

# The ImageNet-C benchmark corruptions (evaluate/corruptions.py holds the implementation).
CORRUPTION_NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                    "jpeg_compression")


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"  # a data source by name (data/sources.py): fashion_mnist (the embedded
    #                                 default) | folder (your images: data/folder.py)
    root: str | None = None  # fashion_mnist: IDX folder; default $NOISYSTUDENT_DATA, else the Debian package's
    download: bool = False  # fashion_mnist: fetch with torchvision's downloader when files are missing
    labels_per_class: int = 100  # fashion_mnist: labeled images per class, drawn (seeded) from the train split
    labeled: str | None = None  # folder: ImageFolder root (one subfolder per class) or a .csv/.jsonl manifest
    unlabeled: str | None = None  # folder: a folder tree of images, a manifest, or WebDataset shards (a-{0..9}.tar)
    test: str | None = None  # folder: like labeled, with the labeled set's classes
    channels: int = 3  # folder: 3 (RGB) or 1 (grayscale); Fashion-MNIST is 1
    max_bad_fraction: float = 0.01  # folder: undecodable images tolerated (skipped and listed) before stopping
    decode_threads: int = 2  # threads decoding the unlabeled pool ahead of the teacher (0 = inline), and encoded images
    cache_dir: str | None = None  # folder: labeled and test sets decoded once at image_size into memory-mapped
    #                               files here, reused while the images are unchanged; null = <runs_dir>/.cache/images
    # folder: how the labeled and test sets are kept. cache: decoded once into cache_dir (disk: 150 KB an
    # image at 224 px RGB; 866 GB for ImageNet at 475 px). files: checked once, then decoded from the
    # source files whenever a batch needs them (no disk; one decode per image per epoch, in
    # decode_threads threads, ahead of the model on GPUs with train.prefetch)
    storage: Literal["cache", "files"] = "cache"
    unlabeled_limit: int | None = None  # cap the unlabeled pool (quick runs); None = all the rest
    ood_fraction: float = 0.0  # fashion_mnist: this share of the pool is out of domain (data/out_of_domain.py),
    #                            mixed in after unlabeled_limit
    ood_source: Literal["characters", "strokes"] = "characters"  # fashion_mnist: what the out-of-domain images are
    # The out-of-domain reference: this share of each class's labeled images (seeded, at least one)
    # is held out of every model's training and scored like the pool, so thresholds and the pool's
    # estimated out-of-domain share are read off in-domain images the teacher has not seen
    # (labels/ood.py). Opt-in, so 0 by default: holding labels out costs the teacher accuracy
    # (0.1 of the demo's 1,000 labels: 100 it never trains on), and with 0 every config and
    # committed result keeps its behaviour; the out-of-domain benchmark (benchmarks/ood_filter.py)
    # and sweep (configs/sweeps/out-of-domain.yaml) set it. 0 = no reference, so no out-of-domain
    # estimate and no selection.ood_quantile
    reference_fraction: float = 0.0
    test_limit: int | None = None  # evaluate on the first N test images; None = all 10k
    image_size: int = 32  # 28 px images are zero-padded to this (32 keeps ImageNet-C ops valid)
    # image_size: every model sees images at data.image_size. model: each registry model trains at
    # its own train resolution and labels / evaluates at its test resolution after the official
    # center crop (EfficientNets: S / (S + 32) of the shorter side), resized inside the model from
    # the images stored at data.image_size (`noisystudent models` lists the resolutions)
    resolution: Literal["image_size", "model"] = "image_size"


@dataclass
class NoiseConfig:
    """Student noise (the paper's three sources; noise/ holds all of it). No model ever labels
    with it; the round-0 teacher trains with it only with `teacher: true`."""

    randaugment: bool = True  # input noise on unlabeled and labeled student images
    randaugment_layers: int = 2  # N: ops applied per image (paper 2)
    randaugment_magnitude: float = 27.0  # M on the TF scale (10 = its "max"; the paper uses 27)
    # TF's translate (100 px) and cutout (40 px) constants: absolute pixels at every resolution, as
    # the official ImageNet path has them, or relative (scaled by image_size / 224) for small
    # images, where absolute ones would push every translated image out of frame (the demo: 32 px)
    randaugment_pixels: Literal["absolute", "relative"] = "absolute"
    dropout: float | None = 0.5  # before the classifier (paper 0.5); 0 turns it off; null = the
    #                              model's own default (official: B0 0.2 ... B7 0.5)
    survival_prob: float = 0.8  # stochastic depth at the last block (paper 0.8); 1 turns it off
    teacher: bool = False  # the round-0 teacher trains with this noise too (every official run does;
    #                        the paper's B7 baseline with RandAugment); it still labels un-noised
    labeling: bool = False  # the paper's ablation only: teachers label with this noise on (dropout, stochastic
    #                         depth, RandAugment on their inputs); the paper found it hurts, so never in a real run


@dataclass
class TrainConfig:
    epochs: float = 60.0  # length of training, in passes over `epoch_unit`
    # What an epoch counts: the labeled set (teacher always; the official code's student too:
    # its schedule follows the labeled data) or the student's pseudo-labeled selection.
    epoch_unit: Literal["selection", "labeled"] = "selection"
    batch_size: int = 64  # labeled images per step
    optimizer: Literal["sgd", "rmsprop"] = "sgd"  # sgd (Nesterov; CPU-friendly) | rmsprop (official: decay 0.9, momentum 0.9, eps 1e-3)
    lr: float = 0.1  # peak learning rate, reached after warm-up (official: 0.016 per 256 images)
    lr_schedule: Literal["cosine", "exponential"] = "cosine"  # cosine (to 0) | exponential (official: x0.97 every 2.4 epochs)
    lr_decay_epochs: float = 2.4  # exponential: epochs per x0.97 step (official main.py: 2.4 x train_ratio)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # official: 1e-5
    weight_decay_norms: bool = True  # decay normalization layers' parameters too (official: false,
    #                                  BatchNorm excluded; every other parameter, biases included, decays)
    warmup_epochs: float = 1.0  # linear warm-up (official: 5 epochs)
    label_smoothing: float = 0.1  # on the labeled loss only (official 0.1)
    augment: bool = True  # crop + flip every training image (the student's RandAugment comes on top)
    crop: Literal["pad", "inception", "center"] = "pad"  # pad: 2 px pad-crop (small images); inception: the
    #                                            official random-resized crop (area 0.08-1, aspect 3/4-4/3), for large
    #                                            images; center: the model's evaluation crop, unaugmented (FixRes)
    checkpoint_every: int = 200  # steps between resumable checkpoints (also at the end)
    ema_decay: float = 0.0  # EMA of weights (official 0.9999, decay min(d, (1+s)/(10+s))); 0 = off. When on,
    #                         the EMA weights are the ones evaluated, exported and used as next teacher
    unlabeled_ratio: float = 3.0  # student only: r*B pseudo-labeled images per step (paper 3..28)
    # student only: joint_mean = one mean cross-entropy over all B + r*B rows; official = mean over
    # the labeled rows + r x mean over the pseudo-labeled ones (main.py). Per-image weights are the
    # same; the data term is (1 + r) times larger against weight decay in the official form.
    loss_weighting: Literal["joint_mean", "official"] = "joint_mean"
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (CUDA only)
    prefetch: int | None = None  # batches built ahead in worker threads while the model trains; 0 = on demand;
    #                              null = 2 on a GPU, 0 on a CPU (there the threads take cores from the model:
    #                              benchmarks/results/loop_overhead.json)
    compile: bool = False  # torch.compile the forward (GPUs: faster steps after about a minute of compiling)

    def inputs(self) -> dict:
        """The fields that change what training computes: all but how often it checkpoints and
        how far ahead batches are built, so changing those resumes a stage instead of refusing it."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if key not in ("checkpoint_every", "prefetch")}


@dataclass
class LabelConfig:
    kind: str = "soft"  # a target kind (labels/targets.py): soft (probabilities) or hard (one-hot argmax);
    #                     paper: soft a bit better
    temperature: float = 1.0  # softmax(logits / T) for soft labels
    batch_size: int = 1024  # teacher inference batch
    shard_size: int = 20000  # images per store shard
    top_k: int = 100  # classes stored per image when there are more than 100 (else all of them); at 1000
    #                   classes 100 leaves ~2% of the mass out, 10 leaves ~9% (benchmarks/results/topk_targets.json)
    # The out-of-domain score stored per image (labels/ood.py): energy, max_softmax, max_logit, or
    # the feature-space mahalanobis / relative_mahalanobis / knn / feature_ensemble, fit on the
    # teacher's labeled images. The default is the best of them in
    # benchmarks/results/ood_filter.json (docs/ood.md)
    ood_score: Literal["energy", "max_softmax", "max_logit", "mahalanobis", "relative_mahalanobis",
                       "knn", "feature_ensemble"] = "feature_ensemble"


@dataclass
class SelectionConfig:
    confidence_threshold: float = 0.3  # drop images whose max probability is below (paper 0.3)
    images_per_class: int | None = None  # balance target; None = mean kept count per class (paper 130K)
    mode: Literal["top_confidence", "official"] = "top_confidence"  # top_confidence (the paper's text) or official (its code); labels/selection.py
    # Beyond the paper: drop images the teacher scores as out of its domain. The score is
    # labels.ood_score (stored per image); an image is dropped when it scores above this quantile of
    # the held-out reference's scores (data.reference_fraction), so about 1 - q of the pool's
    # in-domain images are dropped with the out-of-domain ones (0.95: 95% kept). null = no such
    # filter; the selection stats still estimate the pool's out-of-domain share and flag the
    # images above the reference's 0.95 quantile (out_of_domain.csv in the selection folder)
    ood_quantile: float | None = None
    # How the selected images are kept for the student (labels/gather.py): pixels = decoded at
    # training resolution into a memory-mapped images.npy (fast; 677 KB an image at 475 px RGB);
    # encoded = the pool's own bytes, decoded per batch in data.decode_threads threads (about the
    # pool's size on disk; for selections of millions). Both give the same pixels; changing it
    # applies to the next selection and never retrains a student.
    storage: Literal["pixels", "encoded"] = "pixels"


@dataclass
class FinetuneConfig:
    """FixRes-style fine-tune after each student (paper: 1.5 epochs at the test resolution, shallow
    layers frozen). Its output is the round's model: evaluated and the next teacher."""

    epochs: float = 0.0  # passes over the labeled set; 0 = no fine-tune (paper 1.5)
    resolution: int | None = None  # inputs are resized to this inside the model; null = unchanged
    freeze_fraction: float = 0.5  # share of the backbone's layers, from the input side, kept frozen
    batch_size: int = 64
    lr: float = 0.005


@dataclass
class EvaluateConfig:
    """What each trained model is measured on (eval.json); see `noisystudent evaluate --help`."""

    robustness: bool = True  # the robustness suites besides clean accuracy
    # which ones (evaluate/suite.py registers them): ImageNet-C corruptions, ImageNet-P style
    # perturbations, FGSM / PGD
    suites: list[str] = field(default_factory=lambda: ["corruptions", "perturbations", "adversarial"])
    images: int = 1000  # test images the robustness suites use (clean accuracy uses all)
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTION_NAMES))  # ImageNet-C's 15
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    perturbation_frames: int = 10  # frames per ImageNet-P style sequence
    epsilons: list[float] = field(default_factory=lambda: [0.0, 1 / 255, 2 / 255, 4 / 255])  # L-inf, pixels in [0, 1]
    pgd_steps: int = 10
    pgd_random_start: bool = True
    cache_dir: str | None = None  # corrupted test sets; default <runs_dir>/.cache/corruptions
    # score with the logits restricted to the classes the test set has (ImageNet-A / -R: 200 of
    # ImageNet's 1000); corruptions and perturbations too, the attacks' loss not
    restrict_to_test_classes: bool = False
    alexnet_mce: bool = False  # also report mCE normalized by AlexNet's published ImageNet-C errors
    #                            (alexnet_mce in eval.json; meaningful on ImageNet only)


@dataclass
class Config:
    name: str = "demo"  # run directory name under runs_dir
    runs_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    rounds: int = 2  # student rounds after the round-0 teacher
    # models[0] is the round-0 teacher, models[k] the round-k student; a shorter list repeats
    # its last entry. See `noisystudent models` for the registry.
    models: list[str] = field(default_factory=lambda: ["resnet_small_32", "resnet_small_32", "resnet_medium_32"])
    allow_smaller_student: bool = False  # the paper's student is equal or larger; refuse otherwise
    # Initial weights of models[k], in the same order (missing or null: random): a run's stage folder
    # or exported file, a local .safetensors / .pth of that architecture, or a timm hub name such as
    # timm/tf_efficientnet_b0.ns_jft_in1k (needs internet). Another class count gets a new classifier;
    # another channel count, an adapted first convolution. `teacher` (rounds >= 1): the round's own
    # teacher, the model that labeled its pool, when both are the same model: a student that starts
    # where its teacher ended needs fewer passes than one from scratch (the paper trains from scratch)
    init: list[str | None] = field(default_factory=list)
    threads: int | None = None  # torch CPU threads; None = torch's default
    # auto | bf16 | fp32: compute in bf16 autocast (fp32 weights) or fp32. auto: bf16 on CUDA and on
    # CPUs with native bf16 units (AVX512-BF16, AMX: 1.3-1.4x faster training), fp32 elsewhere
    precision: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TrainConfig = field(default_factory=TrainConfig)
    student: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3.0, warmup_epochs=0.2))
    # Per-round changes to `student`, round 1 first (rounds past the list: `student` as is), e.g. the
    # paper's ratios 14, 14, 28: [{unlabeled_ratio: 14}, {unlabeled_ratio: 14}, {unlabeled_ratio: 28}]
    student_rounds: list[dict] = field(default_factory=list)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def image_cache(self) -> Path:
        """Where decoded labeled and test sets are cached (shared by the runs under runs_dir)."""
        return Path(self.data.cache_dir or Path(self.runs_dir) / ".cache" / "images")

    def corruption_cache(self) -> Path:
        """Where corrupted test sets are cached (shared by the runs under runs_dir)."""
        return Path(self.evaluate.cache_dir or Path(self.runs_dir) / ".cache" / "corruptions")

    def model_for_round(self, round_index: int) -> str:
        return self.models[min(round_index, len(self.models) - 1)]

    def student_for_round(self, round_index: int) -> TrainConfig:
        """Round `round_index`'s student training: `student` with that round's `student_rounds` entry."""
        if round_index > len(self.student_rounds):
            return self.student
        changes = self.student_rounds[round_index - 1]
        return from_dict({**to_dict(self.student), **changes}, TrainConfig, f"student_rounds[{round_index - 1}].")

    def finetune_training(self, round_index: int) -> TrainConfig:
        """Round `round_index`'s FixRes fine-tune as a training setting, one for the pipeline that
        trains it and the plan that prices it: passes over the labeled images, no warm-up or label
        smoothing, the round's student weight decay, and their center crop at the test resolution
        with data.resolution=model (else the images as stored, resized inside the model)."""
        finetune = self.finetune
        return TrainConfig(epochs=finetune.epochs, epoch_unit="labeled", batch_size=finetune.batch_size,
                           lr=finetune.lr, warmup_epochs=0.0, label_smoothing=0.0,
                           augment=self.data.resolution == "model", crop="center",
                           weight_decay=self.student_for_round(round_index).weight_decay)

    def init_for_round(self, round_index: int) -> str | None:
        """The initial weights of round `round_index`'s model (`init`): a source, INIT_FROM_TEACHER, or
        None for random ones."""
        return self.init[round_index] if round_index < len(self.init) else None

    def init_sources(self) -> list[tuple[str, str]]:
        """(key, source) of each `init` entry that names weights to load (not null, not INIT_FROM_TEACHER)."""
        return [(f"init[{k}]", source) for k, source in enumerate(self.init) if source not in (None, INIT_FROM_TEACHER)]

    def validate(self) -> "Config":
        """Raise ConfigError naming the first impossible value."""
        checks: list[tuple[str, bool, str]] = [
            ("name", bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
             "must be a plain directory name (no '/')"),
            ("rounds", self.rounds >= 0, "must be >= 0"),
            ("threads", self.threads is None or self.threads >= 1, "must be >= 1, or null for torch's default"),
            ("precision", self.precision in PRECISIONS,
             f"must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}"),
            ("models", len(self.models) >= 1, "needs at least the teacher's model name"),
            ("init", len(self.init) <= self.rounds + 1, "has more entries than models trained (rounds + 1)"),
            ("init[0]", self.init_for_round(0) != INIT_FROM_TEACHER,
             f"cannot be {INIT_FROM_TEACHER}: the round-0 teacher has none (give weights or null)"),
            *((f"init[{k}]", self.model_for_round(k) == self.model_for_round(k - 1),
               f"is {INIT_FROM_TEACHER}, but round {k}'s student ({self.model_for_round(k)}) is not its teacher's "
               f"model ({self.model_for_round(k - 1)}); give both the same model, or null")
              for k in range(1, self.rounds + 1) if self.init_for_round(k) == INIT_FROM_TEACHER),
            ("data.channels", self.data.channels in (1, 3), "must be 1 or 3"),
            ("data.max_bad_fraction", 0 <= self.data.max_bad_fraction <= 1, "must be in [0, 1]"),
            ("data.decode_threads", self.data.decode_threads >= 0, "must be >= 0 (0 decodes in the main thread)"),
            ("data.labels_per_class", self.data.labels_per_class >= 1, "must be >= 1"),
            ("data.ood_fraction", 0 <= self.data.ood_fraction < 1, "must be in [0, 1)"),
            ("selection.ood_quantile", self.selection.ood_quantile is None or 0 < self.selection.ood_quantile <= 1,
             "must be in (0, 1] (the share of the held-out reference's images that pass) or null (no filter)"),
            ("data.reference_fraction", 0 <= self.data.reference_fraction < 1,
             "must be in [0, 1) (the share of each class's labeled images held out as the out-of-domain reference)"),
            ("selection.ood_quantile", self.selection.ood_quantile is None or self.data.reference_fraction > 0,
             "needs data.reference_fraction > 0: the filter's threshold is read off the held-out reference"),
            ("data.unlabeled_limit", self.data.unlabeled_limit is None or self.data.unlabeled_limit >= 1,
             "must be >= 1 or null"),
            ("data.test_limit", self.data.test_limit is None or self.data.test_limit >= 1, "must be >= 1 or null"),
            ("data.image_size", self.data.image_size >= (28 if self.data.dataset == "fashion_mnist" else 8),
             "must be >= 28 for Fashion-MNIST (28x28 images), >= 8 otherwise"),
            ("noise.randaugment_layers", self.noise.randaugment_layers >= 0, "must be >= 0"),
            ("noise.randaugment_magnitude", 0 <= self.noise.randaugment_magnitude <= 30,
             "must be in [0, 30] (TF scale: 10 is its nominal max, the paper uses 27)"),
            ("noise.dropout", self.noise.dropout is None or 0 <= self.noise.dropout < 1, "must be in [0, 1) or null"),
            ("noise.survival_prob", 0 < self.noise.survival_prob <= 1, "must be in (0, 1]; 1 turns it off"),
            ("labels.temperature", self.labels.temperature > 0, "must be > 0"),
            ("labels.batch_size", self.labels.batch_size >= 1, "must be >= 1"),
            ("labels.shard_size", self.labels.shard_size >= 1, "must be >= 1"),
            ("labels.top_k", self.labels.top_k >= 1, "must be >= 1"),
            ("selection.confidence_threshold",
             self.selection.mode != "official" or abs(self.selection.confidence_threshold * 100
                                                      - round(self.selection.confidence_threshold * 100)) < 1e-9,
             "must be a multiple of 0.01 with selection.mode=official (its thresholds are 0.01 bins)"),
            ("selection.confidence_threshold", 0 <= self.selection.confidence_threshold <= 1,
             "must be in [0, 1] (a probability)"),
            ("finetune.epochs", self.finetune.epochs >= 0, "must be >= 0; 0 turns the fine-tune off"),
            ("finetune.resolution", self.finetune.resolution is None or self.finetune.resolution >= 8,
             "must be >= 8 or null"),
            ("finetune.freeze_fraction", 0 <= self.finetune.freeze_fraction < 1,
             "must be in [0, 1): the classifier always trains"),
            ("finetune.batch_size", self.finetune.batch_size >= 1, "must be >= 1"),
            ("finetune.lr", self.finetune.lr > 0, "must be > 0"),
            ("evaluate.images", self.evaluate.images >= 1, "must be >= 1"),
            ("evaluate.corruptions", set(self.evaluate.corruptions) <= set(CORRUPTION_NAMES),
             f"must be among {', '.join(CORRUPTION_NAMES)}"),
            ("evaluate.severities", all(1 <= s <= 5 for s in self.evaluate.severities), "must be in 1..5"),
            ("evaluate.perturbation_frames", self.evaluate.perturbation_frames >= 2, "must be >= 2"),
            ("evaluate.epsilons", all(0 <= e <= 1 for e in self.evaluate.epsilons), "must be in [0, 1] (pixel scale)"),
            ("evaluate.pgd_steps", self.evaluate.pgd_steps >= 1, "must be >= 1"),
            ("selection.images_per_class",
             self.selection.images_per_class is None or self.selection.images_per_class >= 1, "must be >= 1 or null"),
        ]
        per_round = [(f"student_rounds[{k - 1}]", self.student_for_round(k)) for k in range(1, len(self.student_rounds) + 1)]
        checks.append(("student_rounds", len(self.student_rounds) <= self.rounds,
                       "has more entries than rounds"))
        for prefix, train in (("teacher", self.teacher), ("student", self.student), *per_round):
            checks += [
                (f"{prefix}.epochs", train.epochs > 0, "must be > 0"),
                (f"{prefix}.batch_size", train.batch_size >= 1, "must be >= 1"),
                (f"{prefix}.lr", train.lr > 0, "must be > 0"),
                (f"{prefix}.momentum", 0 <= train.momentum < 1, "must be in [0, 1)"),
                (f"{prefix}.weight_decay", train.weight_decay >= 0, "must be >= 0"),
                (f"{prefix}.warmup_epochs", 0 <= train.warmup_epochs < train.epochs, "must be in [0, epochs)"),
                (f"{prefix}.label_smoothing", 0 <= train.label_smoothing < 1, "must be in [0, 1)"),
                (f"{prefix}.checkpoint_every", train.checkpoint_every >= 1, "must be >= 1"),
                (f"{prefix}.prefetch", train.prefetch is None or train.prefetch >= 0,
                 "must be >= 0 (0 builds each batch when it is needed) or null (2 on a GPU, 0 on a CPU)"),
                (f"{prefix}.ema_decay", 0 <= train.ema_decay < 1, "must be in [0, 1); 0 turns EMA off"),
                (f"{prefix}.unlabeled_ratio", train.unlabeled_ratio > 0, "must be > 0 (paper: 3 to 28)"),
                (f"{prefix}.lr_decay_epochs", train.lr_decay_epochs > 0, "must be > 0 (official 2.4)"),
            ]
        sections = dict(per_round)  # per-round student settings are not attributes: look them up here
        for key, ok, message in checks:
            if not ok:
                prefix, _, name = key.rpartition(".")
                value = getattr(sections[prefix], name) if prefix in sections else _lookup(self, key)
                raise ConfigError(key, f"{message}; got {value!r}")
        self._validate_registered_names()
        for index, name in enumerate(self.models):
            if not is_known_model(name):
                raise ConfigError(f"models[{index}]", f"unknown model {name!r}; {MODEL_NAMES_HELP}")
        return self


    def _validate_registered_names(self) -> None:
        """Names that select a registered implementation: data source, target kind, suites."""
        source = DATA_SOURCES.get(self.data.dataset)
        if source is None:
            raise ConfigError("data.dataset", f"unknown data source {self.data.dataset!r}; registered: "
                                              f"{', '.join(DATA_SOURCES)} (data/sources.py)")
        for key in source.required:
            if getattr(self.data, key) in (None, ""):
                raise ConfigError(f"data.{key}", f"is required with dataset {self.data.dataset!r}")
        unknown = [name for name in self.evaluate.suites if name not in SUITES]
        if unknown:
            raise ConfigError("evaluate.suites", f"unknown suite {unknown[0]!r}; registered: {', '.join(SUITES)} "
                                                 f"(evaluate/suite.py)")
        if self.labels.kind not in TARGET_KINDS:
            raise ConfigError("labels.kind", f"unknown target kind {self.labels.kind!r}; registered: "
                                             f"{', '.join(TARGET_KINDS)} (labels/targets.py)")


# ---------------------------------------------------------------------------------------------
# YAML and dotted overrides


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(data: dict, cls: type = Config, prefix: str = "") -> Any:
    """Build a dataclass from a plain dict, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(dotted, f"unknown key; valid keys here: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(value, hint, key + ".")
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, key)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if isinstance(value, str):  # `models=a,b,c` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(key, f"expected {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                if part in node:
                    raise ConfigError(section, f"is set to {child!r}, not to a section of keys, so {key} cannot be "
                                               f"set; remove that value from the YAML")
                raise ConfigError(section, f"unknown section; sections here: "
                                           f"{', '.join(k for k, v in node.items() if isinstance(v, dict))}")
            node = child
        node[parts[-1]] = value
    return data


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file holding a mapping (safe_load), or a UserError naming `what` and the problem."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; give a YAML file (e.g. configs/demo.yaml)")
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{what} {path} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason}); is it the file you "
                        f"meant? Save a YAML file as UTF-8") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{what} {path} must hold a mapping of keys to values")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: Config | None = None) -> Config:
    """Defaults (or `base`) <- YAML file <- overrides, validated."""
    data = to_dict(base or Config())
    if path is not None:
        _merge(data, read_yaml_mapping(Path(path), "config file"), "")
    apply_overrides(data, overrides or [])
    return from_dict(data).validate()


def _merge(into: dict, update: dict, prefix: str) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, f"{prefix}{key}.")
        elif isinstance(into.get(key), dict) and value is not None:
            raise ConfigError(f"{prefix}{key}", f"is a section of keys, got {value!r}; write its keys indented "
                                                f"below `{key}:` (e.g. `  {next(iter(into[key]))}: ...`)")
        else:
            into[key] = value


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _lookup(config: Any, dotted: str) -> Any:
    """The value at a dotted key; a part may index a list (`init[2]`)."""
    for part in dotted.split("."):
        name, _, index = part.partition("[")
        config = getattr(config, name)
        if index:
            config = config[int(index.rstrip("]"))]
    return config


def field_comments(cls: type) -> dict[str, list[str]]:
    """Each field's documentation as written in this file: comment lines just above the field,
    the comment on its line and the aligned comment lines that continue it."""
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    previous = None
    for line in inspect.getsource(cls).splitlines()[1:]:
        field_line = re.match(r"    (\w+): [^#]*?(?:  # (.*))?$", line)
        comment_line = re.match(r"    #( +)(.*)$", line)
        if field_line and not line.strip().startswith(("def ", "return ")):
            previous = field_line.group(1)
            comments[previous] = pending + ([field_line.group(2)] if field_line.group(2) else [])
            pending = []
        elif comment_line and len(comment_line.group(1)) > 1 and previous is not None:  # aligned: continues the last
            comments[previous].append(comment_line.group(2))
        elif comment_line:
            pending.append(comment_line.group(2))
        else:
            previous = None if line.strip() else previous
    return comments


def commented_yaml(config: Config) -> str:
    """The config as YAML that `load_config` reads back, every field with its documentation."""
    lines = ["# noisystudent config: every field with its documentation (src/noisystudent/config.py).",
             "# Load it with `noisystudent run THIS.yaml [key=value ...]`."]

    def emit(obj, indent: str) -> None:
        docs = field_comments(type(obj))
        for item in dataclasses.fields(obj):
            value = getattr(obj, item.name)
            notes = docs.get(item.name, [])
            if dataclasses.is_dataclass(value):
                doc = inspect.getdoc(type(value)) or ""
                if doc.startswith(type(value).__name__ + "("):  # the dataclass's generated signature, not a docstring
                    doc = ""
                lines.extend(["", *(f"{indent}# {text}" for text in doc.splitlines() if text), f"{indent}{item.name}:"])
                emit(value, indent + "  ")
                continue
            scalar = yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]
            if len(notes) == 1:
                lines.append(f"{indent}{item.name}: {scalar}  # {notes[0]}")
            else:  # a comment of several lines reads as a paragraph above its field
                lines.extend([*(f"{indent}# {note}" for note in notes), f"{indent}{item.name}: {scalar}"])

    emit(config, "")
    return "\n".join(lines) + "\n"
