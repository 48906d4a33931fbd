"""Pseudo labels: teacher inference into a sharded store, then filter + balance."""

from .store import LabelStore, pseudo_label
from .select import Selection, balance_classes, filter_by_confidence, select, targets_for

__all__ = ["LabelStore", "pseudo_label", "Selection", "balance_classes", "filter_by_confidence", "select",
           "targets_for"]
