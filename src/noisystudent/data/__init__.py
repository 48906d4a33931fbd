"""Data: sources that produce in-memory image sets, the labeled/unlabeled split, weak augmentation."""

from .images import ImageSet, pad_to
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, resolve_root
from .split import split_labeled_unlabeled
from .augment import weak_augment

__all__ = [
    "ImageSet", "pad_to", "FASHION_MNIST_CLASSES", "load_fashion_mnist", "resolve_root",
    "split_labeled_unlabeled", "weak_augment", "load_splits",
]


def load_splits(data_config, seed: int, test_only: bool = False):
    """(labeled, unlabeled, test) ImageSets for a run, at the configured size; with
    `test_only`, (None, None, test)."""
    if data_config.dataset == "folder":
        return _load_folders(data_config, test_only)
    train, test = load_fashion_mnist(data_config.root, download=data_config.download)
    test = pad_to(test, data_config.image_size)
    if data_config.test_limit is not None:
        test = test.subset(range(min(data_config.test_limit, len(test))))
    if test_only:
        return None, None, test
    labeled, unlabeled = split_labeled_unlabeled(pad_to(train, data_config.image_size), data_config.labels_per_class,
                                                 seed=seed, unlabeled_limit=data_config.unlabeled_limit)
    return labeled, unlabeled, test


def _load_folders(data_config, test_only: bool):
    from .folder import load_labeled, load_unlabeled

    size, channels, bad = data_config.image_size, data_config.channels, data_config.max_bad_fraction
    labeled, _ = load_labeled(data_config.labeled, size, channels, bad)
    test, _ = load_labeled(data_config.test, size, channels, bad, classes=labeled.classes)
    if data_config.test_limit is not None:
        test = test.subset(range(min(data_config.test_limit, len(test))))
    if test_only:
        return None, None, test
    unlabeled, _ = load_unlabeled(data_config.unlabeled, size, channels, bad, labeled.classes)
    if data_config.unlabeled_limit is not None:
        unlabeled = unlabeled.subset(range(min(data_config.unlabeled_limit, len(unlabeled))))
    return labeled, unlabeled, test
