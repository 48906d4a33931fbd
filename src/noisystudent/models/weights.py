"""Exported weights: `final.safetensors`, the model description in its metadata.

Any command rebuilds the model from the file alone (`load_exported`), and two exports of the
same weights are the same bytes, so a file's hash identifies the model (label stores record
their teacher's hash).
"""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UserError
from ..io import atomic_write
from .registry import Classifier, ModelSpec, build_model


def export_weights(path: Path, model: Classifier) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=model.spec.to_metadata()))


def exported_weights_file(path: str | Path) -> Path:
    """A stage folder's final.safetensors, or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "final.safetensors"
    if not path.is_file():
        raise UserError(f"weights file {path} not found; pass a stage folder (e.g. runs/demo/round-1/student) "
                        f"or its final.safetensors")
    return path


def load_exported(path: str | Path, dropout: float = 0.0, survival_prob: float = 1.0,
                  resolution: int | None = None) -> Classifier:
    """Rebuild a Classifier from `final.safetensors` (noise settings are not part of weights);
    `resolution` replaces the exported input resolution (for a FixRes fine-tune)."""
    path = exported_weights_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            spec = ModelSpec.from_metadata(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    except Exception as error:  # safetensors raises several types for a damaged file
        raise UserError(f"{path} is not a readable safetensors file ({error}); re-export it, or delete its stage "
                        f"folder and run again to retrain it") from None
    model = build_model(spec.name, spec.num_classes, spec.in_chans, dropout, survival_prob, spec.mean, spec.std,
                        resolution or spec.resolution, spec.classes, spec.image_size)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    reshaped = sorted(key for key in set(expected) & set(tensors) if expected[key].shape != tensors[key].shape)
    if missing or unexpected or reshaped:
        problems = [f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}" for label, names in
                    (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if names]
        raise UserError(f"{path}: its tensors are not those of its described model {spec.name} "
                        f"({spec.num_classes} classes, {spec.in_chans} channels): {'; '.join(problems)}; "
                        f"the file was edited or mixed up, re-export it from its run")
    model.load_state_dict(tensors)
    return model
