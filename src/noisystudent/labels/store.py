"""Teacher inference over the unlabeled pool into a sharded, resumable Parquet store.

The teacher runs un-noised: eval mode (dropout and stochastic depth off, BN running
statistics), clean un-augmented images, under inference_mode. The paper found noising the
teacher hurts.

Per image the store keeps: id, argmax, confidence (max softmax probability at T=1, what the
threshold filters on) and the training target softmax(logits / T) as its top-k classes: `topk_ids`
(int32) and `topk_probs` (float16), k = every class up to 100 classes, else `labels.top_k`.
That is 6k + 8 bytes per image plus the id, against 4,000 for the official code's fp32 vector
over 1,000 classes (520 GB at 130M images). Soft targets are rebuilt from top-k and
renormalized to sum to 1 (`targets_from_topk`); the mass outside the top-k is dropped.

Layout of a store directory:
    header.json         teacher hash, k, T, shard size, pool size: what the shards were made with
    shard-00000.parquet one per `labels.shard_size` images, in pool order
    manifest.json       written last, when every shard exists: the header, shards, counts, k,
                        and the pool's undecodable files with the reason

A shard is committed by temp file + fsync + rename, so a killed job leaves whole shards only;
a rerun skips shards that exist and, once manifest.json exists, does nothing. Shards and
manifest are deterministic, so a killed-and-resumed store is byte-identical to a straight one.
Under torchrun every rank labels the shards with index % world_size == rank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from ..config import LabelConfig
from ..data import ImageSet
from ..distributed import SINGLE, Distributed
from ..errors import UserError
from ..io import atomic_write, read_json, remove_stale_temps, write_json
from ..models import predict_logits
from ..train import exported_weights_file, load_exported

HEADER, MANIFEST = "header.json", "manifest.json"
ALL_CLASSES_UP_TO = 100  # below this many classes the full distribution is cheap enough to keep


def top_k_for(num_classes: int, config: LabelConfig) -> int:
    return num_classes if num_classes <= ALL_CLASSES_UP_TO else min(config.top_k, num_classes)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_table(ids: list[str], logits: torch.Tensor, temperature: float, top_k: int) -> pa.Table:
    confidence, argmax = logits.softmax(dim=1).max(dim=1)
    top_probs, top_ids = (logits / temperature).softmax(dim=1).topk(top_k, dim=1)  # sorted, most probable first
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "argmax": pa.array(argmax.numpy().astype(np.int32)),
        "confidence": pa.array(confidence.numpy().astype(np.float32)),
        "topk_ids": pa.FixedSizeListArray.from_arrays(pa.array(top_ids.numpy().astype(np.int32).reshape(-1)), top_k),
        "topk_probs": pa.FixedSizeListArray.from_arrays(
            pa.array(top_probs.numpy().astype(np.float16).reshape(-1), pa.float16()), top_k),
    })


def pseudo_label(teacher: torch.nn.Module, pool: ImageSet, config: LabelConfig, out_dir: Path, device: torch.device,
                 teacher_hash: str = "", distributed: Distributed = SINGLE) -> "LabelStore":
    """Label `pool` with `teacher` into `out_dir` (resumable per shard, shared across ranks)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = LabelStore(out_dir)
    if (out_dir / MANIFEST).is_file():
        return store
    shards = [range(start, min(len(pool), start + config.shard_size)) for start in range(0, len(pool), config.shard_size)]
    header = {"teacher_sha256": teacher_hash, "temperature": config.temperature, "top_k": config.top_k,
              "shard_size": config.shard_size,
              "pool": len(pool), "first_id": pool.ids[0] if len(pool) else None,
              "last_id": pool.ids[-1] if len(pool) else None}
    if distributed.is_main:
        if (out_dir / HEADER).is_file() and read_json(out_dir / HEADER) != header:
            raise UserError(f"{out_dir} holds shards labeled with other settings or another teacher "
                            f"({read_json(out_dir / HEADER)}, now {header}); delete the directory to relabel")
        write_json(out_dir / HEADER, header)
        remove_stale_temps(out_dir)  # before any rank writes again
    distributed.barrier()
    teacher.to(device).to(memory_format=torch.channels_last)
    for index in range(distributed.rank, len(shards), distributed.world_size):
        if (out_dir / shard_name(index)).is_file():
            continue
        rows = shards[index]
        logits = predict_logits(teacher, pool.images[rows.start:rows.stop], config.batch_size, device,
                                desc=f"label {index + 1}/{len(shards)}")
        table = shard_table(pool.ids[rows.start:rows.stop], logits, config.temperature,
                            top_k_for(logits.shape[1], config))
        atomic_write(out_dir / shard_name(index), lambda tmp: pq.write_table(table, tmp))
    distributed.barrier()
    if distributed.is_main:
        write_manifest(out_dir, header, [len(rows) for rows in shards], pool.skipped)
    distributed.barrier()
    return store


def label_with_weights(weights: Path, pool: ImageSet, config: LabelConfig, out_dir: Path, device: torch.device,
                       distributed: Distributed = SINGLE) -> "LabelStore":
    """pseudo_label with exported weights (a stage folder or its .safetensors), rebuilt without
    noise (dropout 0, stochastic depth off), the weights file's hash as the teacher's identity."""
    path = exported_weights_file(weights)
    return pseudo_label(load_exported(path), pool, config, out_dir, device, teacher_hash=file_sha256(path),
                        distributed=distributed)


def write_manifest(out_dir: Path, header: dict, shard_counts: list[int], bad_files: list | None = None) -> None:
    """Close a store whose shards all exist: manifest.json lists them (the store's commit record)
    and the pool's files that could not be decoded, with the reason."""
    first = pq.read_schema(out_dir / shard_name(0)) if shard_counts else None
    write_json(out_dir / MANIFEST, {
        **header, "count": sum(shard_counts), "stored_k": first.field("topk_ids").type.list_size if first else 0,
        "shards": [{"name": shard_name(i), "count": count} for i, count in enumerate(shard_counts)],
        "bad_files": [{"id": image_id, "reason": reason} for image_id, reason in bad_files or []],
    })


@dataclass
class LabelStore:
    root: Path

    @property
    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.is_file():
            raise UserError(f"{self.root} is not a finished label store (no {MANIFEST}); rerun the command to finish it")
        return read_json(path)

    def __len__(self) -> int:
        return self.manifest["count"]

    def shard_paths(self) -> list[Path]:
        return [self.root / entry["name"] for entry in self.manifest["shards"]]

    def iter_shards(self, columns: list[str]) -> Iterator[pa.Table]:
        """One shard at a time: memory bounded by the shard size, not the pool."""
        for path in self.shard_paths():
            yield pq.read_table(path, columns=columns)

    def column(self, name: str) -> np.ndarray:
        """One scalar column over the whole store (4 bytes per image for argmax / confidence)."""
        return np.concatenate([table.column(name).to_numpy() for table in self.iter_shards([name])])

    def ids(self) -> np.ndarray:
        return np.concatenate([np.asarray(t.column("id").to_pylist(), dtype=object) for t in self.iter_shards(["id"])])

    def targets(self, rows: np.ndarray, num_classes: int, kind: str) -> torch.Tensor:
        """Training targets [len(rows), num_classes] for store rows (soft from top-k, or hard)."""
        if kind == "hard":
            return F.one_hot(torch.from_numpy(self.column("argmax")[rows].astype(np.int64)), num_classes).float()
        ids, probs = [], []
        for table in self.iter_shards(["topk_ids", "topk_probs"]):
            k = table.schema.field("topk_ids").type.list_size
            ids.append(table.column("topk_ids").combine_chunks().flatten().to_numpy().reshape(-1, k))
            probs.append(table.column("topk_probs").combine_chunks().flatten().to_numpy().reshape(-1, k))
        return targets_from_topk(np.concatenate(ids)[rows], np.concatenate(probs)[rows], num_classes)


def targets_from_topk(top_ids: np.ndarray, top_probs: np.ndarray, num_classes: int) -> torch.Tensor:
    """Dense soft targets from top-k: the k stored probabilities renormalized to sum to 1."""
    probs = torch.from_numpy(np.ascontiguousarray(top_probs, dtype=np.float32))
    probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    dense = torch.zeros(len(probs), num_classes)
    return dense.scatter_(1, torch.from_numpy(np.ascontiguousarray(top_ids, dtype=np.int64)), probs)
