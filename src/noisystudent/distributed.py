"""Process groups under `torchrun`, and the few collective decisions the pipeline needs.

One process per device; `torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK. Without them (a plain
`noisystudent run`), everything here is a single-process no-op. Backend: nccl on CUDA, gloo on
CPU. Only rank 0 writes files (logs, checkpoints, stores, reports); the others wait at barriers
and read what rank 0 wrote, so every stage's on-disk contract is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any_of(self, *flags: bool | torch.Tensor, device: torch.device) -> list[bool]:
        """Each flag, true on every rank when it is true on any rank: one small all-reduce and
        one host read for all of them (stop decisions all ranks share)."""
        tensor = torch.stack([torch.as_tensor(flag, device=device).float().reshape(()) for flag in flags])
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(value) for value in tensor.tolist()]


SINGLE = Distributed()


def init_from_environment(device_name: str) -> tuple[Distributed, str]:
    """Join the torchrun process group if there is one; return it and the device to use."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE, device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        # torchrun restarts (--max-restarts) reuse its store, where the crashed attempt's peer
        # addresses remain: a restarted worker may read one and fail with "connectFullMesh ...
        # Connection refused". A key prefix per attempt keeps each attempt's rendezvous apart.
        store, _, _ = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size,
                                store=dist.PrefixStore(f"noisystudent-attempt-{attempt}", store))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    return Distributed(rank, world_size, local_rank), device_name
