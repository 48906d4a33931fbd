"""WebDataset tar shards as an unlabeled pool: `data.unlabeled: /data/pool-{0000..0127}.tar`.

A brace pattern expands to the shard list, in order. Samples are WebDataset's: consecutive
members sharing a key (the path up to the first dot of the file name). Each sample's image is its
first member with an image extension; its id is `<key>.<extension>`, which is the file's
relative path when the shards were made from a folder (tar cf pool.tar -C pool .), so a pool
gives the same ids whether it comes as a folder or as shards. Samples without an image are bad
files: counted and listed like undecodable ones.

We read the tar stream with Python's tarfile rather than webdataset's iterator because that
iterator ends a truncated shard silently: tarfile treats a missing or cut header after the first
as the end of the archive. Here a shard must end with tar's end-of-archive block; a shard that
is cut short, or is no tar at all, yields the samples it holds whole and then one bad item
naming the shard and what was lost, so it is counted against `data.max_bad_fraction` and listed
in the label store's manifest like any undecodable file. Shards are opened with webdataset's
`gopen`, so `pipe:` and URL shards work where the machine can reach them.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from .images import IMAGE_EXTENSIONS

_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # WebDataset's sample key rule
_META_MEMBER = re.compile(r"__[^/]*__($|/)")  # WebDataset's per-shard metadata members, not samples


DAMAGED_SHARD = " (damaged shard)"  # ends the id of the bad item a damaged shard ends with


class DamagedShard:
    """The source of the bad item a damaged shard ends with (decoding it raises the reason)."""

    def __init__(self, reason: str):
        self.reason = reason


def is_webdataset(source: str) -> bool:
    return ".tar" in source


def shard_urls(pattern: str, source_key: str = "data.unlabeled") -> list[str]:
    """The shards a pattern names, in order; every local one must exist (checked before any stage runs);
    a message names the pattern by `source_key`."""
    import braceexpand

    urls = list(braceexpand.braceexpand(pattern))
    missing = [url for url in urls if is_local(url) and not Path(url).is_file()]
    if missing:
        raise UserError(f"WebDataset shard {missing[0]} not found ({len(missing)} of {len(urls)} from {pattern!r} "
                        f"missing); check {source_key}")
    return urls


def is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def webdataset_items(pattern: str) -> Iterator[tuple[str, io.BytesIO | DamagedShard]]:
    """(id, image bytes) per sample, in shard order; a sample with no image yields empty bytes,
    a damaged shard one `DamagedShard` item after its whole samples."""
    for url in shard_urls(pattern):
        yield from _shard_items(url)


def _shard_items(url: str) -> Iterator[tuple[str, io.BytesIO | DamagedShard]]:
    samples = 0
    try:
        for key, members in _samples(url):
            samples += 1
            extension = next((ext for ext in members if ext.lower() in IMAGE_EXTENSIONS), None)
            if extension is None:
                yield f"{key} (no image in the sample)", io.BytesIO(b"")
            else:
                yield f"{key}.{extension}", io.BytesIO(members[extension])
    except _Damaged as damage:
        if damage.at_start:
            reason = f"{url} is not a tar archive ({damage}); rewrite or remove the shard"
        else:
            # counted as 1 bad item, though more may be lost: the cut shard cannot tell how many
            reason = (f"{url} is cut short after {samples} whole samples ({damage}); at least 1 sample after them "
                      f"is lost, how many more the cut shard cannot tell: rewrite the shard")
        yield f"{Path(url).name}{DAMAGED_SHARD}", DamagedShard(reason)


class _Damaged(Exception):
    def __init__(self, reason: str, at_start: bool):
        super().__init__(reason)
        self.at_start = at_start


class _EndCheckedTarInfo(tarfile.TarInfo):
    """Records why tarfile stopped reading headers: only EOFHeaderError is a proper end."""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as error:
            archive.end_reason = error
            raise


def _samples(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample; raises _Damaged when the archive does not end properly."""
    from webdataset.gopen import gopen

    key, members = None, {}
    with gopen(url, "rb") as stream:
        try:
            archive = tarfile.open(fileobj=stream, mode="r|*", tarinfo=_EndCheckedTarInfo)
        except tarfile.TarError as error:
            raise _Damaged(str(error), at_start=True) from None
        archive.end_reason = None
        try:
            for member in archive:
                if not member.isreg() or _META_MEMBER.match(member.name):
                    continue
                match = _KEY_AND_EXTENSION.match(member.name.removeprefix("./"))
                if match is None:
                    continue
                if match.group(1) != key:  # the sample before is whole: a sample's members are consecutive
                    if key is not None:
                        yield key, members
                    key, members = match.group(1), {}
                members[match.group(2)] = archive.extractfile(member).read()  # raises ReadError when cut
        except tarfile.TarError as error:  # a cut member: the sample it belongs to is incomplete
            raise _Damaged(str(error), at_start=False) from None
        if not isinstance(archive.end_reason, tarfile.EOFHeaderError):
            reason = archive.end_reason or "no end-of-archive block"
            raise _Damaged(f"{type(reason).__name__}: {reason}" if archive.end_reason else reason, at_start=False)
    if key is not None:
        yield key, members
