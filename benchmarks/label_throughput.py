"""Label-stage throughput against a bare inference loop, and the folder source's decode rate.

    python benchmarks/label_throughput.py          # ~2 min on 2 cores

Same model (resnet_small_32, eval mode), same batch, same decoded uint8 tensors in one process:
`bare` is `model(x)` over the pool; `label` is `pseudo_label` (inference + top-k + Parquet shards
+ manifest). Measured alternately, three times each; medians. `ratio` = label / bare images/s
(goal >= 0.9: the store must cost little next to the network). Decoding is measured apart:
JPEG and PNG files (64x64 RGB) decoded by the folder source into 32x32 grayscale tensors; then
the label stage on the JPEG folder with `data.decode_threads` 0 (inline), 1, 2 and 4, alternated,
and `decode_threads_speedup` = images/s with 2 threads over inline.
Writes benchmarks/results/label_throughput.json.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.config import LabelConfig  # noqa: E402
from noisystudent.data import ImageSet, Pool, memory_pool, open_pool  # noqa: E402
from noisystudent.labels import pseudo_label  # noqa: E402
from noisystudent.models import build_model, iterate_logits  # noqa: E402

SEED, POOL, BATCH, SHARD, MODEL, REPEATS, DECODE_FILES = 0, 16_384, 512, 4_096, "resnet_small_32", 3, 4_000
DECODE_THREADS = (0, 1, 2, 4)


def bare_rate(model: torch.nn.Module, images: torch.Tensor) -> float:
    started = time.perf_counter()
    for _ in iterate_logits(model, images, BATCH, torch.device("cpu")):
        pass
    return len(images) / (time.perf_counter() - started)


def label_rate(model: torch.nn.Module, pool: Pool, folder: Path) -> float:
    started = time.perf_counter()
    pseudo_label(model, pool, LabelConfig(batch_size=BATCH, shard_size=SHARD), folder, torch.device("cpu"))
    return pool.size / (time.perf_counter() - started)


def write_images(folder: Path, suffix: str, count: int) -> None:
    rng = np.random.default_rng(SEED)
    folder.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:05d}.{suffix}")


def decode_rate(folder: Path) -> float:
    """Decoding alone, in the calling thread: the source's own cost."""
    started = time.perf_counter()
    pool = open_pool(folder, 32, 1, 0.0, ["a"])
    for _, items in pool.chunks(SHARD):
        for _ in pool.batches(items, BATCH):
            pass
    return DECODE_FILES / (time.perf_counter() - started)


def folder_label_rate(model: torch.nn.Module, folder: Path, threads: int, store: Path) -> float:
    """The label stage on JPEG files: decoding (in `threads` threads, or inline) plus inference."""
    pool = open_pool(folder, 32, 1, 0.0, list("abcdefghij"), decode_threads=threads)
    return label_rate(model, pool, store)


def main() -> None:
    torch.manual_seed(SEED)
    model = build_model(MODEL, 10, 1).eval().to(memory_format=torch.channels_last)  # as pseudo_label does
    generator = torch.Generator().manual_seed(SEED)
    images = torch.randint(0, 256, (POOL, 1, 32, 32), dtype=torch.uint8, generator=generator)
    pool = memory_pool(ImageSet(images, torch.zeros(POOL, dtype=torch.long), [f"img-{i:06d}" for i in range(POOL)],
                                list("abcdefghij")), "benchmark pool")
    bare, label = [], []
    with tempfile.TemporaryDirectory(prefix="noisystudent-label-") as work:
        bare_rate(model, images[:BATCH * 2])  # warm-up: first-call allocations and kernel choice
        for repeat in range(REPEATS):
            bare.append(bare_rate(model, images))
            label.append(label_rate(model, pool, Path(work) / f"store-{repeat}"))
        decode = {}
        for suffix in ("jpg", "png"):
            write_images(Path(work) / suffix, suffix, DECODE_FILES)
            decode[suffix] = round(decode_rate(Path(work) / suffix), 1)
        folder_rates = {threads: [] for threads in DECODE_THREADS}
        for repeat in range(REPEATS):  # alternated, so drift on a shared machine hits every setting alike
            for threads in DECODE_THREADS:
                store = Path(work) / f"folder-store-{threads}-{repeat}"
                folder_rates[threads].append(folder_label_rate(model, Path(work) / "jpg", threads, store))
        store_bytes = sum(p.stat().st_size for p in (Path(work) / "store-0").glob("shard-*.parquet"))
    result = {"benchmark": "label_throughput", **environment(), "seed": SEED, "model": MODEL, "pool": POOL,
              "batch_size": BATCH, "shard_size": SHARD, "repeats": REPEATS,
              "bare_images_per_second": [round(r, 1) for r in bare], "label_images_per_second": [round(r, 1) for r in label],
              "ratio": round(statistics.median(label) / statistics.median(bare), 3),
              "store_bytes_per_image_10_classes": round(store_bytes / POOL, 1),
              "decode_images_per_second": decode,
              "folder_label_images_per_second": {str(t): round(statistics.median(r), 1) for t, r in folder_rates.items()},
              "decode_threads_speedup": round(statistics.median(folder_rates[2]) / statistics.median(folder_rates[0]), 3)}
    write_result("label_throughput", result)


if __name__ == "__main__":
    main()
