"""Teacher inference over the unlabeled pool into a sharded Parquet store.

The teacher runs un-noised: eval mode (dropout and stochastic depth off, BN running
statistics), clean un-augmented images, under inference_mode. The paper found noising the
teacher hurts.

Per image the store keeps: id, argmax, confidence (max softmax probability at T=1, what the
threshold filters on) and `probs`, the training target distribution softmax(logits / T).
Shards are written to a temp file and renamed, then listed in manifest.json; a rerun skips
shards the manifest lists, so a killed labeling job resumes where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..config import LabelConfig
from ..data import ImageSet
from ..io import atomic_write, read_json, write_json
from ..models import predict_logits

MANIFEST = "manifest.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def shard_table(ids: list[str], logits: torch.Tensor, temperature: float) -> pa.Table:
    probs_t1 = logits.softmax(dim=1)
    targets = (logits / temperature).softmax(dim=1).numpy().astype(np.float32)
    confidence, argmax = probs_t1.max(dim=1)
    num_classes = targets.shape[1]
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "argmax": pa.array(argmax.numpy().astype(np.int32)),
        "confidence": pa.array(confidence.numpy().astype(np.float32)),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(targets.reshape(-1)), num_classes),
    })


def pseudo_label(teacher: torch.nn.Module, pool: ImageSet, config: LabelConfig, out_dir: Path,
                 device: torch.device) -> "LabelStore":
    """Label `pool` with `teacher` into `out_dir` (resumable per shard)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.is_file() else {"shards": []}
    committed = {entry["name"] for entry in manifest["shards"]}
    teacher.to(device).to(memory_format=torch.channels_last)
    shard_count = math.ceil(len(pool) / config.shard_size)
    for index in range(shard_count):
        name = shard_name(index)
        if name in committed:
            continue
        rows = range(index * config.shard_size, min(len(pool), (index + 1) * config.shard_size))
        logits = predict_logits(teacher, pool.images[rows.start:rows.stop], config.batch_size, device,
                                desc=f"label {index + 1}/{shard_count}")
        table = shard_table(pool.ids[rows.start:rows.stop], logits, config.temperature)
        atomic_write(out_dir / name, lambda tmp: pq.write_table(table, tmp))
        manifest["shards"].append({"name": name, "count": len(rows)})
        write_json(manifest_path, manifest)
    return LabelStore(out_dir)


@dataclass
class LabelStore:
    root: Path

    def shard_paths(self) -> list[Path]:
        return [self.root / entry["name"] for entry in read_json(self.root / MANIFEST)["shards"]]

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return pa.concat_tables([pq.read_table(path, columns=columns) for path in self.shard_paths()])

    def arrays(self) -> dict[str, np.ndarray]:
        """ids, argmax, confidence, probs [N, K] as numpy (fine for pools that fit in memory)."""
        table = self.read()
        probs = table.column("probs").combine_chunks()
        num_classes = probs.type.list_size
        return {
            "id": np.asarray(table.column("id").to_pylist(), dtype=object),
            "argmax": table.column("argmax").to_numpy(),
            "confidence": table.column("confidence").to_numpy(),
            "probs": probs.flatten().to_numpy().reshape(-1, num_classes),
        }
