"""Atomic file writes (a crash leaves either the old file or the new one, never half of one), the
comparison of the JSON records they hold, and the lock that keeps two commands out of one folder."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

LOCK = ".lock"  # in a folder while a command holds it: the holder's pid


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, fsync it, then rename over `path` (and fsync the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete the temp files atomic_write leaves only when its process is killed mid-write (the
    committed files beside them are intact). Call it before anything writes to `folder` again."""
    for stale in Path(folder).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested records, sorted: what a refusal names."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(prefix + key)
    return keys


def lookup(record: dict, dotted: str) -> Any:
    """The value at a dotted key of a nested record; None where it is absent."""
    for part in dotted.split("."):
        record = record.get(part) if isinstance(record, dict) else None
    return record


@contextmanager
def exclusive_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder` for this process until the block ends: a second command on it (two runs of
    one name would train every stage twice and interleave their files) stops at once, naming the
    holder's pid. An flock, so the kernel releases it when the holder dies, even by SIGKILL; the
    lock file is removed on the way out, so a finished command leaves the folder as it made it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"{folder} is in use by another noisystudent command (pid {holder}); wait for it to "
                            f"end or stop it, or use another folder (name=... for a run)") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # the holder before removed this file as it let go: lock the one now there
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held, so no one locks the file on its way out
        handle.close()
