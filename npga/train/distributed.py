"""Several processes training one avatar (`torchrun ... -m npga.cli train`): data parallel, a full copy on each rank.

Every rank holds all Gaussians, networks, optimiser states and tracking corrections, draws the same frames of a
step from the shared seed and renders its share of them. Why not DistributedDataParallel: densification replaces
the Gaussian parameters between steps, and DDP binds its buckets to parameters once. Instead one all-reduce per
step sums one flat buffer of every optimised tensor's gradient, the densification statistics and the logged
values (`sum_`): every rank then takes the same optimiser step and grows and prunes the same Gaussians, and no
other numbers are exchanged. What would make ranks differ unseen is caught every log interval by comparing a
fingerprint (count and sums of the means, `check_same`); a stop request (SIGTERM, Ctrl-C) on any rank is shared
after every step over a group of host memory (`anyone`), so all ranks stop after the same step. docs/distributed.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from npga.config import resolve_device

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
"""What torchrun sets for each process (with MASTER_ADDR and MASTER_PORT)."""
LEAVE_TIMEOUT_S = 30
"""How long a rank leaving the process group waits for the others before it tears its part down alone."""


class RanksDiverged(ValueError):
    """The ranks no longer hold the same avatar (a ValueError: the CLI reports it in one line)."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks training one avatar."""

    rank: int
    size: int
    local_rank: int
    device: torch.device
    host_group: Any  # a gloo group for flags in host memory (the default group when it is gloo)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, shows progress and writes checkpoints and the avatar file."""
        return self.rank == 0

    def share(self, k: int) -> slice:
        """This rank's items of a step's `k` (a multiple of the ranks): a block, so rank order is item order."""
        n = k // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def sum_(self, tensors: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its sum over the ranks, all in one all-reduce; a None (a parameter without a
        gradient here) is sent as zeros of `like`'s shape and stays None."""
        parts = [
            (t if t is not None else torch.zeros_like(ref)).reshape(-1) for t, ref in zip(tensors, like, strict=True)
        ]
        flat = torch.cat(parts)
        dist.all_reduce(flat)
        with torch.no_grad():
            for t, part in zip(tensors, flat.split([p.numel() for p in parts]), strict=True):
                if t is not None:
                    t.copy_(part.view_as(t))

    def anyone(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank (host memory only: it waits for the other ranks' hosts, never for a
        device)."""
        t = torch.tensor([float(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.host_group)
        return bool(t.item())

    def barrier(self) -> None:
        dist.barrier(group=self.host_group)

    def check_same(self, means: torch.Tensor, step: int) -> None:
        """Raise `RanksDiverged` unless every rank has as many Gaussians and the same sums of their means."""
        with torch.no_grad():
            mine = torch.cat([torch.tensor([float(len(means))]), means.double().sum(0).cpu()])  # (4,)
        every = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(every, mine, group=self.host_group)
        if all(torch.equal(every[0], other) for other in every[1:]):
            return
        groups: dict[tuple[float, ...], list[int]] = {}
        for rank, fp in enumerate(every):
            groups.setdefault(tuple(fp.tolist()), []).append(rank)
        described = "; ".join(
            f"rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {int(fp[0])} Gaussians, means summing to "
            f"({fp[1]:.9g}, {fp[2]:.9g}, {fp[3]:.9g})"
            for fp, r in groups.items()
        )
        raise RanksDiverged(
            f"the ranks hold different avatars at step {step} ({described}); they must take identical steps "
            "(same code, config, library versions and GPU kind on every rank)"
        )


@contextmanager
def main_first(world: World | None) -> Iterator[None]:
    """Rank 0 runs the block first (preparing the frame cache, distilling, writing the run's config), the other
    ranks after it has finished, so they only read what it wrote."""
    if world is not None and not world.is_main:
        world.barrier()
    yield
    if world is not None and world.is_main:
        world.barrier()


def launched() -> bool:
    """Whether this process is one of several started by torchrun (its environment variables are set)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device: str) -> Iterator[World | None]:
    """The ranks of a torchrun launch for the block (None: one process, not launched by torchrun or with one
    rank): NCCL on CUDA, each rank on GPU LOCAL_RANK, gloo on the CPU."""
    if not launched():
        yield None
        return
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} are not set: start "
            "the ranks with torchrun (docs/distributed.md)"
        )
    rank, size, local = (int(os.environ[k]) for k in ENV)
    cuda = resolve_device(device) == "cuda"
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} has no GPU (this machine shows {torch.cuda.device_count()}): start at most "
                "one rank per GPU (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local)
    where = torch.device("cuda", local) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=size)
    host = dist.new_group(backend="gloo") if cuda else dist.group.WORLD
    try:
        yield World(rank=rank, size=size, local_rank=local, device=where, host_group=host)
    finally:
        # Leave together: a rank tearing gloo down while a peer's transport threads still serve the last
        # collective made that peer abort (SIGABRT) under load. A peer that died or hangs is waited for no longer.
        try:
            dist.monitored_barrier(group=host, timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
        except RuntimeError:
            pass
        dist.destroy_process_group()
