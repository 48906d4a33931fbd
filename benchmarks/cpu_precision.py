"""bf16 autocast against fp32 on this CPU: our training stage's and our labeling's images/s, side by side.

    python benchmarks/cpu_precision.py            # ~5 min on 2 cores

`precision=auto` trains in bf16 where the CPU has native bf16 units (AVX512-BF16 or AMX) and in
fp32 elsewhere, where oneDNN emulates bf16. This measures what that choice is worth: the demo's
student step (32 labeled + 64 pseudo-labeled 32 px images, RandAugment M=10, dropout, stochastic
depth, SGD: the config's own train_model) for the demo's two architectures, and un-noised labeling
at batch 256. Each measurement alternates fp32 and bf16 three times; the speed-up is the median of
the three paired ratios, so a machine shared with other work slows both sides alike. Writes
benchmarks/results/cpu_precision.json with what the CPU reports of its bf16 units; on a CPU
without them the ratio says how much slower bf16 would be (why auto stays fp32 there).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402
from loop_overhead import data  # noqa: E402

from noisystudent.config import TrainConfig  # noqa: E402
from noisystudent.models import build_model, predict_logits, set_precision  # noqa: E402
from noisystudent.noise import RandAugment  # noqa: E402
from noisystudent.train import train_model  # noqa: E402

SEED, LABELED, RATIO, STEPS, REPEATS, LABEL_IMAGES = 0, 32, 2, 40, 3, 8192
MODELS = ("resnet_small_32", "resnet_medium_32")


def model(name: str) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return build_model(name, 10, 1, dropout=0.5, survival_prob=0.8)


def training_rate(name: str, labeled, pseudo, folder: Path) -> float:
    """images/s of train_model's student stage (median of its logged windows but the first)."""
    config = TrainConfig(batch_size=LABELED, unlabeled_ratio=RATIO, lr=0.05, warmup_epochs=0, epochs=STEPS / (
        len(pseudo) / (LABELED * RATIO)), checkpoint_every=10**6, label_smoothing=0.0)
    stage = Path(tempfile.mkdtemp(dir=folder))
    train_model(model(name), labeled, config, stage, SEED, torch.device("cpu"), pseudo,
                RandAugment(2, 10, pixels="relative"), desc=name)
    windows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(window["images_per_second"] for window in windows[1:])


def labeling_rate(name: str, pseudo) -> float:
    net = model(name)
    predict_logits(net, pseudo.images[:512], 256, torch.device("cpu"))  # warm-up: oneDNN primitive creation
    started = time.perf_counter()
    predict_logits(net, pseudo.images[:LABEL_IMAGES], 256, torch.device("cpu"))
    return LABEL_IMAGES / (time.perf_counter() - started)


def paired(measure) -> dict:
    """fp32 and bf16 alternated REPEATS times; the median of the paired bf16/fp32 ratios."""
    rates = {"fp32": [], "bf16": []}
    for _ in range(REPEATS):
        for precision in rates:
            set_precision(precision)
            rates[precision].append(measure())
    set_precision("auto")
    return {"fp32_images_per_second": [round(r, 1) for r in rates["fp32"]],
            "bf16_images_per_second": [round(r, 1) for r in rates["bf16"]],
            "bf16_speedup": round(statistics.median(b / f for f, b in zip(rates["fp32"], rates["bf16"])), 3)}


def main() -> None:
    labeled, pseudo = data()
    results = {}
    with tempfile.TemporaryDirectory(prefix="noisystudent-precision-") as folder:
        for name in MODELS:
            results[name] = {"training": paired(lambda: training_rate(name, labeled, pseudo, Path(folder))),
                             "labeling": paired(lambda: labeling_rate(name, pseudo))}
            print(name, results[name], flush=True)
    write_result("cpu_precision", {
        "benchmark": "cpu_precision", **environment(), "seed": SEED,
        "cpu_bf16": {"avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx": torch.cpu._is_amx_tile_supported(),
                     "capability": torch.backends.cpu.get_cpu_capability()},
        "batch": {"labeled": LABELED, "unlabeled": LABELED * RATIO, "image_size": 32, "channels": 1,
                  "randaugment": "N=2 M=10 relative", "labeling_batch": 256},
        "steps_per_measurement": STEPS, "repeats": REPEATS, "models": results})


if __name__ == "__main__":
    main()
