"""Filter by confidence, then balance classes: the paper's data selection, streamed over the store.

Paper, section 3: images whose teacher confidence is below 0.3 are dropped; then each class
is brought to the same number of images (130K on ImageNet). Two ways to do the balancing:

  top_confidence  the paper's text. A class with too many keeps its `target` most confident
                  images; a class with too few takes every kept image `target // kept` times and
                  its `target % kept` most confident once more. Exact and deterministic (ties:
                  the earlier store row wins).
  official        the official code (filter_unlabel.py). Per class, histogram the confidences
                  in 0.01 bins; going down from 1.0, the class's threshold is the first bin edge
                  (>= the minimum threshold) with at least `target` images above it, else the
                  minimum threshold. Every image above its class's threshold is written
                  target / available times, rounded at random (seeded), so classes reach
                  `target` in expectation: long classes are subsampled, short ones duplicated.

Both read the store twice, one shard at a time, and never hold the pool: pass 1 counts per class
(and, for top_confidence, a fine confidence histogram per class, which locates each class's
cut-off bin); pass 2 decides each image's multiplicity and writes it. Only images in a class's
cut-off bin are buffered, and only as many as the class still needs.

The output, selection.parquet, has one row per selected image: `store_row`, `id` and
`multiplicity` (how many times it enters the student's training set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..io import atomic_write
from .store import LabelStore

OFFICIAL_EDGES = np.arange(101) / 100  # the official code's thresholds 0.00 .. 1.00
FINE_BINS = 4096
# Fine bins over u = -log(1 - confidence): even spacing in u resolves confident teachers'
# 0.999... region, where bins even in confidence would put most of a class into one bin.
_U_MAX = -math.log(2.0 ** -24)


def confidence_bins(confidence: np.ndarray) -> np.ndarray:
    """Monotone (non-decreasing) bin index in [0, FINE_BINS) for each confidence."""
    u = -np.log1p(-np.minimum(confidence.astype(np.float64), 1 - 2.0 ** -24))
    return np.minimum((u * (FINE_BINS / _U_MAX)).astype(np.int64), FINE_BINS - 1)


SELECTION_FILE = "selection.parquet"
SCHEMA = pa.schema([("store_row", pa.int64()), ("id", pa.string()), ("multiplicity", pa.int32())])


@dataclass
class Plan:
    """Per class, from pass 1: how many it keeps and how pass 2 treats each confidence."""

    available: np.ndarray  # images whose argmax is the class
    kept: np.ndarray  # ... of which confidence >= threshold
    target: int
    base: np.ndarray | None = None  # top_confidence: every kept image's multiplicity
    extra: np.ndarray | None = None  # top_confidence: the most confident `extra` get one more
    cut_bin: np.ndarray | None = None  # top_confidence: the fine bin holding the extra-th most confident
    above_cut: np.ndarray | None = None  # top_confidence: images in bins above cut_bin (all get +1)
    class_threshold: np.ndarray | None = None  # official: per-class threshold
    eligible: np.ndarray | None = None  # official: images at or above the class threshold


def select_from_store(store: LabelStore, out_path: Path, num_classes: int, threshold: float,
                      images_per_class: int | None, mode: str = "top_confidence", seed: int = 0,
                      out_of_domain: OutOfDomain | None = None) -> dict:
    """Write selection.parquet at `out_path`; return stats with per-class counts (and, given an
    out-of-domain threshold, the pool's share above it; images above it are dropped when it says)."""
    plan = plan_selection(store, num_classes, threshold, images_per_class, mode, out_of_domain)
    selected = np.zeros(num_classes, np.int64)
    unique = np.zeros(num_classes, np.int64)

    def write(writer: pq.ParquetWriter, rows: np.ndarray, ids: pa.Array, classes: np.ndarray, copies: np.ndarray):
        chosen = np.flatnonzero(copies > 0)
        if len(chosen):  # ids stay Arrow strings: no Python object per image
            writer.write_table(pa.table({"store_row": rows[chosen], "id": ids.take(pa.array(chosen)),
                                         "multiplicity": copies[chosen].astype(np.int32)}, schema=SCHEMA))
            np.add.at(selected, classes[chosen], copies[chosen])
            np.add.at(unique, classes[chosen], 1)

    def write_all(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            if mode == "official":
                _official_pass(store, plan, threshold, seed, write, writer, out_of_domain)
            else:
                _top_confidence_pass(store, plan, threshold, write, writer, out_of_domain)

    atomic_write(out_path, write_all)
    per_class = [{"class": c, "available": int(plan.available[c]), "kept": int(plan.kept[c]),
                  "dropped_low_confidence": int(plan.available[c] - plan.kept[c]),
                  "dropped_over_target": int(max(0, plan.kept[c] - unique[c])),
                  "duplicated": int(selected[c] - unique[c]), "selected": int(selected[c])}
                 for c in range(num_classes)]
    if plan.class_threshold is not None:
        for entry, value in zip(per_class, plan.class_threshold):
            entry["threshold"] = float(value)
    pool = int(plan.available.sum())
    stats = {"mode": mode, "pool": pool, "kept": int(plan.kept.sum()), "kept_fraction": float(plan.kept.sum() / max(pool, 1)),
             "selected": int(selected.sum()), "unique": int(unique.sum()), "images_per_class": plan.target,
             "per_class": per_class}
    if out_of_domain is not None:
        stats["out_of_domain"] = out_of_domain_stats(store, out_of_domain)
    return stats


def plan_selection(store: LabelStore, num_classes: int, threshold: float, images_per_class: int | None,
                   mode: str, out_of_domain: OutOfDomain | None = None) -> Plan:
    """Pass 1: per-class counts (and histograms) from the argmax and confidence columns only."""
    available = np.zeros(num_classes, np.int64)
    kept = np.zeros(num_classes, np.int64)
    fine = np.zeros((num_classes, FINE_BINS), np.int64) if mode == "top_confidence" else None
    coarse = np.zeros((num_classes, len(OFFICIAL_EDGES)), np.int64) if mode == "official" else None
    for _, _, argmax, confidence in _scan(store, with_ids=False, out_of_domain=out_of_domain):
        _check_classes(argmax, num_classes)
        available += np.bincount(argmax, minlength=num_classes)
        keep = filter_by_confidence(confidence, threshold)
        kept += np.bincount(argmax[keep], minlength=num_classes)
        if fine is not None:
            fine += np.bincount(argmax[keep] * FINE_BINS + confidence_bins(confidence[keep]),
                                minlength=num_classes * FINE_BINS).reshape(num_classes, FINE_BINS)
        else:
            coarse += np.bincount(argmax * len(OFFICIAL_EDGES) + official_bin(confidence),
                                  minlength=coarse.size).reshape(coarse.shape)
    target = images_per_class if images_per_class is not None else max(1, round(int(kept.sum()) / num_classes))
    plan = Plan(available, kept, target)
    if mode == "official":
        plan.class_threshold, plan.eligible = official_thresholds(coarse, threshold, target)
        return plan
    plan.base = np.where(kept >= target, 0, target // np.maximum(kept, 1))
    plan.extra = np.where(kept >= target, target, target % np.maximum(kept, 1))
    # the cut bin: the highest bin b with (images in bins >= b) >= extra; every image above it gets +1
    from_top = np.cumsum(fine[:, ::-1], axis=1)[:, ::-1]  # images in bins >= b
    reaches = from_top >= plan.extra[:, None]
    plan.cut_bin = np.where(plan.extra > 0, FINE_BINS - 1 - np.argmax(reaches[:, ::-1], axis=1), FINE_BINS)
    padded = np.concatenate([from_top, np.zeros((num_classes, 1), np.int64)], axis=1)
    plan.above_cut = padded[np.arange(num_classes), np.minimum(plan.cut_bin + 1, FINE_BINS)]
    return plan


def filter_by_confidence(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """The paper's filter: which images the teacher is confident enough about (max probability
    at or above the threshold) to be kept at all."""
    return confidence >= threshold


def official_bin(confidence: np.ndarray) -> np.ndarray:
    """Index j of the highest edge j/100 <= confidence (the official `prob >= threshold` test)."""
    return np.clip(np.searchsorted(OFFICIAL_EDGES, confidence.astype(np.float64), side="right") - 1, 0, 100)


def official_thresholds(counts: np.ndarray, min_threshold: float, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: the official code's threshold and the number of images at or above it."""
    start = int(round(min_threshold * 100))
    thresholds, eligible = np.empty(len(counts)), np.empty(len(counts), np.int64)
    for c, row in enumerate(counts):
        total, chosen = 0, start
        for j in range(100, start - 1, -1):
            total += int(row[j])
            if total >= target:
                chosen = j
                break
        thresholds[c], eligible[c] = OFFICIAL_EDGES[chosen], total
    return thresholds, eligible


def _scan(store: LabelStore, with_ids: bool = True, out_of_domain: OutOfDomain | None = None):
    """Per shard: (store rows, ids as Arrow strings or None, argmax as int64, confidence). With
    an out-of-domain filter, a dropped image's confidence reads -1, so every later test drops it."""
    drop = out_of_domain is not None and out_of_domain.drop
    columns = ["argmax", "confidence"] + (["id"] if with_ids else []) + (["energy"] if drop else [])
    start = 0
    for table in store.iter_shards(columns):
        argmax = table.column("argmax").to_numpy().astype(np.int64)
        ids = table.column("id").combine_chunks() if with_ids else None
        confidence = table.column("confidence").to_numpy()
        if drop:
            confidence = np.where(table.column("energy").to_numpy() > out_of_domain.max_energy, -1.0,
                                  confidence).astype(np.float32)
        yield np.arange(start, start + len(argmax)), ids, argmax, confidence
        start += len(argmax)


@dataclass(frozen=True)
class OutOfDomain:
    """The out-of-domain score's threshold: the energy at `quantile` of the teacher's energies on
    the labeled images; with `drop`, images above it are not selected."""

    max_energy: float
    quantile: float
    drop: bool


def out_of_domain_stats(store: LabelStore, out_of_domain: OutOfDomain) -> dict:
    """How much of the pool scores above the threshold, and the pool's estimated out-of-domain
    share: if in-domain pool images scored like labeled ones, a share 1 - q of them would be
    above; counting every out-of-domain image as above gives share_above = (1 - p)(1 - q) + p."""
    above = sum(int((table.column("energy").to_numpy() > out_of_domain.max_energy).sum())
                for table in store.iter_shards(["energy"]))
    share = above / max(len(store), 1)
    q = out_of_domain.quantile
    estimate = 0.0 if q >= 1 and share == 0 else min(1.0, max(0.0, (share - (1 - q)) / q))
    return {"score": "energy", "quantile": q, "max_energy": out_of_domain.max_energy, "dropped": out_of_domain.drop,
            "above": above, "share_above": share, "estimated_share": estimate}


def _check_classes(argmax: np.ndarray, num_classes: int) -> None:
    if len(argmax) and (argmax.min() < 0 or argmax.max() >= num_classes):
        raise UserError(f"label store has class {int(argmax.max())}, but the labeled data has {num_classes} classes")


def _official_pass(store, plan: Plan, threshold: float, seed: int, write, writer, out_of_domain) -> None:
    rate = plan.target / np.maximum(plan.eligible, 1)
    for index, (rows, ids, argmax, confidence) in enumerate(_scan(store, out_of_domain=out_of_domain)):
        eligible = filter_by_confidence(confidence, threshold) & (official_bin(confidence) >= np.rint(plan.class_threshold[argmax] * 100))
        # one generator per shard: the draws do not depend on how many shards came before
        uniform = np.random.default_rng([seed, index]).random(len(argmax))
        whole = np.floor(rate[argmax]).astype(np.int64)
        copies = np.where(eligible, whole + (uniform < rate[argmax] - whole), 0)
        write(writer, rows, ids, argmax, copies)


def _top_confidence_pass(store, plan: Plan, threshold: float, write, writer, out_of_domain) -> None:
    still_needed = plan.extra - plan.above_cut  # how many of each class's cut bin get +1
    buffer = {"rows": np.empty(0, np.int64), "classes": np.empty(0, np.int64), "confidence": np.empty(0, np.float32)}
    buffer_ids = pa.array([], pa.string())
    for rows, ids, argmax, confidence in _scan(store, out_of_domain=out_of_domain):
        keep = filter_by_confidence(confidence, threshold)
        bins = confidence_bins(confidence)
        in_cut = keep & (bins == plan.cut_bin[argmax])
        copies = np.where(keep & ~in_cut, plan.base[argmax] + (bins > plan.cut_bin[argmax]), 0)
        write(writer, rows, ids, argmax, copies)
        merged = {"rows": np.concatenate([buffer["rows"], rows[in_cut]]),
                  "classes": np.concatenate([buffer["classes"], argmax[in_cut]]),
                  "confidence": np.concatenate([buffer["confidence"], confidence[in_cut]])}
        merged_ids = pa.concat_arrays([buffer_ids, ids.filter(pa.array(in_cut))])
        # keep each class's `still_needed` best (confidence desc, then earlier row); the rest are final
        order = np.lexsort((merged["rows"], -merged["confidence"].astype(np.float64), merged["classes"]))
        merged = {key: value[order] for key, value in merged.items()}
        merged_ids = merged_ids.take(pa.array(order))
        rank = np.arange(len(order)) - np.searchsorted(merged["classes"], merged["classes"], side="left")
        wins = rank < still_needed[merged["classes"]]
        losers = merged["classes"][~wins]
        write(writer, merged["rows"][~wins], merged_ids.filter(pa.array(~wins)), losers, plan.base[losers])
        buffer = {key: value[wins] for key, value in merged.items()}
        buffer_ids = merged_ids.filter(pa.array(wins))
    write(writer, buffer["rows"], buffer_ids, buffer["classes"], plan.base[buffer["classes"]] + 1)


def read_selection(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(store rows, multiplicities) of a selection.parquet, in store-row order."""
    table = pq.read_table(path, columns=["store_row", "multiplicity"])
    rows, copies = table.column("store_row").to_numpy(), table.column("multiplicity").to_numpy()
    order = np.argsort(rows, kind="stable")
    return rows[order], copies[order]
