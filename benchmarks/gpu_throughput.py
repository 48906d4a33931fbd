"""Labeling and student-training throughput of efficientnet-b0 at 224 px on a CUDA GPU.

    python benchmarks/gpu_throughput.py            # ~6 min on one GPU; without CUDA it says so and exits 0

bf16 autocast and channels_last (what every GPU run uses), `torch.compile` off and on. Each
path is measured twice, side by side: through our code (pseudo_label over an in-memory pool;
train_model's student stage with RandAugment on the device and prefetch), and as a bare loop on
batches already on the GPU (the same model's forward, or forward + backward + step). The bare
loop keeps the GPU busy, so `1 - ours / bare` is the fraction of wall time the GPU waits on
input and on the host. Writes benchmarks/results/gpu_throughput.json; commit it whenever it
runs on a machine with CUDA.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.config import LabelConfig, TrainConfig  # noqa: E402
from noisystudent.data import ImageSet, memory_pool  # noqa: E402
from noisystudent.labels import PseudoLabeledSet, pseudo_label  # noqa: E402
from noisystudent.models import autocast, build_model, to_model_input  # noqa: E402
from noisystudent.noise import RandAugment  # noqa: E402
from noisystudent.train import train_model  # noqa: E402

SEED, MODEL, SIZE, CLASSES = 0, "efficientnet-b0", 224, 1000
LABEL_BATCH, POOL = 256, 8192
LABELED, RATIO, TRAIN_STEPS = 64, 3, 120


def images(count: int, seed: int) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (count, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    return ImageSet(pixels, torch.arange(count) % CLASSES, [str(i) for i in range(count)],
                    [str(c) for c in range(CLASSES)])


def model(noised: bool) -> torch.nn.Module:
    torch.manual_seed(SEED)
    net = build_model(MODEL, CLASSES, 3, dropout=0.2 if noised else 0.0, survival_prob=0.8 if noised else 1.0)
    return net.cuda().to(memory_format=torch.channels_last)


def timed(function) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def labeling(pool: ImageSet, compiled: bool, folder: Path) -> dict:
    device = torch.device("cuda")
    teacher = model(noised=False).eval()
    forward = torch.compile(teacher) if compiled else teacher
    config = LabelConfig(batch_size=LABEL_BATCH, shard_size=POOL)
    pseudo_label(forward, memory_pool(pool.subset(range(2 * LABEL_BATCH)), "warm-up"), config,
                 folder / f"warm-{compiled}", device)  # compiling, cudnn autotuning
    ours = timed(lambda: pseudo_label(forward, memory_pool(pool, "pool"), config, folder / f"store-{compiled}", device))
    batch = to_model_input(pool.images[:LABEL_BATCH], device)

    def bare():
        with torch.inference_mode(), autocast(device):
            for _ in range(len(pool) // LABEL_BATCH):
                forward(batch)
    bare()
    bare_seconds = timed(bare)
    ours_rate, bare_rate = len(pool) / ours, len(pool) // LABEL_BATCH * LABEL_BATCH / bare_seconds
    return {"ours_images_per_second": round(ours_rate, 1), "bare_images_per_second": round(bare_rate, 1),
            "gpu_waiting_fraction": round(1 - ours_rate / bare_rate, 3)}


def training(labeled: ImageSet, pseudo: PseudoLabeledSet, compiled: bool, folder: Path) -> dict:
    device = torch.device("cuda")
    config = TrainConfig(batch_size=LABELED, unlabeled_ratio=RATIO, lr=0.05, warmup_epochs=0, compile=compiled,
                         epochs=TRAIN_STEPS / (len(pseudo) / (LABELED * RATIO)), checkpoint_every=10**6)
    stage = folder / f"student-{compiled}"
    train_model(model(noised=True), labeled, config, stage, SEED, device, pseudo,
                RandAugment(2, 27), desc="student")
    windows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    ours_rate = statistics.median(window["images_per_second"] for window in windows[2:])  # past compiling

    net = model(noised=True).train()
    forward = torch.compile(net) if compiled else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    rows = LABELED * (1 + RATIO)
    inputs = to_model_input(torch.cat([labeled.images[:LABELED], pseudo.images[:rows - LABELED]]), device)
    targets = F.one_hot(torch.arange(rows, device=device) % CLASSES, CLASSES).float()

    def bare(steps: int):
        for _ in range(steps):
            with autocast(device):
                logits = forward(inputs)
            loss = -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    bare(10)
    bare_rate = 40 * rows / timed(lambda: bare(40))
    return {"ours_images_per_second": round(ours_rate, 1), "bare_images_per_second": round(bare_rate, 1),
            "gpu_waiting_fraction": round(1 - ours_rate / bare_rate, 3)}


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_throughput: needs a CUDA GPU and found none; nothing measured")
        return 0
    torch.backends.cudnn.benchmark = True
    pool, labeled = images(POOL, SEED), images(2048, SEED + 1)
    generator = torch.Generator().manual_seed(SEED + 2)
    pseudo = PseudoLabeledSet(pool.images, torch.rand(POOL, 10, generator=generator).argsort(1),
                              torch.full((POOL, 10), 0.1), CLASSES)
    results = {}
    with tempfile.TemporaryDirectory(prefix="noisystudent-gpu-") as folder:
        for compiled in (False, True):
            key = "compiled" if compiled else "eager"
            results[key] = {"labeling": labeling(pool, compiled, Path(folder)),
                            "student_training": training(labeled, pseudo, compiled, Path(folder))}
            print(key, results[key], flush=True)
    write_result("gpu_throughput", {
        "benchmark": "gpu_throughput", **environment(), "seed": SEED, "model": MODEL, "image_size": SIZE,
        "label_batch": LABEL_BATCH, "pool": POOL, "student_batch": {"labeled": LABELED, "unlabeled": LABELED * RATIO},
        "precision": "bf16 autocast, channels_last", "randaugment": "N=2, M=27, absolute pixels, on the GPU",
        "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
