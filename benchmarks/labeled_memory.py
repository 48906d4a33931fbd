"""Peak memory of a short training stage on a labeled folder of 10k and of 200k images.

    python benchmarks/labeled_memory.py            # ~15 min on 2 cores (making 210k JPEGs included)

Each size is a fresh `noisystudent run` (rounds=0: decode, 20 teacher steps, evaluation on a
small test folder) in its own process; the labeled set is decoded once into the memory-mapped
cache (data.cache_dir), so its size should cost disk, not memory. Images are 64 px JPEGs in 10
class folders, trained at 32 px RGB. Peak RSS (the child's ru_maxrss) counts resident pages of
mapped files too, so the step reading a batch from the cache adds its pages; anonymous memory
is what must not grow with the set. Target: 200k uses at most 150 MB more than 10k.
Writes benchmarks/results/labeled_memory.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

SEED, SIZES, CLASSES, STEPS, BATCH = 0, (10_000, 200_000), 10, 20, 64


def make_folder(root: Path, count: int, seed: int) -> None:
    """`count` 64 px JPEGs, class c tinted by c (learnable, cheap to make)."""
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    noise = rng.integers(0, 60, (256, 64, 64, 3), dtype=np.uint8)
    for i in range(count):
        c = i % CLASSES
        pixels = noise[i % 256] + np.uint8(c * 19)
        Image.fromarray(pixels).save(root / f"class{c}" / f"{i:06d}.jpg", quality=85)


PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss_mb(labeled: Path, test: Path, pool: Path, runs: Path, name: str, count: int) -> tuple[float, float]:
    """(peak RSS of the run in MB, its wall seconds)."""
    epochs = STEPS * BATCH / count
    command = [sys.executable, "-m", "noisystudent.cli", "run", "demo", "rounds=0", "models=resnet_tiny_32",
               "data.dataset=folder", f"data.labeled={labeled}", f"data.test={test}", f"data.unlabeled={pool}",
               "data.image_size=32", "data.channels=3", f"runs_dir={runs}", f"name={name}",
               f"teacher.epochs={epochs}", f"teacher.batch_size={BATCH}", "teacher.warmup_epochs=0",
               "evaluate.robustness=false", "threads=2", f"seed={SEED}"]
    started = time.perf_counter()
    output = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    if output.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{output.stderr[-3000:]}")
    return int(output.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - started


def main() -> None:
    rows = {}
    with tempfile.TemporaryDirectory(prefix="noisystudent-memory-") as folder:
        root = Path(folder)
        make_folder(root / "test", 500, SEED + 1)
        make_folder(root / "pool", 100, SEED + 2)
        for count in SIZES:
            started = time.perf_counter()
            make_folder(root / f"labeled{count}", count, SEED)
            made = time.perf_counter() - started
            first, first_seconds = peak_rss_mb(root / f"labeled{count}", root / "test", root / "pool", root / "runs",
                                               f"n{count}", count)
            again, again_seconds = peak_rss_mb(root / f"labeled{count}", root / "test", root / "pool", root / "runs",
                                               f"n{count}-again", count)
            cache = sum(p.stat().st_size for p in (root / "runs" / ".cache" / "images").glob(f"labeled{count}-*.npy"))
            rows[str(count)] = {"peak_rss_mb_decoding": round(first, 1), "seconds_decoding": round(first_seconds, 1),
                                "peak_rss_mb_cached": round(again, 1), "seconds_cached": round(again_seconds, 1),
                                "cache_bytes": cache, "seconds_making_jpegs": round(made, 1)}
            print(count, rows[str(count)], flush=True)
    small, large = (rows[str(n)] for n in SIZES)
    write_result("labeled_memory", {
        "benchmark": "labeled_memory", **environment(), "seed": SEED, "image": "64 px JPEG, trained at 32 px RGB",
        "teacher_steps": STEPS, "batch": BATCH, "sizes": rows, "target_mb": 150,
        "growth_mb_decoding": round(large["peak_rss_mb_decoding"] - small["peak_rss_mb_decoding"], 1),
        "growth_mb_cached": round(large["peak_rss_mb_cached"] - small["peak_rss_mb_cached"], 1)})


if __name__ == "__main__":
    main()
