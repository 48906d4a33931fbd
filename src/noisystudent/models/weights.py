"""Exported weights: `final.safetensors`, the model description in its metadata.

Any command rebuilds the model from the file alone (`load_exported`), and two exports of the
same weights are the same bytes, so a file's hash identifies the model (label stores record
their teacher's hash).
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models import adapt_input_conv, get_pretrained_cfg
from torch.hub import get_dir

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
                  resolution: int | None = None, train_at_test_resolution: bool = False) -> Classifier:
    """Rebuild a Classifier from `final.safetensors` (noise settings are not part of weights);
    `resolution` replaces the exported test resolution; `train_at_test_resolution` makes it
    train at that resolution too (a FixRes fine-tune)."""
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
    test_resolution = resolution or spec.resolution
    model = build_model(spec.name, spec.num_classes, spec.in_chans, dropout, survival_prob, spec.mean, spec.std,
                        test_resolution, spec.classes, spec.image_size,
                        test_resolution if train_at_test_resolution else spec.train_resolution, spec.crop_fraction)
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
    check_finite(tensors, path)
    model.load_state_dict(tensors)
    return model


def check_model_fits(spec: ModelSpec, classes: list[str], channels: int, path: str | Path, data: str,
                     fix: str) -> None:
    """Refuse a model made for other classes (by name, or by count for weights exported before they
    named them) or channels than `data` has, naming both lists and the `fix`."""
    same_classes = list(spec.classes) == classes if spec.classes is not None else spec.num_classes == len(classes)
    if same_classes and spec.in_chans == channels:
        return
    raise UserError(f"{path} is a model of {spec.num_classes} classes ({_shortened(spec.classes)}) on "
                    f"{spec.in_chans}-channel images, {data} has {len(classes)} classes ({_shortened(classes)}) on "
                    f"{channels}-channel images; {fix}")


def _shortened(names, shown: int = 6) -> str:
    if names is None:
        return "unnamed"
    names = list(names)
    return ", ".join(names[:shown]) + (f", ... {len(names) - shown} more" if len(names) > shown else "")


def check_finite(tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Refuse weights holding NaN or Inf: a model made of them predicts NaN (or one class) everywhere,
    labels, evaluates and trains without a word until much later, blaming something else."""
    for key, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{source}: tensor {key} holds NaN or Inf values; these weights come from a training "
                            f"that diverged or a damaged file: retrain or re-export them")


def load_initial_weights(model: Classifier, source: str) -> None:
    """Start `model` from other weights (`init` in the config): a run's stage folder or exported
    file, a local .safetensors / .pth of the same architecture, or a timm hub name
    (`timm/tf_efficientnet_b0.ns_jft_in1k`, which needs internet). The classifier keeps its new
    initialization when the class count differs; a first convolution made for another number of
    channels is adapted as timm adapts it (summed into 1 channel, or repeated into 3)."""
    state = _initial_state(source)
    own = model.backbone.state_dict()
    config = getattr(model.backbone, "pretrained_cfg", {}) or {}
    classifier, first_conv = config.get("classifier"), config.get("first_conv")
    is_head = lambda key: classifier is not None and key.startswith(f"{classifier}.")  # noqa: E731
    loaded, unexpected = {}, sorted(set(state) - set(own))
    for key in set(state) & set(own):
        value = state[key]
        if value.shape == own[key].shape:
            loaded[key] = value
        elif first_conv is not None and key == f"{first_conv}.weight" and value.shape[2:] == own[key].shape[2:]:
            loaded[key] = adapt_input_conv(own[key].shape[1], value)
        elif not is_head(key):
            raise UserError(f"init {source}: {key} has shape {tuple(value.shape)}, {model.spec.name} needs "
                            f"{tuple(own[key].shape)}; start from weights of the same model")
    missing = sorted(key for key in own if key not in loaded and not is_head(key))
    if missing or unexpected:
        raise UserError(f"init {source} does not hold {model.spec.name}'s weights (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); start from weights of the same model")
    model.backbone.load_state_dict(loaded, strict=False)


def _initial_state(source: str) -> dict[str, torch.Tensor]:
    """A backbone state dict from a stage folder, a weights file or a timm hub name."""
    path = Path(source)
    if path.is_dir() or path.is_file():
        path = exported_weights_file(path)
        try:
            if path.suffix == ".safetensors":
                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        except Exception as error:  # safetensors and torch raise several types for a damaged file
            # torch's own text for a file that is not a checkpoint runs to 8 lines and advises
            # weights_only=False: the error's type is what a user can act on
            raise UserError(f"init {source} cannot be read as weights ({type(error).__name__}); give a run's stage "
                            f"folder, a .safetensors file or a PyTorch state dict (.pth) of the same model") from None
        if not isinstance(state, dict):
            raise UserError(f"init {source} holds no state dict of tensors")
        check_finite(state, f"init {source}")
        return {key.removeprefix("backbone."): value for key, value in state.items()}  # ours wrap a timm backbone
    if is_hub_name(source):
        local = hub_weights_file(source)  # refused here, at once, when they can be neither read nor downloaded
        try:
            # a file already on disk is loaded as timm loads a download (its filter for old checkpoints,
            # and so on), without asking the hub first: offline, that question alone retries for a minute
            overlay = {"file": local} if local is not None else None
            return timm.create_model(source.removeprefix("timm/"), pretrained=True,
                                     pretrained_cfg_overlay=overlay).state_dict()
        except Exception as error:  # unknown tag, hub errors, a connection lost during the download
            raise UserError(f"init {source}: timm could not load its weights ({type(error).__name__}: {error}); "
                            f"{hub_fix(source.removeprefix('timm/'))}") from None
    raise UserError(f"init {source}: file not found")


def hub_fix(name: str) -> str:
    """What to do about hub weights that cannot be downloaded here."""
    return (f"download them where there is internet (python -c \"import timm; timm.create_model('{name}', "
            f"pretrained=True)\" fills ~/.cache/huggingface: copy that folder here, or save the model's state_dict "
            f"to a .safetensors file and point init at it), or run where huggingface.co is reachable with "
            f"HF_HUB_OFFLINE unset")


HUB_PROBE_SECONDS = 10  # one request, no retries: a reachable hub answers well within this


def is_hub_name(source: str) -> bool:
    """Whether an `init` entry that is no file on disk names timm hub weights (timm/NAME, or a bare NAME)."""
    return source.startswith("timm/") or "/" not in source


def check_initial_sources(sources: list[tuple[str, str]]) -> None:
    """Refuse `init` entries, (key, source), before anything trains (the rounds load theirs only when
    they start, hours in): a path that is not there, or hub weights that can be neither read nor
    downloaded."""
    for key, source in sources:
        if Path(source).exists():
            continue
        if source.startswith("timm/") or ("/" not in source and timm.is_model(source.split(".")[0])):
            hub_weights_file(source)
            continue
        raise UserError(f"{key}: {source} not found; give a run's stage folder, a weights file or a timm hub name "
                        f"(timm/...)")


def hub_weights_file(source: str) -> str | None:
    """A file on this machine holding the timm hub weights `source` names (Hugging Face's cache, or
    torch hub's for weights timm fetches by URL), or None when they are to be downloaded and their
    host answers. Refuse at once what timm cannot load: a name with no weights, or weights to
    download with the hub unreachable or HF_HUB_OFFLINE set, which timm would find out only after
    retrying each of its file names for about a minute, and a run only after training a round."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    name = source.removeprefix("timm/")
    if not timm.is_model(name.split(".")[0]):
        raise UserError(f"init {source}: neither a file nor a timm model name (e.g. timm/tf_efficientnet_b0.ns_jft_in1k)")
    try:
        config = get_pretrained_cfg(name)
    except RuntimeError as error:  # a tag the architecture does not have
        raise UserError(f"init {source}: {error} `timm.list_pretrained('{name.split('.')[0]}*')` lists its "
                        f"tags") from None
    if config is None or not (config.hf_hub_id or config.url):  # timm would build it with random weights, silently
        raise UserError(f"init {source}: timm has no pretrained weights for {name}; give a weights file, or a name "
                        f"from timm.list_pretrained()")
    repo, _, revision = (config.hf_hub_id or "").partition("@")  # timm's hf_split
    names = [config.hf_hub_filename] if config.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for filename in names if repo else []:
        cached = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(cached, str):
            return cached
    if config.url:
        cached = Path(get_dir()) / "checkpoints" / Path(urlparse(config.url).path).name  # timm's cache
        if cached.is_file():
            return str(cached)
    try:  # one question to the host the download would come from: is it there?
        if repo:
            get_hf_file_metadata(hf_hub_url(repo, names[0], revision=revision or None), timeout=HUB_PROBE_SECONDS)
        else:
            urlopen(Request(config.url, method="HEAD"), timeout=HUB_PROBE_SECONDS).close()
    except (HfHubHTTPError, HTTPError):
        return None  # the host answered (a file it lacks, a redirect): timm's download takes it from here
    except Exception as error:  # no network, DNS, a timeout, HF_HUB_OFFLINE (OfflineModeIsEnabled)
        raise UserError(f"init {source}: the weights of {name} must be downloaded, and {repo or config.url} cannot be "
                        f"reached ({type(error).__name__}); {hub_fix(name)}") from None
    return None
