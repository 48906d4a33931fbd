"""Our training stage's images/s against a bare PyTorch loop doing the same forward, backward
and step on batches prepared in advance (same model, batch and threads), side by side.

    python benchmarks/loop_overhead.py            # ~6 min on 2 cores

The demo's student step: resnet_medium_32, 32 labeled + 128 pseudo-labeled 32 px images, SGD.
Four settings of our loop: without augmentation (the loop's own cost: batch gathering, stop
flags, logging, checkpoint-free steps) and with weak augmentation + RandAugment (M=10,
relative pixels, as the demo), each with batches built on demand (`prefetch=0`, a CPU's default)
and two ahead in worker threads (`prefetch=2`, a GPU's default). Each setting alternates bare
and ours three times; the ratio is the median of the three paired ratios. Writes
benchmarks/results/loop_overhead.json.
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

from noisystudent.config import TrainConfig  # noqa: E402
from noisystudent.data import ImageSet  # noqa: E402
from noisystudent.labels import PseudoLabeledSet  # noqa: E402
from noisystudent.models import build_model  # noqa: E402
from noisystudent.noise import RandAugment  # noqa: E402
from noisystudent.train import train_model  # noqa: E402

SEED, MODEL, LABELED, RATIO, STEPS, REPEATS = 0, "resnet_medium_32", 32, 4, 48, 3


def data() -> tuple[ImageSet, PseudoLabeledSet]:
    generator = torch.Generator().manual_seed(SEED)
    labeled = ImageSet(torch.randint(0, 256, (1000, 1, 32, 32), dtype=torch.uint8, generator=generator),
                       torch.arange(1000) % 10, [str(i) for i in range(1000)], [str(c) for c in range(10)])
    pool = 20_000
    pseudo = PseudoLabeledSet(torch.randint(0, 256, (pool, 1, 32, 32), dtype=torch.uint8, generator=generator),
                              torch.rand(pool, 10, generator=generator).argsort(1), torch.full((pool, 10), 0.1), 10)
    return labeled, pseudo


def model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return build_model(MODEL, 10, 1, dropout=0.5, survival_prob=0.8)


def bare_rate(labeled: ImageSet, pseudo: PseudoLabeledSet) -> float:
    """images/s of forward + backward + SGD step on 8 batches made beforehand, cycled."""
    net = model().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    unlabeled = LABELED * RATIO
    batches = []
    for b in range(8):
        pixels = torch.cat([labeled.images[b * LABELED:(b + 1) * LABELED], pseudo.images[b * unlabeled:(b + 1) * unlabeled]])
        targets = torch.cat([F.one_hot(labeled.labels[b * LABELED:(b + 1) * LABELED], 10).float(),
                             pseudo.targets(torch.arange(b * unlabeled, (b + 1) * unlabeled))])
        batches.append((pixels.float().div(255).contiguous(memory_format=torch.channels_last), targets))
    timings = []
    for step in range(STEPS):
        started = time.perf_counter()
        inputs, targets = batches[step % len(batches)]
        loss = -(targets * F.log_softmax(net(inputs), dim=1)).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # what a bare loop's logging does every step
        timings.append(time.perf_counter() - started)
    return len(batches[0][0]) / statistics.median(timings[4:])


def our_rate(labeled: ImageSet, pseudo: PseudoLabeledSet, augment: bool, prefetch: int, folder: Path) -> float:
    """images/s of train_model's student stage (median of its logged windows but the first)."""
    config = TrainConfig(batch_size=LABELED, unlabeled_ratio=RATIO, lr=0.05, warmup_epochs=0, augment=augment,
                         epochs=STEPS / (len(pseudo) / (LABELED * RATIO)), checkpoint_every=10**6, prefetch=prefetch,
                         label_smoothing=0.0)
    stage = Path(tempfile.mkdtemp(dir=folder))
    train_model(model(), labeled, config, stage, SEED, torch.device("cpu"), pseudo,
                RandAugment(2, 10, pixels="relative") if augment else None, desc="ours")
    windows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(window["images_per_second"] for window in windows[1:])


def main() -> None:
    labeled, pseudo = data()
    settings = {}
    with tempfile.TemporaryDirectory(prefix="noisystudent-loop-") as folder:
        for augment in (False, True):
            for prefetch in (0, 2):
                pairs = [(bare_rate(labeled, pseudo), our_rate(labeled, pseudo, augment, prefetch, Path(folder)))
                         for _ in range(REPEATS)]
                name = f"{'randaugment' if augment else 'no_augmentation'}_prefetch{prefetch}"
                settings[name] = {"bare_images_per_second": [round(b, 1) for b, _ in pairs],
                                  "ours_images_per_second": [round(o, 1) for _, o in pairs],
                                  "ratio": round(statistics.median(o / b for b, o in pairs), 3)}
                print(name, settings[name], flush=True)
    write_result("loop_overhead", {
        "benchmark": "loop_overhead", **environment(), "seed": SEED, "model": MODEL,
        "batch": {"labeled": LABELED, "unlabeled": LABELED * RATIO, "image_size": 32, "channels": 1},
        "steps_per_measurement": STEPS, "repeats": REPEATS, "target_ratio": 0.90, "settings": settings})


if __name__ == "__main__":
    main()
