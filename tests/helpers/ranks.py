"""Training on several processes for the tests: ranks spawned on the CPU (gloo), each one's end state saved."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.multiprocessing as mp

from npga.train import TrainConfig, build_trainer
from npga.train.distributed import RanksDiverged, process_group


class GaussianCounts:
    """A hook recording the number of Gaussians after every step."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def after_step(self, trainer, out) -> None:
        self.counts.append(out["n_gaussians"])

    def close(self, trainer) -> None:
        pass


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block, as every rank runs: a sum split over two threads rounds differently, and
    the runs compared with the ranks' must match them bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, size: int, port: int) -> dict[str, str]:
    """What torchrun sets for one rank on one machine."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(size),
    }


def _train_rank(rank: int, size: int, port: int, cfg: TrainConfig, results: Path, nudge: float) -> None:
    os.environ.update(rank_env(rank, size, port))
    torch.set_num_threads(1)
    counts = GaussianCounts()
    with process_group(cfg.device) as world:
        trainer = build_trainer(cfg, hooks=[counts], world=world)
        if rank == size - 1 and nudge:
            with torch.no_grad():
                trainer.params["means"][0] += nudge
        try:
            trainer.fit()
        except RanksDiverged as e:
            (results / f"rank{rank}.error").write_text(str(e))
            return
    torch.save({"state": trainer.state_dict(), "counts": counts.counts}, results / f"rank{rank}.pt")


def train_on_ranks(cfg: TrainConfig, size: int, results: Path, nudge: float = 0.0) -> None:
    """Train `cfg` on `size` spawned ranks; rank r leaves `results/rank{r}.pt` ({state, counts}) or, when the
    ranks diverged, `results/rank{r}.error`. `nudge`: added to one mean of the last rank before training."""
    results.mkdir(parents=True, exist_ok=True)
    mp.spawn(_train_rank, args=(size, free_port(), cfg, results, nudge), nprocs=size, join=True)
