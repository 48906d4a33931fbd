"""Data: labeled and test sets in memory, the unlabeled pool read in chunks, weak augmentation."""

from .images import ImageSet, pad_to
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, resolve_root
from .pool import Batch, Pool, memory_pool, open_pool
from .split import split_labeled_unlabeled
from .augment import weak_augment

__all__ = [
    "ImageSet", "pad_to", "FASHION_MNIST_CLASSES", "load_fashion_mnist", "resolve_root", "Batch", "Pool",
    "memory_pool", "open_pool", "split_labeled_unlabeled", "weak_augment", "load_splits",
]


def load_splits(data_config, seed: int, test_only: bool = False) -> tuple[ImageSet | None, Pool | None, ImageSet]:
    """(labeled, unlabeled pool, test) for a run, at the configured size; with `test_only`,
    (None, None, test)."""
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
    return labeled, memory_pool(unlabeled, "fashion_mnist train (unlabeled split)"), test


def _load_folders(data_config, test_only: bool):
    from .folder import load_labeled

    size, channels, bad = data_config.image_size, data_config.channels, data_config.max_bad_fraction
    labeled, _ = load_labeled(data_config.labeled, size, channels, bad)
    test, _ = load_labeled(data_config.test, size, channels, bad, classes=labeled.classes, key="data.test")
    if data_config.test_limit is not None:
        test = test.subset(range(min(data_config.test_limit, len(test))))
    if test_only:
        return None, None, test
    unlabeled = open_pool(data_config.unlabeled, size, channels, bad, labeled.classes, data_config.unlabeled_limit,
                          data_config.decode_threads)
    return labeled, unlabeled, test
