"""Classify images with exported weights: `predict` in Python, `noisystudent predict` streamed into
CSV, JSONL or Parquet.

The source is anything `data.unlabeled` accepts (a folder tree, a .csv / .jsonl manifest, tar
shards), read and decoded a batch at a time like the pool, so its size does not matter. The
preprocessing comes from the weights file: images are decoded to the model's `image_size`
(shorter side resized, center crop) with its channels, and normalized inside the model. Each
row holds the image id, the top-k class names and their probabilities. Undecodable images are
skipped and listed in `<output>.undecodable.csv`; more than `max_bad_fraction` of them stops
the command.

The source is read in chunks of `chunk_size` items (default CHUNK); each chunk's predictions go to a part file in
`<output>.parts/` (temp file + rename), and the parts are joined, in chunk order, into the
output (temp file + rename) at the end, so a failed or killed command leaves no partial output
and a rerun redoes only the chunks it lacks. Under torchrun, rank r predicts chunks r, r + W,
..., like `label`, and rank 0 joins them: the output is the same file one process writes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from .data import open_pool
from .data.images import decode_image
from .distributed import SINGLE, Distributed
from .errors import UserError
from .io import LOCK, atomic_write, exclusive_lock, read_json, write_json
from .labels.store import file_sha256
from .models import Classifier, exported_weights_file, inference, load_exported, to_model_input

FORMATS = (".csv", ".jsonl", ".parquet")
CHUNK = 10_000  # items per part file (and per rank's share under torchrun)


def top_classes(model: Classifier, images: torch.Tensor, device: torch.device,
                k: int) -> tuple[list[list[str]], list[list[float]]]:
    """A batch's k most probable classes by name, and their probabilities (the model in `inference`)."""
    probabilities = model(to_model_input(images, device)).float().softmax(dim=1).cpu()
    top_probabilities, top_ids = probabilities.topk(k, dim=1)
    return [[model.spec.class_name(i) for i in row] for row in top_ids.tolist()], top_probabilities.tolist()


def predict(model: Classifier, images: torch.Tensor | Sequence[str | Path], top_k: int = 5, batch_size: int = 256,
            device: str | torch.device = "cpu") -> list[list[tuple[str, float]]]:
    """Each image's `top_k` (class name, probability), most probable first. `images` are image
    files, decoded as training decoded them (shorter side resized to the model's image size,
    center crop, its channels), or a tensor [N, C, H, W], uint8 or float in [0, 1]."""
    device = torch.device(device)
    spec = model.spec
    if not isinstance(images, torch.Tensor):
        if spec.image_size is None:
            raise UserError("these weights were exported before they recorded their image size; pass a tensor "
                            "of images at the data.image_size they were trained with")
        images = torch.from_numpy(np.stack([decode_image(path, spec.image_size, spec.in_chans) for path in images]))
    k = min(top_k, spec.num_classes)
    ranked = []
    with inference(model, device):
        for start in range(0, len(images), batch_size):
            names, probabilities = top_classes(model, images[start:start + batch_size], device, k)
            ranked += [list(zip(*row)) for row in zip(names, probabilities)]
    return ranked


def predict_to_file(weights: str | Path, source: str, output: str | Path, device: torch.device, batch_size: int = 256,
                    top_k: int = 5, max_bad_fraction: float = 0.01, decode_threads: int = 2,
                    image_size: int | None = None, overwrite: bool = False,
                    distributed: Distributed = SINGLE, chunk_size: int = CHUNK) -> dict:
    """Write the predictions for every image of `source`; returns counts and paths."""
    output = Path(output)
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; give a file in it, e.g. {output / 'predictions.csv'}")
    if output.suffix.lower() not in FORMATS:
        raise UserError(f"--output {output}: the extension chooses the format, one of {', '.join(FORMATS)}")
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it, or choose another --output")
    if top_k < 1 or batch_size < 1 or chunk_size < 1:
        raise UserError("--top-k, --batch-size and --chunk-size must be >= 1")
    if decode_threads < 0:
        raise UserError(f"--decode-threads {decode_threads}: must be >= 0 (0 decodes in the main thread)")
    if not 0 <= max_bad_fraction <= 1:
        raise UserError(f"--max-bad-fraction {max_bad_fraction}: must be between 0 and 1")
    model = load_exported(exported_weights_file(weights)).to(device)
    spec = model.spec
    size = image_size or spec.image_size
    if size is None:
        raise UserError(f"{weights} was exported before weights recorded their image size; pass --image-size "
                        f"(the data.image_size it was trained with)")
    classes = [spec.class_name(i) for i in range(spec.num_classes)]
    pool = open_pool(source, size, spec.in_chans, max_bad_fraction, classes, decode_threads=decode_threads,
                     source_key="SOURCE", tolerance_key="--max-bad-fraction")
    k = min(top_k, spec.num_classes)
    parts = output.with_name(output.name + ".parts")
    header = {"pool": pool.identity, "weights_sha256": file_sha256(exported_weights_file(weights)), "top_k": k,
              "image_size": size, "format": output.suffix.lower(), "chunk_size": chunk_size}
    # held first: a second command on this OUTPUT stops before it touches the holder's parts
    with (exclusive_lock(parts) if distributed.is_main else contextlib.nullcontext(),
          _parts_kept_only_with_work(parts, distributed)):
        if distributed.is_main:  # parts of another source, model or setting are never joined: start over
            if (parts / "header.json").is_file() and read_json(parts / "header.json") != header:
                for stale in parts.iterdir():
                    if stale.name != LOCK:  # the lock this command holds stays
                        stale.unlink()
            write_json(parts / "header.json", header)
        distributed.barrier()
        chunks = 0
        with inference(model, device):
            progress = tqdm(total=pool.size, desc="predict", unit="img", disable=None if distributed.is_main else True)
            for index, items in pool.chunks(chunk_size):  # every rank reads every chunk's ids, predicts its own
                chunks += 1
                part = parts / f"chunk-{index:05d}{output.suffix.lower()}"
                if index % distributed.world_size != distributed.rank or part.with_suffix(".json").is_file():
                    progress.update(sum(1 for _ in items))
                    continue
                counts = {"images": 0, "inputs": 0, "bad": []}

                def write(tmp: Path) -> None:
                    with _PredictionWriter(tmp, output.suffix.lower(), k) as sink:
                        for batch in pool.batches(items, batch_size):
                            if batch.ids:
                                sink.write(batch.ids, *top_classes(model, batch.images, device, k))
                            counts["images"] += len(batch.ids)
                            counts["inputs"] += batch.inputs
                            counts["bad"] += [list(entry) for entry in batch.bad]
                            progress.update(batch.inputs)
                atomic_write(part, write)
                write_json(part.with_suffix(".json"), counts)  # last: a part counts as done once its counts exist
            progress.close()
        distributed.barrier()
        if not distributed.is_main:
            distributed.barrier()
            return {}
        if chunks == 0:
            distributed.barrier()
            raise UserError(f"{source} holds no images; give a folder, manifest or tar shards with images in it")
        paths = [parts / f"chunk-{index:05d}{output.suffix.lower()}" for index in range(chunks)]
        counts = [read_json(path.with_suffix(".json")) for path in paths]
        bad = [tuple(entry) for count in counts for entry in count["bad"]]
        try:
            pool.check_bad_fraction(bad, sum(count["inputs"] for count in counts))
            atomic_write(output, lambda tmp: _join(paths, tmp, output.suffix.lower()))
        finally:
            distributed.barrier()
        shutil.rmtree(parts)
        undecodable = output.with_name(output.name + ".undecodable.csv")
        if bad:
            atomic_write(undecodable, lambda tmp: _write_csv(tmp, ["id", "reason"], bad))
        return {"images": sum(count["images"] for count in counts), "inputs": sum(count["inputs"] for count in counts),
                "undecodable": len(bad), "output": str(output), "undecodable_list": str(undecodable) if bad else None}


@contextmanager
def _parts_kept_only_with_work(parts: Path, distributed: Distributed) -> Iterator[None]:
    """On a refusal, leave `parts` only when it holds predicted chunks (for the rerun, and say so);
    a command refused before it predicted anything leaves nothing behind."""
    try:
        yield
    except UserError as error:
        if not distributed.is_main or not parts.is_dir():
            raise
        if any(parts.glob("chunk-*.json")):
            raise UserError(f"{error}; the chunks predicted so far stay in {parts} for the rerun (delete it to "
                            f"start over)") from None
        shutil.rmtree(parts)
        raise


def _join(paths: list[Path], out: Path, suffix: str) -> None:
    """The part files, in order, as one file of the same format (one CSV header, one Parquet schema)."""
    if suffix == ".parquet":
        with pq.ParquetWriter(out, pq.read_schema(paths[0])) as writer:
            for path in paths:
                writer.write_table(pq.read_table(path))
        return
    with open(out, "wb") as joined:
        for number, path in enumerate(paths):
            with open(path, "rb") as part:
                if suffix == ".csv" and number:
                    part.readline()  # each part has the header; keep the first
                shutil.copyfileobj(part, joined)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


class _PredictionWriter:
    """Rows of (id, top-k class names, their probabilities) in the format of the extension."""

    def __init__(self, path: Path, suffix: str, k: int):
        self.path, self.suffix, self.k = path, suffix, k

    def __enter__(self) -> "_PredictionWriter":
        if self.suffix == ".parquet":
            schema = pa.schema([("id", pa.string()), ("classes", pa.list_(pa.string())),
                                ("probabilities", pa.list_(pa.float32()))])
            self.parquet = pq.ParquetWriter(self.path, schema)
        else:
            self.handle = open(self.path, "w", newline="", encoding="utf-8")
            if self.suffix == ".csv":
                self.csv = csv.writer(self.handle)
                self.csv.writerow(["id", *(f"class_{i}" for i in range(1, self.k + 1)),
                                   *(f"probability_{i}" for i in range(1, self.k + 1))])
        return self

    def write(self, ids: list[str], names: list[list[str]], probabilities: list[list[float]]) -> None:
        if self.suffix == ".parquet":
            self.parquet.write_table(pa.table({"id": ids, "classes": names, "probabilities": probabilities},
                                              schema=self.parquet.schema))
        elif self.suffix == ".csv":
            self.csv.writerows([image_id, *row_names, *(f"{p:.6f}" for p in row_probs)]
                               for image_id, row_names, row_probs in zip(ids, names, probabilities))
        else:
            self.handle.writelines(json.dumps({"id": image_id, "classes": row_names,
                                               "probabilities": [round(p, 6) for p in row_probs]}) + "\n"
                                   for image_id, row_names, row_probs in zip(ids, names, probabilities))

    def __exit__(self, *exc) -> None:
        if self.suffix == ".parquet":
            self.parquet.close()
        else:
            self.handle.close()
