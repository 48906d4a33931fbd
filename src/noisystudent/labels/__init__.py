"""Pseudo labels: the teacher's predictions stored in shards, selection, the student's training set."""

from .store import LabelStore, damaged_shards, energy, label_with_weights, load_labeling_teacher, pseudo_label
from .selection import SELECTION_FILE, OutOfDomain, read_selection, select_from_store
from .gather import IMAGES, PseudoLabeledSet, dense_targets, gather_selected_images, load_pseudo_labeled
from .targets import TARGET_KINDS, register_target_kind, topk_columns
from .selection_stage import in_domain_accuracy, select_and_gather

__all__ = ["LabelStore", "damaged_shards", "energy", "OutOfDomain", "label_with_weights", "load_labeling_teacher", "pseudo_label", "SELECTION_FILE", "read_selection", "select_from_store", "IMAGES",
           "PseudoLabeledSet", "dense_targets", "gather_selected_images", "load_pseudo_labeled", "TARGET_KINDS", "register_target_kind", "topk_columns",
           "in_domain_accuracy", "select_and_gather"]
