"""Where validation runs: one process, or one rank of a torchrun job (NCCL on GPU, gloo on CPU).

A failure on one rank ends every rank with the same exit code and one error line, printed by rank 0: the failing
rank hands its error over at the job's next collective step (`check_peers`, before each reduction), so a bad image
on rank 1 is reported as that image, not as a lost peer. Interruptions are deferred while ranks exchange errors.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from regnet_convert.errors import EXIT_INTERNAL, InputError
from regnet_convert.process import INTERRUPTING_SIGNALS, Ended, Interrupted, outcome

Failure = tuple[int, int, str | None]  # rank, exit code, error line


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


class PeerFailed(Exception):
    """Another rank failed: its failure, received at a collective step."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure)
        self.failure = failure


_SETTLED: dict = {
    "failure": None,
    "lost": False,
}  # once ranks have exchanged a failure, none of them waits for another exchange


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP back while ranks exchange their state (a half-done exchange would hang)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _exchange(mine: Failure | None) -> Failure | None:
    """Every rank's failure (None: none); the first failing rank's, or None when all are well."""
    states: list[Failure | None] = [None] * dist.get_world_size()
    with _signals_deferred():
        try:
            dist.all_gather_object(states, mine)
        except RuntimeError as exc:  # a peer vanished (killed, or done): nothing more can be agreed
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            lost = (-1, EXIT_INTERNAL, f"a peer process of the torchrun job was lost ({first})")
            _SETTLED["failure"], _SETTLED["lost"] = mine or lost, True  # our own error, if any, says more
            return _SETTLED["failure"]
        failures = [state for state in states if state is not None]
        _SETTLED["failure"] = failures[0] if failures else None
    return _SETTLED["failure"]


def check_peers() -> None:
    """A collective step: raise `PeerFailed` when any rank has failed since the last one."""
    if failure := _exchange(None):
        raise PeerFailed(failure)


def _ended(rank: int, error: BaseException) -> BaseException:
    """What this rank raises for a failure of the job: rank 0 reports the first failure (its own error as it
    is), the other ranks leave with the same code, quietly; every rank speaks when peers were lost."""
    failure = _SETTLED["failure"]
    if failure is None:  # this rank's own failure, not yet exchanged: hand it over at the peers' next step
        code, message = outcome(error)
        failure = _exchange((rank, code, message)) or (rank, code, message)
    failing_rank, code, message = failure
    if failing_rank == rank and (rank == 0 or _SETTLED["lost"]):
        return error
    return Ended(code, message if rank == 0 or _SETTLED["lost"] else None)


@contextmanager
def process_group(device: str = "auto") -> Iterator[Placement]:
    """Join the torchrun job when there is one, and leave it however the block ends (a failure on any rank ends
    every rank's block with it)."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda", "no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    opened = world_size > 1 and not dist.is_initialized()
    if opened:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    _SETTLED.update(failure=None, lost=False)
    try:
        rank = dist.get_rank() if world_size > 1 else 0
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            placement = Placement(rank, world_size, torch.device("cuda", local))
        else:
            placement = Placement(rank, world_size, torch.device("cpu"))
        try:
            yield placement
        except (Exception, KeyboardInterrupt, Interrupted) as error:
            if world_size == 1:
                raise
            raise _ended(rank, error) from None
    finally:
        if opened and dist.is_initialized():
            dist.destroy_process_group()
