"""Data: labeled and test sets (memory-mapped caches for folders), the pool read in chunks, weak augmentation.

Data sources are registered by name (`data.dataset` selects one); see data/sources.py.
"""

import dataclasses
from pathlib import Path

from .images import ImageSet, pad_to
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, resolve_root
from .pool import Batch, Pool, memory_pool, open_pool
from .split import hold_out_reference, split_labeled_unlabeled
from .out_of_domain import OOD_LABEL, mix_out_of_domain
from .augment import center_boxes, inception_crop, sample_inception, sample_weak, weak_augment
from .sources import DATA_SOURCES, register_data_source

__all__ = [
    "ImageSet", "pad_to", "FASHION_MNIST_CLASSES", "load_fashion_mnist", "resolve_root", "Batch", "Pool",
    "memory_pool", "open_pool", "hold_out_reference", "split_labeled_unlabeled", "center_boxes", "inception_crop", "sample_inception", "sample_weak", "weak_augment", "load_splits", "DATA_SOURCES",
    "register_data_source", "OOD_LABEL", "mix_out_of_domain",
]


def load_splits(data_config, seed: int, test_only: bool = False,
                cache_dir: Path | None = None) -> tuple[ImageSet | None, Pool | None, ImageSet]:
    """(labeled, unlabeled pool, test) for a run from the data source `data.dataset` names, the
    test set cut to `data.test_limit`; with `test_only`, (None, None, test). `cache_dir` is where
    sources cache decoded images when `data.cache_dir` is not set (Config.image_cache)."""
    if data_config.cache_dir is None and cache_dir is not None:
        data_config = dataclasses.replace(data_config, cache_dir=str(cache_dir))
    labeled, unlabeled, test = DATA_SOURCES[data_config.dataset].load(data_config, seed, test_only)
    if data_config.test_limit is not None:
        test = test.subset(range(min(data_config.test_limit, len(test))))
    return labeled, unlabeled, test


@register_data_source("fashion_mnist", required=())
def _fashion_mnist(data_config, seed: int, test_only: bool):
    """The embedded default: Fashion-MNIST's IDX files, split (seeded) into labeled and pool."""
    train, test = load_fashion_mnist(data_config.root, download=data_config.download)
    test = pad_to(test, data_config.image_size)
    if test_only:
        return None, None, test
    labeled, unlabeled = split_labeled_unlabeled(pad_to(train, data_config.image_size), data_config.labels_per_class,
                                                 seed=seed, unlabeled_limit=data_config.unlabeled_limit)
    name = "fashion_mnist train (unlabeled split)"
    if data_config.ood_fraction:
        unlabeled = mix_out_of_domain(unlabeled, data_config.ood_fraction, seed, data_config.ood_source)
        name += f" + {data_config.ood_fraction:.0%} out-of-domain {data_config.ood_source}"
    return labeled, memory_pool(unlabeled, name), test


@register_data_source("folder", required=("labeled", "unlabeled", "test"))
def _folders(data_config, seed: int, test_only: bool):
    """Your images: class folders or manifests for labeled and test, any folder, manifest or tar
    shards for the pool (data/folder.py, data/pool.py)."""
    from .folder import load_labeled

    size, channels, bad = data_config.image_size, data_config.channels, data_config.max_bad_fraction
    cache = Path(data_config.cache_dir) if data_config.cache_dir else None
    storage = {"cache_dir": cache, "storage": data_config.storage, "threads": max(1, data_config.decode_threads)}
    labeled, _ = load_labeled(data_config.labeled, size, channels, bad, **storage)
    test, _ = load_labeled(data_config.test, size, channels, bad, classes=labeled.classes, key="data.test", **storage)
    if test_only:
        return None, None, test
    unlabeled = open_pool(data_config.unlabeled, size, channels, bad, labeled.classes, data_config.unlabeled_limit,
                          data_config.decode_threads)
    return labeled, unlabeled, test
