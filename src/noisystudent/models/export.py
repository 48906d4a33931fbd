"""Exported weights into serving formats: ONNX (dynamic batch axis) and TorchScript.

Both take float images in [0, 1], shape [N, C, S, S] with the model's channels and image size,
and return logits; normalization (and a FixRes model's resize) is inside the graph. The model's
description (name, classes, image size, mean / std, channels) travels along: as ONNX metadata
properties, or as `noisystudent.json` among the TorchScript file's extra files. ONNX needs the
optional packages `onnx` and `onnxscript` (`pip install 'noisystudent[export]'`).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import UserError
from ..io import atomic_write
from .weights import exported_weights_file, load_exported

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


def export_model(weights: str | Path, fmt: str, output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write `weights` in format `fmt` (default output: beside the weights, with the format's suffix)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    source = exported_weights_file(weights)
    output = Path(output) if output is not None else source.with_suffix(FORMATS[fmt])
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it, or choose another --output")
    model = load_exported(source).eval()
    spec = model.spec
    size = spec.resolution or spec.image_size
    if size is None:
        raise UserError(f"{source} was exported before weights recorded their image size; retrain or re-export it")
    example = torch.rand(2, spec.in_chans, size, size)
    description = json.dumps({key: value for key, value in asdict(spec).items() if value is not None},
                             sort_keys=True)
    if fmt == "onnx":
        atomic_write(output, lambda tmp: _write_onnx(model, example, description, tmp))
    else:
        atomic_write(output, lambda tmp: _write_torchscript(model, example, description, tmp))
    return output


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, description: str, path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx and onnxscript packages: pip install 'noisystudent[export]'") from None
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress notes, not problems
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes={"images": {0: batch}}, verbose=False)
    program.save(str(path))
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = "noisystudent", description  # preprocessing and class names, as the weights hold them
    onnx.save(graph, str(path))


def _write_torchscript(model: torch.nn.Module, example: torch.Tensor, description: str, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PyTorch deprecates TorchScript; it still serves widely
        traced = torch.jit.trace(model, example)
    # into memory, not to `path`: the zip's root folder is named after the file saved to, here a
    # random temp name, so the same model gave other bytes each time
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"noisystudent.json": description})
    path.write_bytes(buffer.getvalue())
