"""Peak resident memory of a pass, measured in a fresh process.

Resident memory counts every allocation, torch's and Arrow's included, which tracemalloc does not
see. A bound on it is made relative so that no allocator or Python version sets it: a pass over
a small input runs twice (the first makes the imports, thread pools, kernel caches and allocator
arenas), then one over a much larger input; the peak may grow by far less than the larger input's
size. The process is fresh so that the peaks are these passes', not an earlier test's."""

from __future__ import annotations

import multiprocessing
import resource
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _growth(work: Callable, smaller: tuple, larger: tuple) -> int:
    peaks = []
    for index, arguments in enumerate((smaller, smaller, larger)):
        work(index, *arguments)
        peaks.append(peak_resident_bytes())
    return peaks[2] - peaks[1]


def peak_growth(work: Callable, smaller: tuple, larger: tuple, timeout: float = 600) -> int:
    """Bytes the peak resident memory of a fresh process grew by during `work(2, *larger)`, after
    `work(0, *smaller)` and `work(1, *smaller)` (the first argument numbers the pass, for its
    output's name). `work` is a module-level function (the fresh process imports it)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        return fresh.submit(_growth, work, smaller, larger).result(timeout=timeout)
