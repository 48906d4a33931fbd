"""Batched, un-noised inference: eval mode, inference_mode, clean inputs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from ..errors import UserError

PRECISIONS = ("auto", "bf16", "fp32")  # `precision` in the config: set_precision says what each means


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available; use device=cpu or auto")
    return device


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process (`threads` in the config); None keeps torch's default."""
    if threads:
        torch.set_num_threads(threads)


def set_compute(threads: int | None, precision: str) -> None:
    """The config's process-wide compute settings (`threads`, `precision`), set by every command
    that trains or runs a model before it does."""
    set_threads(threads)
    set_precision(precision)


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N, C, H, W] (or float already in [0, 1]) -> float [0, 1] on device, channels_last
    (faster convolutions on CPU and GPU)."""
    x = images.to(device, non_blocking=True)
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last)


_precision = "auto"  # set_precision's; every autocast reads it, as torch's own precision settings


def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX units: there our training stage runs 1.3-1.4x and labeling 2-2.6x faster
    in bf16 than in fp32 (resnet_small_32 and resnet_medium_32, benchmarks/results/cpu_precision.json);
    elsewhere oneDNN emulates bf16, slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def set_precision(name: str) -> None:
    """The process's compute precision (`precision` in the config): bf16 autocast (parameters,
    optimizer state and losses stay fp32; bf16 needs no loss scaling) or fp32. `auto` is bf16 on
    CUDA and on a CPU with native bf16 units, fp32 elsewhere."""
    global _precision
    if name not in PRECISIONS:
        raise UserError(f"precision {name!r} is not one of {', '.join(PRECISIONS)}")
    _precision = name


def resolved_precision(device: torch.device) -> str:
    """bf16 or fp32: what `autocast(device)` computes in under the process's precision."""
    if _precision != "auto":
        return _precision
    native = device.type == "cuda" or (device.type == "cpu" and _cpu_has_native_bf16())
    return "bf16" if native else "fp32"


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolved_precision(device) == "bf16")


@contextmanager
def inference(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Un-noised prediction: eval mode (dropout, stochastic depth off), no autograd; the model's
    mode is restored afterwards. The model moves to `device` in channels_last, as training leaves
    it: inputs are channels_last (to_model_input), and a contiguous model would run its
    convolutions 15 to 20% slower on CPU (resnet_tiny_32 and resnet_small_32 at batch 256)."""
    was_training = model.training
    model.to(device=device, memory_format=torch.channels_last)
    model.eval()
    try:
        with torch.inference_mode(), autocast(device):
            yield
    finally:
        model.train(was_training)


@contextmanager
def noised_inference(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Prediction with the model's noise on (dropout and stochastic depth active), BatchNorm on
    its running statistics, no autograd: the noised teacher of the paper's ablation."""
    with inference(model, device):
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
        yield


def iterate_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
                   desc: str = "predict") -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start, float32 logits on CPU) per batch with the model in eval mode."""
    with inference(model, device):
        for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None):
            yield start, model(to_model_input(images[start:start + batch_size], device)).float().cpu()


def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
                   desc: str = "predict") -> torch.Tensor:
    return torch.cat([logits for _, logits in iterate_logits(model, images, batch_size, device, desc)])
