"""`noisystudent predict`: classify images with exported weights, streamed into CSV, JSONL or Parquet.

The source is anything `data.unlabeled` accepts (a folder tree, a .csv / .jsonl manifest, tar
shards), read and decoded a batch at a time like the pool, so its size does not matter. The
preprocessing comes from the weights file: images are decoded to the model's `image_size`
(shorter side resized, center crop) with its channels, and normalized inside the model. Each
row holds the image id, the top-k class names and their probabilities. Undecodable images are
skipped and listed in `<output>.undecodable.csv`; more than `max_bad_fraction` of them stops
the command. The output is written to a temp file and renamed at the end, so a failed or killed
command leaves no partial file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from .data import open_pool
from .errors import UserError
from .io import atomic_write
from .models import exported_weights_file, inference, load_exported, to_model_input

FORMATS = (".csv", ".jsonl", ".parquet")


def predict_to_file(weights: str | Path, source: str, output: str | Path, device: torch.device, batch_size: int = 256,
                    top_k: int = 5, max_bad_fraction: float = 0.01, decode_threads: int = 2,
                    image_size: int | None = None, overwrite: bool = False) -> dict:
    """Write the predictions for every image of `source`; returns counts and paths."""
    output = Path(output)
    if output.suffix.lower() not in FORMATS:
        raise UserError(f"--output {output}: the extension chooses the format, one of {', '.join(FORMATS)}")
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it, or choose another --output")
    if top_k < 1 or batch_size < 1:
        raise UserError("--top-k and --batch-size must be >= 1")
    model = load_exported(exported_weights_file(weights)).to(device)
    spec = model.spec
    size = image_size or spec.image_size
    if size is None:
        raise UserError(f"{weights} was exported before weights recorded their image size; pass --image-size "
                        f"(the data.image_size it was trained with)")
    classes = list(spec.classes) if spec.classes is not None else [str(i) for i in range(spec.num_classes)]
    pool = open_pool(source, size, spec.in_chans, max_bad_fraction, classes, decode_threads=decode_threads)
    k = min(top_k, spec.num_classes)
    bad, counts = [], {"images": 0, "inputs": 0}

    def write(tmp: Path) -> None:
        with _PredictionWriter(tmp, output.suffix.lower(), k) as sink, inference(model, device):
            progress = tqdm(total=pool.size, desc="predict", unit="img", disable=None)
            for batch in pool.batches(pool.items(), batch_size):
                if batch.ids:
                    probs = model(to_model_input(batch.images, device)).float().softmax(dim=1).cpu()
                    top_probs, top_ids = probs.topk(k, dim=1)
                    names = [[classes[i] for i in row] for row in top_ids.tolist()]
                    sink.write(batch.ids, names, top_probs.tolist())
                bad.extend(batch.bad)
                counts["images"] += len(batch.ids)
                counts["inputs"] += batch.inputs
                progress.update(batch.inputs)
            progress.close()
        pool.check_bad_fraction(bad, counts["inputs"])  # inside the write: too many bad leaves no output

    atomic_write(output, write)
    undecodable = output.with_name(output.name + ".undecodable.csv")
    if bad:
        atomic_write(undecodable, lambda tmp: _write_csv(tmp, ["id", "reason"], bad))
    return {**counts, "undecodable": len(bad), "output": str(output),
            "undecodable_list": str(undecodable) if bad else None}


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
