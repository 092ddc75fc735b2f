"""Training hooks: progress bar, JSONL log (+ curves PNG), validation PSNR, periodic checkpoints.

Each is optional and sees the trainer after every step; none is a branch inside the training loop. None reads
the step's device values more often than every `log_every` steps, and none draws while training waits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from npga.avatar import deform
from npga.io.plots import plot_training_curves
from npga.metrics import psnr
from npga.train.scalars import Value, to_host
from npga.train.trainer import Trainer
from npga.workers import worker_pool

log = logging.getLogger(__name__)


class ProgressBar:
    """tqdm bar with step, loss and PSNR (of every `log_every`-th step), number of Gaussians and it/s."""

    def __init__(self, start: int, total: int) -> None:
        self.bar = tqdm(initial=start, total=total, desc="train", unit="it", dynamic_ncols=True)

    def after_step(self, trainer: Trainer, out: dict[str, Value]) -> None:
        self.bar.update(1)
        if out["step"] % trainer.cfg.log_every == 0:
            shown = ("loss", "psnr") if "psnr" in out else ("loss_mouth", "mouth_psnr")  # the mouth phase's
            (now,) = to_host([{k: out[k] for k in shown}])
            loss, value = (now[k] for k in shown)
            self.bar.set_postfix({shown[0]: f"{loss:.4f}", shown[1]: f"{value:.2f}", "G": out["n_gaussians"]})

    def close(self, trainer: Trainer) -> None:
        self.bar.close()


class JsonlLog:
    """Every `every`-th step's values as one JSON line; averaging the last `every` steps smooths the curves.

    The window's device values are read at once when the record is written. The curves PNG is redrawn in a
    separate process after each validation (a redraw still running is not queued again) and at the end, so
    it can be watched during training without training waiting for it: in a thread, matplotlib held the
    interpreter lock the step needs to launch its kernels (on H100s the demo's steps were 70% of its wall time
    with the thread, 86% with the process, in two runs: benchmarks/train_overhead.py).
    """

    def __init__(self, path: Path, every: int, plot: Callable[..., object] = plot_training_curves) -> None:
        self.path, self.every, self.plot = path, every, plot  # `plot` (log, png, title=): picklable, a module's
        self.window: list[dict[str, Value]] = []
        self.failed: set[str] = set()  # what failed already (warned once; training goes on without it)
        self.last_time = time.perf_counter()
        self.plotter = worker_pool(1)  # spawn: imports only the plotting module; it dies with this process
        self.plotting: Future | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def after_step(self, trainer: Trainer, out: dict[str, Value]) -> None:
        self.window.append(out)
        if out["step"] % self.every and out["step"] != trainer.cfg.total_steps:
            return
        now = time.perf_counter()
        window = to_host(self.window)
        keys = dict.fromkeys(k for w in window for k in w if k not in ("step", "n_gaussians"))
        rec = {k: float(np.mean([w[k] for w in window if k in w])) for k in keys}
        rec |= {
            "step": out["step"],
            "n_gaussians": out["n_gaussians"],
            "it_s": len(self.window) / (now - self.last_time),
        }
        self.window, self.last_time = [], now
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as e:
            self._failed("the log", e)
        if self.plotting is not None and self.plotting.done() and self.plotting.exception() is not None:
            self._failed("the curves", self.plotting.exception())
        if "val_psnr" in rec and (self.plotting is None or self.plotting.done()):  # the curves follow the run
            self.plotting = self.plotter.submit(self.plot, self.path, trainer.run.curves, title=str(trainer.cfg.out))

    def close(self, trainer: Trainer) -> None:
        self.plotter.shutdown(wait=True)
        try:
            if self.plotting is not None:
                self.plotting.result()
            if self.path.is_file():  # a record being appended meanwhile is a torn last line, which `read_log` skips
                self.plot(self.path, trainer.run.curves, title=str(trainer.cfg.out))
        except Exception as e:  # the curves are a view of the log: losing them loses no training
            self._failed("the curves", e)

    def _failed(self, what: str, e: BaseException) -> None:
        """Warn once per kind of failure: the log and its curves are for watching a run, never a reason to stop it
        (or to hide why it stopped: checkpoints raise)."""
        if what not in self.failed:
            self.failed.add(what)
            log.warning("could not write %s of %s (%s); training goes on without it", what, self.path.parent, e)


class Validation:
    """PSNR on a held-out camera every `every` steps, added to the step's values (`val_psnr`, and
    `val_psnr_heldout_seq` for a held-out sequence): the curve that says whether the avatar generalises.

    Views: the middle frame of the first training (and held-out) sequence in the first held-out camera
    that has frames (a training camera if none has).
    """

    def __init__(self, trainer: Trainer, every: int) -> None:
        self.every = every
        split, cache = trainer.split, trainer.cache
        held = [s for s in split.heldout_serials if s in cache.serials]
        serial = held[0] if held else trainer.train_serials[0]
        seqs = {"val_psnr": split.train_sequences[0]}
        if split.heldout_sequences and split.heldout_sequences[0] in cache.sequences:
            seqs["val_psnr_heldout_seq"] = split.heldout_sequences[0]
        self.batches = {name: trainer.make_batch(seq, cache.n_frames(seq) // 2, [serial]) for name, seq in seqs.items()}

    def after_step(self, trainer: Trainer, out: dict[str, Value]) -> None:
        if not self.every or (out["step"] % self.every and out["step"] != trainer.cfg.total_steps):
            return
        with torch.no_grad():
            for name, b in self.batches.items():
                rgb, _, _ = trainer.rasterize(deform(trainer.params, trainer.nets, *trainer.posed(b)), b)
                out[name] = psnr(rgb.clamp(0, 1), b.rgb).mean()  # read with the log's window

    def close(self, trainer: Trainer) -> None:
        pass


class PeriodicCheckpoint:
    def __init__(self, every: int) -> None:
        self.every = every

    def after_step(self, trainer: Trainer, out: dict[str, Value]) -> None:
        if out["step"] % self.every == 0 and out["step"] < trainer.cfg.total_steps:
            trainer.save_checkpoint()

    def close(self, trainer: Trainer) -> None:
        pass
