"""Tiny data the tests make themselves: Fashion-MNIST-format IDX files with learnable classes."""

from __future__ import annotations

import gzip
import importlib
import struct
from pathlib import Path

import numpy as np
import pytest

from noisystudent.config import Config, load_config

# the module, not the `inference` context manager noisystudent.models exports under its name
inference = importlib.import_module("noisystudent.models.inference")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class c is a bright 8x8 block at one of 10 positions, on noise: easy but not trivial."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28))
    for i, c in enumerate(labels):
        row, col = divmod(int(c), 5)
        y, x = 4 + row * 12 + rng.integers(-1, 2), 1 + col * 5 + rng.integers(-1, 2)
        images[i, y:y + 8, x:x + 5] = rng.integers(180, 256)
    return images


@pytest.fixture(autouse=True)
def cpu_without_native_bf16(monkeypatch):
    """Every test sees a CPU without bf16 units, so precision=auto computes in fp32 on any machine
    (a test may not depend on the CPU model); tests of bf16 ask for it by name. The process's
    precision is restored after each test, whatever the test or the run it made set."""
    monkeypatch.setattr(inference, "_cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(inference, "_precision", inference._precision)


@pytest.fixture(scope="session")
def tiny_idx_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-fashion")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 60), ("t10k", 20)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", make_images(labels, rng))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def corruption_cache(tmp_path_factory) -> Path:
    """Shared by all tests, so each corrupted tiny test set is made once per session."""
    return tmp_path_factory.mktemp("corruptions")


@pytest.fixture
def tiny_config(tiny_idx_root, tmp_path, corruption_cache) -> Config:
    """Every stage in a few seconds on the tiny data."""
    return load_config(overrides=[
        f"data.root={tiny_idx_root}", "data.labels_per_class=10", f"runs_dir={tmp_path / 'runs'}", "name=tiny",
        "rounds=1", "models=resnet_tiny_32,resnet_tiny_32", "threads=2",
        "teacher.epochs=15", "teacher.batch_size=20", "teacher.warmup_epochs=1", "teacher.checkpoint_every=4",
        "student.epochs=1", "student.batch_size=10", "student.unlabeled_ratio=2", "student.warmup_epochs=0.1",
        "student.checkpoint_every=4", "noise.randaugment_magnitude=5", "noise.randaugment_pixels=relative", "labels.shard_size=200",
        "evaluate.images=24", "evaluate.severities=[1,4]", "evaluate.perturbation_frames=3", "evaluate.pgd_steps=2",
        f"evaluate.cache_dir={corruption_cache}",
    ])
