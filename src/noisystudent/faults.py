"""Fault injection for the fault-tolerance tests, switched on only by an environment variable.

    NOISYSTUDENT_INJECT="crash@5"          raise at training step 5 (first torchrun attempt only)
    NOISYSTUDENT_INJECT="nan@3:rank1"      make rank 1's loss NaN at step 3

Real faults (a killed process, a full disk) are injected by the tests directly; these two need
to happen inside a torchrun worker, where a test cannot reach. Unset, this costs one dict
lookup per step.
"""

from __future__ import annotations

import os
from functools import lru_cache


class InjectedCrash(RuntimeError):
    pass


@lru_cache(maxsize=1)
def _plan(spec: str) -> dict[str, tuple[int, int | None]]:
    plan = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, where = item.partition("@")
        step, _, rank = where.partition(":rank")
        plan[kind] = (int(step), int(rank) if rank else None)
    return plan


def should_inject(kind: str, step: int, rank: int) -> bool:
    spec = os.environ.get("NOISYSTUDENT_INJECT", "")
    if not spec:
        return False
    target = _plan(spec).get(kind)
    if target is None or target[0] != step or (target[1] is not None and target[1] != rank):
        return False
    # a crash is injected into the first attempt only, so that torchrun's restart can succeed
    return kind != "crash" or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
