"""Pseudo labels: teacher inference into a sharded store, then filter + balance, both streamed."""

from .store import LabelStore, label_with_weights, pseudo_label, targets_from_topk
from .select import read_selection, select_from_store

__all__ = ["LabelStore", "label_with_weights", "pseudo_label", "targets_from_topk", "read_selection", "select_from_store"]
