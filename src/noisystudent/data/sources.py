"""Data sources by name: `data.dataset` selects one, which loads (labeled, pool, test).

A source is one function, registered with the `data.*` keys it needs:

    @register_data_source("cifar10", required=("root",))
    def cifar10(data_config, seed, test_only):
        train, test = my_loader(data_config.root)            # ImageSets: uint8 [N, C, H, W]
        if test_only:
            return None, None, test
        labeled, rest = split_labeled_unlabeled(train, data_config.labels_per_class, seed)
        return labeled, memory_pool(rest, "cifar10 train"), test

An in-memory pool (`memory_pool`) suits data sets that fit in memory; large pools come from
`open_pool` (a folder, a manifest or tar shards, read a batch at a time). Labeled and test sets
too big for memory can be memory-mapped: `data_config.cache_dir` is always set when a source is
called (data/folder.py `decode_set` writes and reuses such a cache). `data.test_limit` applies
to every source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..registries import DATA_SOURCES

Loader = Callable  # (data_config, seed, test_only) -> (labeled ImageSet | None, Pool | None, test ImageSet)


@dataclass(frozen=True)
class DataSource:
    name: str
    load: Loader
    required: tuple[str, ...]  # data.* keys that must be set for this source




def register_data_source(name: str, required: tuple[str, ...] = ()) -> Callable[[Loader], Loader]:
    def register(load: Loader) -> Loader:
        DATA_SOURCES[name] = DataSource(name, load, tuple(required))
        return load
    return register
