"""Teacher inference over the unlabeled pool into a sharded, resumable Parquet store.

The teacher runs un-noised: eval mode (dropout and stochastic depth off, BN running
statistics), clean un-augmented images, under inference_mode. The paper found noising the
teacher hurts.

Per image the store keeps: id, argmax, confidence (max softmax probability at T=1, what the
threshold filters on), energy (-logsumexp of the logits), ood_score (`labels.ood_score`, higher =
more out of domain: labels/ood.py) and the training target softmax(logits / T) as its top-k
classes: `topk_ids` (int32) and `topk_probs` (float16), k = every class up to 100 classes, else
`labels.top_k`. That is 6k + 16 bytes per image plus the id, against 4,000 for the official code's fp32 vector
over 1,000 classes (520 GB at 130M images). Soft targets are rebuilt from top-k and
renormalized to sum to 1 (`LabelStore.topk`); the mass outside the top-k is dropped.

Layout of a store directory:
    header.json         format, teacher hash, k, T, shard size, the out-of-domain score, the pool's
                        identity: what the shards were made with
    shard-00000.parquet one per chunk of `labels.shard_size` pool items, in pool order; items that
                        do not decode are left out and listed in the shard's metadata with the reason
    reference_scores.npy  the out-of-domain scores of the held-out reference (labeled images no model
                        trained on; data.reference_fraction), what the selection reads them against
    manifest.json       written last, when every shard exists: the header, per shard its count, items
                        read and undecodable files; totals; k

Format 2 added ood_score and the reference; a format-1 store (no `format` in its header) is
refused with that reason, since its selection would have no reference to read scores against.

The pool is decoded and predicted one batch at a time, so labeling holds one batch of pixels
and one shard of predictions, whatever the pool's size. More than `data.max_bad_fraction`
undecodable items stops the stage before the manifest (the shards stay: a rerun is instant).

A shard is committed by temp file + fsync + rename, so a killed job leaves whole shards only;
a rerun skips shards that exist and, once manifest.json exists, does nothing. Shards and
manifest are deterministic, so a killed-and-resumed store is byte-identical to a straight one.
Under torchrun every rank reads the pool's item list and decodes and labels the shards with
index % world_size == rank.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ..config import LabelConfig
from ..data import ImageSet, Pool
from ..data.shards import DAMAGED_SHARD
from ..distributed import SINGLE, Distributed
from ..errors import UserError
from ..io import atomic_write, changed_keys, exclusive_lock, lookup, read_json, remove_stale_temps, write_json
from ..models import check_model_fits, exported_weights_file, inference, load_exported, noised_inference, to_model_input
from ..noise import StudentNoise
from .ood import OodScore, fit_ood_score, fit_on_images, model_views, score_images

HEADER, MANIFEST, REFERENCE_SCORES = "header.json", "manifest.json", "reference_scores.npy"
STORE_FORMAT = 2  # 2: the ood_score column and reference_scores.npy
TARGET_FILES = ("targets-ids.npy", "targets-probs.npy")  # LabelStore.topk's memory-mapped targets
SHARD_INFO = "noisystudent"  # Parquet schema metadata key: items read and undecodable files
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


def energy(logits: torch.Tensor) -> torch.Tensor:
    """The out-of-domain score: -logsumexp(logits), high where no class has a large logit (Liu et
    al. 2020, "Energy-based out-of-distribution detection"); at T=1, from the teacher alone."""
    return -torch.logsumexp(logits.float(), dim=1)


def shard_table(ids: list[str], logits: torch.Tensor, temperature: float, top_k: int,
                ood_scores: torch.Tensor | None = None) -> pa.Table:
    """One shard's columns; `ood_scores` are the fitted out-of-domain score's, None: the energy
    (a score that needs nothing fit)."""
    confidence, argmax = logits.softmax(dim=1).max(dim=1)
    top_probs, top_ids = (logits / temperature).softmax(dim=1).topk(top_k, dim=1)  # sorted, most probable first
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "argmax": pa.array(argmax.numpy().astype(np.int32)),
        "confidence": pa.array(confidence.numpy().astype(np.float32)),
        "energy": pa.array(energy(logits).numpy().astype(np.float32)),
        "ood_score": pa.array((energy(logits) if ood_scores is None else ood_scores).numpy().astype(np.float32)),
        "topk_ids": pa.FixedSizeListArray.from_arrays(pa.array(top_ids.numpy().astype(np.int32).reshape(-1)), top_k),
        "topk_probs": pa.FixedSizeListArray.from_arrays(
            pa.array(top_probs.numpy().astype(np.float16).reshape(-1), pa.float16()), top_k),
    })


def pseudo_label(teacher: torch.nn.Module, pool: Pool, config: LabelConfig, out_dir: Path, device: torch.device,
                 teacher_hash: str = "", distributed: Distributed = SINGLE,
                 noise: StudentNoise | None = None, labeled: ImageSet | None = None,
                 reference: ImageSet | None = None) -> "LabelStore":
    """Label `pool` with `teacher` into `out_dir`: one shard per chunk of `labels.shard_size` pool
    items, decoded and predicted a batch at a time (resumable per shard, shared across ranks).
    `noise` (never in a real run: the paper's noised-teacher ablation) labels with the teacher's
    dropout and stochastic depth on (the caller built it with them) and its RandAugment on the
    inputs.

    The out-of-domain score is `labels.ood_score`, fit on the teacher's `labeled` images (the ones
    it trained on); without them (stand-in teachers: plan's probe, benchmarks of throughput) it is
    the energy, which needs nothing fit, and the header says so. `reference` (held-out labeled
    images) is scored into reference_scores.npy, what the selection reads the pool's scores against;
    feature_ensemble's two parts are also standardized on it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = LabelStore(out_dir)
    score = fit_on_images(config.ood_score, teacher, labeled.images, labeled.labels, config.batch_size, device,
                          None if reference is None else reference.images) \
        if labeled is not None else fit_ood_score("energy")
    header = {"format": STORE_FORMAT, "teacher_sha256": teacher_hash, "temperature": config.temperature,
              "top_k": config.top_k, "shard_size": config.shard_size, "ood_score": score.name, "pool": pool.identity}
    if noise is not None:  # a noised store is never mistaken for a clean one
        augment = noise.randaugment
        header["noised"] = {"dropout": noise.dropout, "survival_prob": noise.survival_prob, "randaugment": None if
                            augment is None else {"layers": augment.layers, "magnitude": augment.magnitude,
                                                  "pixels": augment.pixels, "ops": list(augment.ops)}}
    check_store_header(out_dir, header)  # finished or not: a store is only reused by what made it
    if (out_dir / MANIFEST).is_file():
        return store
    with exclusive_lock(out_dir) if distributed.is_main else contextlib.nullcontext():  # one command at a time
        check_store_header(out_dir, header)  # again: another may have begun it before this one held it
        _label_shards(teacher, pool, config, out_dir, device, header, distributed, noise, score, reference)
    return store


def _label_shards(teacher: torch.nn.Module, pool: Pool, config: LabelConfig, out_dir: Path, device: torch.device,
                  header: dict, distributed: Distributed, noise: StudentNoise | None, score: OodScore,
                  reference: ImageSet | None) -> None:
    """pseudo_label's work, once its store is checked and held: the missing shards, then the
    reference's scores and the manifest."""
    if distributed.is_main:
        write_json(out_dir / HEADER, header)
        remove_stale_temps(out_dir)  # before any rank writes again
    distributed.barrier()
    progress = tqdm(total=pool.size, desc="label", unit="img", disable=None if distributed.is_main else True)
    shards = 0
    for index, items in pool.chunks(config.shard_size):  # every rank reads every chunk's ids, decodes its own
        shards += 1
        if index % distributed.world_size != distributed.rank or (out_dir / shard_name(index)).is_file():
            progress.update(sum(1 for _ in items))
            continue
        table = label_chunk(teacher, pool, items, config, device, progress, score, noise, index)
        atomic_write(out_dir / shard_name(index), lambda tmp: pq.write_table(table, tmp))
    progress.close()
    distributed.barrier()
    shard_infos = [shard_info(out_dir / shard_name(index)) for index in range(shards)]
    bad = [tuple(entry) for info in shard_infos for entry in info["bad_files"]]
    pool.check_bad_fraction(bad, sum(info["inputs"] for info in shard_infos))  # on every rank: all stop together
    if distributed.is_main:
        if reference is not None:  # before the manifest: a finished store has its reference
            np.save(out_dir / REFERENCE_SCORES, score_images(teacher, reference.images, score, config.batch_size, device))
        write_manifest(out_dir, header, shard_infos)
    distributed.barrier()


def check_store_header(out_dir: Path, header: dict) -> None:
    """Refuse a store (finished or partial) made by another teacher, with other label settings or
    from another pool, naming what differs."""
    if not (out_dir / HEADER).is_file():
        if any(out_dir.glob("shard-*.parquet")):
            raise UserError(f"{out_dir} holds shards but no {HEADER}: it was not written by this version of "
                            f"noisystudent; delete it to relabel")
        return
    recorded = read_json(out_dir / HEADER)
    check_format(out_dir, recorded)
    changed = changed_keys(recorded, header)
    if changed:
        details = "; ".join(f"{key}: {lookup(recorded, key)!r} in the store, {lookup(header, key)!r} now"
                            for key in changed[:4])
        raise UserError(f"{out_dir} was labeled by another teacher, with other settings or from another pool "
                        f"({details}); delete {out_dir} to relabel, or label into a new folder")


def check_format(out_dir: Path, recorded: dict) -> None:
    """Refuse a store of another format (a header or manifest) where its format matters: relabeling
    into it, selecting from it (format 1 has no out-of-domain score or reference). Its targets
    still read."""
    if recorded.get("format", 1) != STORE_FORMAT:
        raise UserError(f"{out_dir} is a label store of format {recorded.get('format', 1)} (before out-of-domain "
                        f"scores and their reference); this version reads format {STORE_FORMAT}: delete {out_dir} "
                        f"to relabel, or label into a new folder")


def label_chunk(teacher: torch.nn.Module, pool: Pool, items, config: LabelConfig, device: torch.device,
                progress: tqdm, score: OodScore, noise: StudentNoise | None = None, index: int = 0) -> pa.Table:
    """One shard's table; its schema metadata records the items read and the undecodable ones.
    With `noise` (pseudo_label), every random draw is seeded by (shard, batch): reproducible."""
    ids, logits, scores, bad, inputs = [], [], [], [], 0
    num_classes = len(pool.classes)
    with (inference if noise is None else noised_inference)(teacher, device):
        for number, batch in enumerate(pool.batches(items, config.batch_size)):
            if batch.ids:
                images = batch.images
                if noise is not None:
                    seed = index * 1_000_003 + number
                    torch.manual_seed(seed)  # the dropout and stochastic-depth masks
                    if noise.randaugment is not None:
                        images = noise.randaugment(images, torch.Generator().manual_seed(seed))
                if score.needs_features:  # one pass gives the logits and what the score reads
                    features, batch_logits, stem = model_views(teacher, to_model_input(images, device),
                                                               score.needs_stem)
                    logits.append(batch_logits.float().cpu())
                    scores.append(score(features.float().cpu(), logits[-1],
                                        None if stem is None else stem.float().cpu()))
                else:
                    logits.append(teacher(to_model_input(images, device)).float().cpu())
                    scores.append(score(None, logits[-1]))
                if logits[-1].shape[1] != num_classes:  # on the first batch, not after a whole shard
                    raise UserError(f"the teacher predicts {logits[-1].shape[1]} classes but the data has "
                                    f"{num_classes} ({', '.join(pool.classes[:5])}...); label with a teacher "
                                    f"trained on these classes")
            ids += batch.ids
            bad += batch.bad
            inputs += batch.inputs
            progress.update(batch.inputs)
    if len(set(ids)) != len(ids):
        raise UserError(f"{pool.where} has repeated image ids (e.g. {Counter(ids).most_common(1)[0][0]!r}); "
                        f"every image needs its own path or key")
    logits = torch.cat(logits) if logits else torch.empty(0, num_classes)
    table = shard_table(ids, logits, config.temperature, top_k_for(num_classes, config),
                        torch.cat(scores) if scores else torch.empty(0))
    info = {"inputs": inputs, "bad_files": [list(entry) for entry in bad]}
    return table.replace_schema_metadata({SHARD_INFO: json.dumps(info)})


def shard_info(path: Path) -> dict:
    """{"count", "inputs", "bad_files": [[id, reason], ...]} of a committed shard."""
    metadata = pq.read_metadata(path)
    return {"count": metadata.num_rows, **json.loads(metadata.metadata[SHARD_INFO.encode()])}


def label_with_weights(weights: Path, pool: Pool, config: LabelConfig, out_dir: Path, device: torch.device,
                       distributed: Distributed = SINGLE, noise: StudentNoise | None = None,
                       labeled: ImageSet | None = None, reference: ImageSet | None = None) -> "LabelStore":
    """pseudo_label with exported weights (a stage folder or its .safetensors), rebuilt without
    noise (dropout 0, stochastic depth off; with `noise`, the noised-teacher ablation's), the
    weights file's hash as the teacher's identity."""
    teacher, teacher_hash = load_labeling_teacher(weights, noise)
    check_model_fits(teacher.spec, pool.classes, pool.channels, weights, "the unlabeled pool's data",
                     "label with a teacher trained on these classes, or give the config of its data (--config)")
    return pseudo_label(teacher, pool, config, out_dir, device, teacher_hash=teacher_hash,
                        distributed=distributed, noise=noise, labeled=labeled, reference=reference)


def load_labeling_teacher(weights: Path, noise: StudentNoise | None = None) -> tuple[torch.nn.Module, str]:
    """The teacher of exported weights (a stage folder or its .safetensors) built for labeling:
    without noise, or with `noise`'s dropout and stochastic depth for the noised-teacher ablation
    (active only in pseudo_label's noised inference; eval mode switches them off). With the
    weights file's hash, the teacher's identity in the store."""
    path = exported_weights_file(weights)
    teacher = load_exported(path) if noise is None else load_exported(path, noise.dropout, noise.survival_prob)
    return teacher, file_sha256(path)


def damaged_shards(manifest: dict) -> list[str]:
    """Why each damaged pool shard stopped: each counts as one undecodable item, yet lost at least
    that many samples, so every command and report names them rather than leave them in a count."""
    return [entry["reason"] for shard in manifest["shards"] for entry in shard["bad_files"]
            if entry["id"].endswith(DAMAGED_SHARD)]


def write_manifest(out_dir: Path, header: dict, shard_infos: list[dict]) -> None:
    """Close a store whose shards all exist: manifest.json lists them with their counts and the
    pool files each one could not decode (the store's commit record)."""
    first = pq.read_schema(out_dir / shard_name(0)) if shard_infos else None
    write_json(out_dir / MANIFEST, {
        **header, "count": sum(info["count"] for info in shard_infos),
        "inputs": sum(info["inputs"] for info in shard_infos),
        "bad_files": sum(len(info["bad_files"]) for info in shard_infos),
        "stored_k": first.field("topk_ids").type.list_size if first else 0,
        "shards": [{"name": shard_name(i), "count": info["count"], "inputs": info["inputs"],
                    "bad_files": [{"id": image_id, "reason": reason} for image_id, reason in info["bad_files"]]}
                   for i, info in enumerate(shard_infos)],
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

    @property
    def reference_scores(self) -> np.ndarray | None:
        """The held-out reference's out-of-domain scores, or None for a store labeled without one."""
        path = self.root / REFERENCE_SCORES
        return np.load(path) if path.is_file() else None

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

    def shard_starts(self) -> np.ndarray:
        """Store row of each shard's first image, then the total: shard s holds rows [starts[s], starts[s+1])."""
        return np.concatenate([[0], np.cumsum([entry["count"] for entry in self.manifest["shards"]])]).astype(np.int64)

    def rows_by_shard(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """For sorted store rows: (shard index, positions in `rows`, rows within the shard), for
        the shards that hold any of them."""
        starts = self.shard_starts()
        bounds = np.searchsorted(rows, starts)
        for shard in range(len(starts) - 1):
            if bounds[shard] < bounds[shard + 1]:
                positions = np.arange(bounds[shard], bounds[shard + 1])
                yield shard, positions, rows[positions] - starts[shard]

    def topk(self, rows: np.ndarray, kind: str, into: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sparse training targets of store rows for a target kind (labels/targets.py), read one
        shard at a time: (class ids int32 [n, k], probabilities float32 [n, k], rows summing to 1).
        With `into`, they are written there once (TARGET_FILES, atomically) and memory-mapped,
        later calls reuse them: the paper's 130M selected images at k = 100 are 104 GB of
        targets, disk rather than memory."""
        from .targets import TARGET_KINDS

        files = None if into is None else [Path(into) / name for name in TARGET_FILES]

        def mapped() -> tuple[np.ndarray, np.ndarray]:  # copy-on-write: torch wants them writable
            return np.load(files[0], mmap_mode="c"), np.load(files[1], mmap_mode="c")

        if files and all(file.is_file() for file in files) and all(len(array) == len(rows) for array in mapped()):
            return mapped()
        target = TARGET_KINDS[kind]
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        stored_k, paths = self.manifest["stored_k"], self.shard_paths()

        def fill(allocate) -> tuple[np.ndarray, np.ndarray]:
            class_ids, probs = None, None
            for shard, positions, local in self.rows_by_shard(sorted_rows):
                table = pq.read_table(paths[shard], columns=list(target.columns)).take(pa.array(local))
                ids, p = target.targets(table, stored_k)
                if class_ids is None:
                    class_ids, probs = allocate(ids.shape[1])
                p = p / np.maximum(p.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)
                class_ids[order[positions]], probs[order[positions]] = ids, p
            return (class_ids, probs) if class_ids is not None else allocate(1)  # no rows

        if files is None:
            return fill(lambda k: (np.zeros((len(rows), k), np.int32), np.zeros((len(rows), k), np.float32)))

        def write(ids_tmp: Path, probs_tmp: Path) -> None:
            def allocate(k: int) -> tuple[np.ndarray, np.ndarray]:
                return (np.lib.format.open_memmap(ids_tmp, "w+", np.int32, (len(rows), k)),
                        np.lib.format.open_memmap(probs_tmp, "w+", np.float32, (len(rows), k)))
            for array in fill(allocate):
                array.flush()

        atomic_write(files[0], lambda ids_tmp: atomic_write(files[1], lambda probs_tmp: write(ids_tmp, probs_tmp)))
        return mapped()
