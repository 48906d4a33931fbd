"""What a stage's run works with: the config, the process's place under torchrun, the device and
the data splits (session.py), the run folder, and the timings every stage appends to."""

from __future__ import annotations

import json
import time
from typing import Callable

from ..config import Config
from ..distributed import init_from_environment
from ..io import read_json, write_json
from ..runs import TIMINGS, Stage, run_dir
from ..session import start_session


class RunContext:
    """Under torchrun every rank trains; rank 0 alone labels, selects, evaluates and writes, while
    the others wait at a barrier and then read what it wrote."""

    def __init__(self, config: Config, log: Callable[[str], None] = print):
        self.config = config
        self.distributed, device_name = init_from_environment(config.device)
        self.log = log if self.distributed.is_main else (lambda line: None)
        self.run_dir = run_dir(config)
        session = start_session(config, device_name)
        # session.labeled is what models train on: the out-of-domain reference (session.reference,
        # data.reference_fraction) is held out of every model's training and scored like the pool
        self.device, self.labeled, self.unlabeled, self.test, self.reference = (
            session.device, session.labeled, session.unlabeled, session.test, session.reference)

    def finish(self, stage: Stage, kind: str, started: float, stats: dict) -> None:
        """On the main rank: the stage's stats.json, its DONE marker, then its time."""
        write_json(stage.path / "stats.json", stats)
        stage.mark_done()
        self.record_time(stage, kind, started)

    def stats_of(self, stage: Stage) -> dict:
        """A finished stage's stats.json, read by every rank once the main one has written it."""
        self.distributed.barrier()
        return read_json(stage.path / "stats.json")

    def record_time(self, stage: Stage, kind: str, started: float) -> None:
        """Append a stage's wall seconds (this attempt's) to timings.jsonl: what `noisystudent plan`
        estimates, measured."""
        if self.distributed.is_main:
            record = {"stage": stage.path.relative_to(self.run_dir).as_posix(), "kind": kind,
                      "seconds": round(time.perf_counter() - started, 2)}
            with open(self.run_dir / TIMINGS, "a") as handle:
                handle.write(json.dumps(record) + "\n")
