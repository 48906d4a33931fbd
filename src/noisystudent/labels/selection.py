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

Out of domain (beyond the paper; labels/ood.py): each image's stored score is read against the
held-out reference's. Images above the reference's `quantile` are flagged, listed in
out_of_domain.csv beside selection.parquet, and, with `drop`, not selected. The stats estimate
the pool's out-of-domain share, and per class the share of the balanced selection's copies that
are suspect (flagged) and its estimated out-of-domain share: balancing duplicates a class's few
images, and where those are out-of-domain images they can make up most of a class's copies.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..io import atomic_write
from .ood import ESTIMATE_QUANTILE, estimate_share
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
FLAGGED_FILE = "out_of_domain.csv"  # beside selection.parquet: the flagged images' ids and scores
FLAG_QUANTILE = 0.95  # without a filter, images above this quantile of the reference are flagged
MOSTLY_SUSPECT = 0.5  # a class whose selected copies are more than this share flagged gets a warning
SCHEMA = pa.schema([("store_row", pa.int64()), ("id", pa.string()), ("multiplicity", pa.int32())])


@dataclass
class Plan:
    """Per class, from pass 1: how many it keeps and how pass 2 treats each confidence."""

    available: np.ndarray  # images whose argmax is the class
    kept: np.ndarray  # ... of which confidence >= threshold (and not dropped as out of domain)
    out_of_domain: np.ndarray  # ... dropped as out of domain (counted before the confidence test)
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
    copies_of = CopyScores(num_classes, out_of_domain)

    def write(writer: pq.ParquetWriter, rows: np.ndarray, ids: pa.Array, classes: np.ndarray, copies: np.ndarray,
              scores: np.ndarray | None):
        chosen = np.flatnonzero(copies > 0)
        if len(chosen):  # ids stay Arrow strings: no Python object per image
            writer.write_table(pa.table({"store_row": rows[chosen], "id": ids.take(pa.array(chosen)),
                                         "multiplicity": copies[chosen].astype(np.int32)}, schema=SCHEMA))
            np.add.at(selected, classes[chosen], copies[chosen])
            np.add.at(unique, classes[chosen], 1)
            if scores is not None:
                copies_of.add(classes[chosen], copies[chosen], scores[chosen])

    def write_all(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            if mode == "official":
                _official_pass(store, plan, threshold, seed, write, writer, out_of_domain)
            else:
                _top_confidence_pass(store, plan, threshold, write, writer, out_of_domain)

    atomic_write(out_path, write_all)
    per_class = [{"class": c, "available": int(plan.available[c]), "kept": int(plan.kept[c]),
                  "dropped_out_of_domain": int(plan.out_of_domain[c]),
                  "dropped_low_confidence": int(plan.available[c] - plan.kept[c] - plan.out_of_domain[c]),
                  "dropped_over_target": int(max(0, plan.kept[c] - unique[c])),
                  "duplicated": int(selected[c] - unique[c]), "selected": int(selected[c])}
                 for c in range(num_classes)]
    if plan.class_threshold is not None:
        for entry, value in zip(per_class, plan.class_threshold):
            entry["threshold"] = float(value)
    pool = int(plan.available.sum())
    stats = {"mode": mode, "pool": pool, "kept": int(plan.kept.sum()), "kept_fraction": float(plan.kept.sum() / max(pool, 1)),
             "dropped_out_of_domain": int(plan.out_of_domain.sum()),
             "dropped_low_confidence": int((plan.available - plan.kept - plan.out_of_domain).sum()),
             "selected": int(selected.sum()), "unique": int(unique.sum()), "images_per_class": plan.target,
             "per_class": per_class, "warnings": []}
    if out_of_domain is not None:
        stats["out_of_domain"] = out_of_domain_stats(store, out_of_domain, out_path.parent / FLAGGED_FILE)
        for entry, class_stats in zip(per_class, copies_of.per_class()):
            entry.update(class_stats)
            if class_stats["suspect_share"] is not None and class_stats["suspect_share"] > MOSTLY_SUSPECT:
                stats["warnings"].append(
                    f"class {entry['class']}: {class_stats['suspect_share']:.0%} of its {entry['selected']} selected "
                    f"copies score out of domain (above the reference's {out_of_domain.quantile} quantile); its "
                    f"pseudo labels are mostly of images the teacher does not know (ids in {FLAGGED_FILE})")
    return stats


def plan_selection(store: LabelStore, num_classes: int, threshold: float, images_per_class: int | None,
                   mode: str, out_of_domain: OutOfDomain | None = None) -> Plan:
    """Pass 1: per-class counts (and histograms) from the argmax and confidence columns only."""
    available = np.zeros(num_classes, np.int64)
    kept = np.zeros(num_classes, np.int64)
    dropped_out = np.zeros(num_classes, np.int64)
    fine = np.zeros((num_classes, FINE_BINS), np.int64) if mode == "top_confidence" else None
    coarse = np.zeros((num_classes, len(OFFICIAL_EDGES)), np.int64) if mode == "official" else None
    for _, _, argmax, confidence, scores in _scan(store, with_ids=False, out_of_domain=out_of_domain):
        _check_classes(argmax, num_classes)
        available += np.bincount(argmax, minlength=num_classes)
        if out_of_domain is not None and out_of_domain.drop:
            dropped_out += np.bincount(argmax[scores > out_of_domain.threshold], minlength=num_classes)
        keep = filter_by_confidence(confidence, threshold)
        kept += np.bincount(argmax[keep], minlength=num_classes)
        if fine is not None:
            fine += np.bincount(argmax[keep] * FINE_BINS + confidence_bins(confidence[keep]),
                                minlength=num_classes * FINE_BINS).reshape(num_classes, FINE_BINS)
        else:
            coarse += np.bincount(argmax * len(OFFICIAL_EDGES) + official_bin(confidence),
                                  minlength=coarse.size).reshape(coarse.shape)
    target = images_per_class if images_per_class is not None else max(1, round(int(kept.sum()) / num_classes))
    plan = Plan(available, kept, dropped_out, target)
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
    """Per shard: (store rows, ids as Arrow strings or None, argmax as int64, confidence,
    out-of-domain scores or None). With an out-of-domain filter, a dropped image's confidence
    reads -1, so every later test drops it."""
    columns = ["argmax", "confidence"] + (["id"] if with_ids else []) + (["ood_score"] if out_of_domain else [])
    start = 0
    for table in store.iter_shards(columns):
        argmax = table.column("argmax").to_numpy().astype(np.int64)
        ids = table.column("id").combine_chunks() if with_ids else None
        confidence = table.column("confidence").to_numpy()
        scores = table.column("ood_score").to_numpy() if out_of_domain else None
        if out_of_domain is not None and out_of_domain.drop:
            confidence = np.where(scores > out_of_domain.threshold, -1.0, confidence).astype(np.float32)
        yield np.arange(start, start + len(argmax)), ids, argmax, confidence, scores
        start += len(argmax)


@dataclass(frozen=True, eq=False)
class OutOfDomain:
    """The pool's out-of-domain scores read against the held-out reference's (`reference`, the
    label store's reference_scores.npy): images above the reference's `quantile` are flagged and,
    with `drop`, not selected."""

    reference: np.ndarray
    quantile: float
    drop: bool
    score: str
    threshold: float = field(init=False)
    cut: float = field(init=False)  # the share estimate's cut (labels/ood.py, estimate_share)

    def __post_init__(self):
        object.__setattr__(self, "threshold", float(np.quantile(self.reference, self.quantile)))
        object.__setattr__(self, "cut", float(np.quantile(self.reference, ESTIMATE_QUANTILE)))


class CopyScores:
    """Per class, over the selected copies: how many, how many flagged, how many at or below the
    estimate's cut, and the sum of squared multiplicities (copies of one image are one
    observation: the estimate's effective count is (sum w)^2 / sum w^2)."""

    def __init__(self, num_classes: int, out_of_domain: OutOfDomain | None):
        self.out_of_domain = out_of_domain
        self.copies, self.flagged, self.below, self.squares = (np.zeros(num_classes) for _ in range(4))

    def add(self, classes: np.ndarray, copies: np.ndarray, scores: np.ndarray) -> None:
        ood = self.out_of_domain
        for total, weights in ((self.copies, copies), (self.flagged, copies * (scores > ood.threshold)),
                               (self.below, copies * (scores <= ood.cut)), (self.squares, copies.astype(np.float64) ** 2)):
            np.add.at(total, classes, weights)

    def per_class(self) -> list[dict]:
        ood = self.out_of_domain
        # a filter leaves only images at or below its threshold: in-domain ones as the reference is there
        reference = ood.reference[ood.reference <= ood.threshold] if ood.drop else ood.reference
        result = []
        for copies, flagged, below, squares in zip(self.copies, self.flagged, self.below, self.squares):
            estimate = estimate_share(below / copies, copies ** 2 / squares, reference, ood.cut) if copies else \
                {"estimated_share": None, "interval": None}
            result.append({"suspect_copies": int(flagged), "suspect_share": float(flagged / copies) if copies else None,
                           "estimated_ood_share": estimate["estimated_share"], "estimated_ood_interval": estimate["interval"]})
        return result


def out_of_domain_stats(store: LabelStore, out_of_domain: OutOfDomain, flagged_path: Path) -> dict:
    """The pool's estimated out-of-domain share (labels/ood.py, estimate_share) and how much of it
    scores above the threshold; the flagged images (id, predicted class, confidence, score,
    whether the filter dropped them) written to `flagged_path` for a user to open."""
    above = below = 0

    def write_flagged(tmp: Path) -> None:
        nonlocal above, below
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "predicted_class", "confidence", "ood_score", "dropped"])
            for table in store.iter_shards(["id", "argmax", "confidence", "ood_score"]):
                scores = table.column("ood_score").to_numpy()
                flagged = np.flatnonzero(scores > out_of_domain.threshold)
                above += len(flagged)
                below += int((scores <= out_of_domain.cut).sum())
                columns = [table.column(name).take(pa.array(flagged)).to_pylist()
                           for name in ("id", "argmax", "confidence", "ood_score")]
                writer.writerows([image_id, cls, f"{conf:.4f}", f"{score:.4f}", int(out_of_domain.drop)]
                                 for image_id, cls, conf, score in zip(*columns))

    atomic_write(flagged_path, write_flagged)
    size = len(store)
    return {"score": out_of_domain.score, "reference_images": len(out_of_domain.reference),
            "quantile": out_of_domain.quantile, "threshold": out_of_domain.threshold, "dropped": out_of_domain.drop,
            "above": above, "share_above": above / max(size, 1), "estimate_cut_quantile": ESTIMATE_QUANTILE,
            **estimate_share(below / max(size, 1), size, out_of_domain.reference, out_of_domain.cut),
            "flagged_file": FLAGGED_FILE}


def _check_classes(argmax: np.ndarray, num_classes: int) -> None:
    if len(argmax) and (argmax.min() < 0 or argmax.max() >= num_classes):
        raise UserError(f"label store has class {int(argmax.max())}, but the labeled data has {num_classes} classes")


def _official_pass(store, plan: Plan, threshold: float, seed: int, write, writer, out_of_domain) -> None:
    rate = plan.target / np.maximum(plan.eligible, 1)
    for index, (rows, ids, argmax, confidence, scores) in enumerate(_scan(store, out_of_domain=out_of_domain)):
        eligible = filter_by_confidence(confidence, threshold) & (official_bin(confidence) >= np.rint(plan.class_threshold[argmax] * 100))
        # one generator per shard: the draws do not depend on how many shards came before
        uniform = np.random.default_rng([seed, index]).random(len(argmax))
        whole = np.floor(rate[argmax]).astype(np.int64)
        copies = np.where(eligible, whole + (uniform < rate[argmax] - whole), 0)
        write(writer, rows, ids, argmax, copies, scores)


def _top_confidence_pass(store, plan: Plan, threshold: float, write, writer, out_of_domain) -> None:
    still_needed = plan.extra - plan.above_cut  # how many of each class's cut bin get +1
    # the cut bin's candidates, carried from shard to shard (scores: zeros when there are none)
    buffer = {"rows": np.empty(0, np.int64), "classes": np.empty(0, np.int64), "confidence": np.empty(0, np.float32),
              "scores": np.empty(0, np.float32)}
    buffer_ids = pa.array([], pa.string())
    for rows, ids, argmax, confidence, scores in _scan(store, out_of_domain=out_of_domain):
        keep = filter_by_confidence(confidence, threshold)
        bins = confidence_bins(confidence)
        in_cut = keep & (bins == plan.cut_bin[argmax])
        copies = np.where(keep & ~in_cut, plan.base[argmax] + (bins > plan.cut_bin[argmax]), 0)
        write(writer, rows, ids, argmax, copies, scores)
        shard_scores = np.zeros(len(rows), np.float32) if scores is None else scores
        merged = {"rows": np.concatenate([buffer["rows"], rows[in_cut]]),
                  "classes": np.concatenate([buffer["classes"], argmax[in_cut]]),
                  "confidence": np.concatenate([buffer["confidence"], confidence[in_cut]]),
                  "scores": np.concatenate([buffer["scores"], shard_scores[in_cut]])}
        merged_ids = pa.concat_arrays([buffer_ids, ids.filter(pa.array(in_cut))])
        # keep each class's `still_needed` best (confidence desc, then earlier row); the rest are final
        order = np.lexsort((merged["rows"], -merged["confidence"].astype(np.float64), merged["classes"]))
        merged = {key: value[order] for key, value in merged.items()}
        merged_ids = merged_ids.take(pa.array(order))
        rank = np.arange(len(order)) - np.searchsorted(merged["classes"], merged["classes"], side="left")
        wins = rank < still_needed[merged["classes"]]
        losers = merged["classes"][~wins]
        write(writer, merged["rows"][~wins], merged_ids.filter(pa.array(~wins)), losers, plan.base[losers],
              merged["scores"][~wins] if out_of_domain else None)
        buffer = {key: value[wins] for key, value in merged.items()}
        buffer_ids = merged_ids.filter(pa.array(wins))
    write(writer, buffer["rows"], buffer_ids, buffer["classes"], plan.base[buffer["classes"]] + 1,
          buffer["scores"] if out_of_domain else None)


def read_selection(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(store rows, multiplicities) of a selection.parquet, in store-row order."""
    table = pq.read_table(path, columns=["store_row", "multiplicity"])
    rows, copies = table.column("store_row").to_numpy(), table.column("multiplicity").to_numpy()
    order = np.argsort(rows, kind="stable")
    return rows[order], copies[order]
