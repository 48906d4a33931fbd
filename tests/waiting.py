"""Waiting on another process without a race: poll for what it writes once it is ready (a
checkpoint, which a run saves only inside its SIGTERM handler's scope), never for a fixed time.
A slow machine makes the wait longer, never makes a test act early: past the timeout the test
fails saying what never appeared, instead of signalling a process that is not ready for it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

# generous: a wait ends as soon as its condition holds, so only a broken run ever waits this long
TIMEOUT_S = 600


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL `process` and, when it leads its own session (start_new_session=True), its workers."""
    if process.poll() is None:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait()


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen | None = None,
             timeout: float = TIMEOUT_S) -> None:
    """Return once `condition()` holds. Fail the test (killing `process`) if `process` exits first
    or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process exited (code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            if process is not None:
                kill_tree(process)
            pytest.fail(f"still no {what} after {timeout:.0f} s: the run is stuck (or this machine is very slow)")
        time.sleep(0.05)


def child_ranks(launcher_pid: int) -> dict[int, int]:
    """{RANK: pid} of the torchrun workers `launcher_pid` started, read from their environments
    (Linux /proc), so a test picks a rank by number, not by the order of process ids."""
    ranks = {}
    pids = subprocess.run(["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True).stdout.split()
    for pid in map(int, pids):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:  # exited between pgrep and here
            continue
        rank = [entry[5:] for entry in environ if entry.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0])] = pid
    return ranks
