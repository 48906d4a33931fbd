"""The selection stage's work: filter and balance (streamed over the label store), its stats, and
the selected images gathered for the student. Its stage (stages/selection.py) runs it, and
`noisystudent plan` times this very code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import SelectionConfig
from ..data import OOD_LABEL, Pool
from ..errors import UserError
from .gather import gather_selected_images
from .selection import FLAG_QUANTILE, SELECTION_FILE, OutOfDomain, read_selection, select_from_store
from .store import LabelStore, check_format


def in_domain_accuracy(argmax: np.ndarray, truth: np.ndarray, copies: np.ndarray | None = None) -> float | None:
    """Pseudo-label accuracy over the images that have a class (out-of-domain ones have none)."""
    has_class = truth != OOD_LABEL
    weights = has_class.astype(np.float64) * (1 if copies is None else copies)
    return float(((argmax == truth) * weights).sum() / weights.sum()) if weights.sum() else None


def out_of_domain_truth(store: LabelStore, truth: np.ndarray, rows: np.ndarray, copies: np.ndarray,
                        threshold: float, out_of_domain: OutOfDomain) -> dict:
    """On a pool whose out-of-domain images are known (data.ood_fraction): how many of them the
    filters kept and the selection took, beside the in-domain ones kept."""
    out = truth == OOD_LABEL
    kept = store.column("confidence") >= threshold
    if out_of_domain.drop:
        kept &= store.column("ood_score") <= out_of_domain.threshold
    return {"in_pool": int(out.sum()), "kept": int((kept & out).sum()), "kept_in_domain": int((kept & ~out).sum()),
            "selected_unique": int(out[rows].sum()), "selected_with_copies": int(copies[out[rows]].sum()),
            "selected_total": int(copies.sum())}


def select_and_gather(store: LabelStore, folder: Path, pool: Pool, reference: np.ndarray | None,
                      selection: SelectionConfig, num_classes: int, batch_size: int, seed: int) -> dict:
    """The selection stage's work, into `folder`: filter and balance (streamed over the store),
    the stats (with the pool's hidden labels, where it has them), then the selected images
    gathered in `selection.storage`. `reference` is the held-out reference's out-of-domain scores
    (None: no reference, so no out-of-domain stats). `noisystudent plan` times this very function."""
    check_format(store.root, store.manifest)
    out_of_domain = None
    if reference is not None and len(reference):
        quantile = selection.ood_quantile if selection.ood_quantile is not None else FLAG_QUANTILE
        out_of_domain = OutOfDomain(reference, quantile, drop=selection.ood_quantile is not None,
                                    score=store.manifest["ood_score"])
    elif selection.ood_quantile is not None:
        raise UserError(f"selection.ood_quantile is set, but {store.root} has no reference scores (labeled without "
                        f"held-out images: data.reference_fraction > 0 gives them)")
    stats = select_from_store(store, folder / SELECTION_FILE, num_classes, selection.confidence_threshold,
                              selection.images_per_class, selection.mode, seed=seed, out_of_domain=out_of_domain)
    truth = pool.truth
    rows, copies = read_selection(folder / SELECTION_FILE)
    if len(store) == 0:
        manifest = store.manifest
        raise UserError(f"no image of the unlabeled pool could be decoded ({manifest['bad_files']} of "
                        f"{manifest['inputs']} failed, listed in {store.root / 'manifest.json'}); check "
                        f"data.unlabeled")
    if len(rows) == 0:
        also = "" if selection.ood_quantile is None else " and selection.ood_quantile"
        raise UserError(f"no pseudo-labeled image passed selection.confidence_threshold="
                        f"{selection.confidence_threshold}{also}; lower it")
    if truth is not None:
        stats["selected_pseudo_label_accuracy"] = in_domain_accuracy(store.column("argmax")[rows], truth[rows], copies)
        if (truth == OOD_LABEL).any() and out_of_domain is not None:
            stats["out_of_domain_truth"] = out_of_domain_truth(store, truth, rows, copies,
                                                               selection.confidence_threshold, out_of_domain)
    gather_selected_images(pool, store, folder, batch_size, selection.storage)
    return stats
