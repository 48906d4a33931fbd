"""WebDataset tar shards as an unlabeled pool: `data.unlabeled: /data/pool-{0000..0127}.tar`.

Read with the `webdataset` package (brace patterns expand to the shard list, in order). Each
sample's image is its first member with an image extension; its id is `<key>.<extension>`, which
is the file's relative path when the shards were made from a folder (tar cf pool.tar -C pool .),
so a pool gives the same ids whether it comes as a folder or as shards. Samples without an image
are bad files: counted and listed like undecodable ones.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm")


def is_webdataset(source: str) -> bool:
    return ".tar" in source


def webdataset_items(pattern: str) -> Iterator[tuple[str, io.BytesIO]]:
    """(id, image bytes) per sample, in shard order; a sample with no image yields empty bytes."""
    import braceexpand
    import webdataset

    urls = list(braceexpand.braceexpand(pattern))
    missing = [url for url in urls if "://" not in url and not Path(url).is_file()]
    if missing:
        raise UserError(f"WebDataset shard {missing[0]} not found ({len(missing)} of {len(urls)} from {pattern!r} missing)")
    # no shuffling, no node or worker splitting: the whole pool, in order, in this process
    dataset = webdataset.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None,
                                    empty_check=False)
    for sample in dataset:
        extension = next((key for key in sample if key.lower() in IMAGE_EXTENSIONS), None)
        if extension is None:
            yield f"{sample['__key__']} (no image in the sample)", io.BytesIO(b"")
        else:
            yield f"{sample['__key__']}.{extension}", io.BytesIO(sample[extension])
