"""Soft targets at 1000 classes: what storing only the teacher's top-k (renormalized) changes
against the official full probability vector, and what each k costs in bytes per image.

    python benchmarks/topk_targets.py            # ~1 min on 2 cores

A synthetic teacher over 1000 classes: per image, logits N(0, 1) x a spread drawn uniformly
from [1, 7] plus a margin on a random class, so confidences cover 0.01 to 0.99 as a real
teacher's do. For each k: the probability mass outside the top-k, overall and per confidence
bin (what renormalizing moves onto the top-k: the L1 distance between the two targets is twice
it, and so is the L1 distance between the two loss gradients w.r.t. the logits); and the
cross-entropy gap |CE(full, student) - CE(top-k, student)| for a student that is the teacher
plus N(0, 1) logit noise. Only images above the 0.3 confidence threshold reach the student,
so the choice is made on those. Bytes per image are of a label-store shard written as
`noisystudent label` writes it (parquet, top-k int32 ids, float16 probabilities).
Writes benchmarks/results/topk_targets.json.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import environment, write_result  # noqa: E402

from noisystudent.labels.store import shard_table  # noqa: E402

SEED, CLASSES, IMAGES, THRESHOLD = 0, 1000, 20_000, 0.3
KS = (1, 3, 5, 10, 20, 50, 100, CLASSES)
BINS = ((0.0, 0.3), (0.3, 0.5), (0.5, 0.9), (0.9, 1.01))


def teacher_logits(generator: torch.Generator) -> torch.Tensor:
    spread = torch.rand(IMAGES, 1, generator=generator) * 6 + 1
    logits = torch.randn(IMAGES, CLASSES, generator=generator) * spread
    top = torch.randint(0, CLASSES, (IMAGES,), generator=generator)
    logits[torch.arange(IMAGES), top] += torch.rand(IMAGES, generator=generator) * 12
    return logits


def topk_targets(probs: torch.Tensor, k: int) -> torch.Tensor:
    values, ids = probs.topk(k, dim=1)
    return torch.zeros_like(probs).scatter_(1, ids, values / values.sum(1, keepdim=True))


def bytes_per_image(logits: torch.Tensor, k: int) -> float:
    rows = 5000
    table = shard_table([f"train/{i:08d}.jpg" for i in range(rows)], logits[:rows], 1.0, k)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.tell() / rows


def main() -> None:
    generator = torch.Generator().manual_seed(SEED)
    logits = teacher_logits(generator)
    probs = logits.softmax(1)
    confidence = probs.max(1).values
    kept = confidence >= THRESHOLD
    student_log_probs = (logits + torch.randn(IMAGES, CLASSES, generator=generator)).log_softmax(1)
    full_loss = -(probs * student_log_probs).sum(1)
    rows = {}
    for k in KS:
        targets = topk_targets(probs, k)
        outside = (1 - probs.topk(k, dim=1).values.sum(1)).clamp(min=0)  # float rounding can dip below 0
        gap = ((-(targets * student_log_probs).sum(1)) - full_loss).abs()
        rows[str(k)] = {
            "mass_outside_mean": round(outside.mean().item(), 5),
            "mass_outside_mean_above_threshold": round(outside[kept].mean().item(), 5),
            "mass_outside_p95_above_threshold": round(outside[kept].quantile(0.95).item(), 5),
            "mass_outside_by_confidence": {f"{low:.1f}-{min(high, 1.0):.1f}": round(
                outside[(confidence >= low) & (confidence < high)].mean().item(), 5) for low, high in BINS},
            "loss_gap_mean_above_threshold": round(gap[kept].mean().item(), 5),
            "loss_gap_relative_above_threshold": round((gap[kept] / full_loss[kept]).mean().item(), 5),
            "store_bytes_per_image": round(bytes_per_image(logits, k), 1)}
        print(k, rows[str(k)], flush=True)
    write_result("topk_targets", {
        "benchmark": "topk_targets", **environment(), "seed": SEED, "classes": CLASSES, "images": IMAGES,
        "threshold": THRESHOLD, "kept_fraction": round(kept.float().mean().item(), 4),
        "confidence_quartiles": [round(q, 4) for q in confidence.quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()],
        "official_full_vector_fp32_bytes": 4 * CLASSES, "top_k": rows})


if __name__ == "__main__":
    main()
