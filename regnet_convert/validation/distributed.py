"""Where validation runs: one process, or one rank of a torchrun job (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from regnet_convert.errors import InputError


@dataclass(frozen=True)
class Placement:
    """This process's rank, the job's size and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """The rank that prints and writes results."""
        return self.rank == 0


@contextmanager
def process_group(device: str = "auto") -> Iterator[Placement]:
    """Join the torchrun job when there is one, and leave it however the block ends."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda", "no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    opened = world_size > 1 and not dist.is_initialized()
    if opened:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        rank = dist.get_rank() if world_size > 1 else 0
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            yield Placement(rank, world_size, torch.device("cuda", local))
        else:
            yield Placement(rank, world_size, torch.device("cpu"))
    finally:
        if opened and dist.is_initialized():
            dist.destroy_process_group()
