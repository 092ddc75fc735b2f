"""`npga eval`: score a trained run on its held-out cameras and sequences and write the report.

Everything evaluation needs comes from the run folder: its config (capture, background), its split
(which cameras and sequences were never trained on) and its newest checkpoint. The report lands in
`RUN/eval/`: metrics.json, per_frame.csv, one comparison grid per camera, a side-by-side video per split
and the training curves.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from npga.config import DeviceName, resolve_device
from npga.evaluate import evaluate, write_report
from npga.io.plots import plot_training_curves
from npga.metrics import LPIPS
from npga.run import Avatar, load_run
from npga.train import LOG_FILE

log = logging.getLogger(__name__)

EVAL_DIR = "eval"
DEFAULT_SPLITS = ("heldout_cameras", "heldout_sequences")
SplitName = Literal["heldout_cameras", "heldout_sequences", "train", "all"]


@dataclass(frozen=True)
class EvalConfig:
    run: Path
    """Run folder written by `npga train`."""
    split: tuple[SplitName, ...] = ()
    """Splits to score: heldout_cameras (training sequences, never-seen cameras), heldout_sequences (new
    expressions, all cameras), train, all. Default: the first two, those that have frames (NeRSemble
    benchmark data ships no frames of its hold-out cameras: `npga submit` is scored by the benchmark)."""
    every: int = 1
    """Score every n-th frame (1: all; larger for a quick look)."""
    capture: Path | None = None
    """The capture's folder when it moved since training (default: the one the run recorded)."""
    checkpoint: Path | None = None
    """Checkpoint to score (default: the run's newest)."""
    out: Path | None = None
    """Report folder (default: RUN/eval)."""
    device: DeviceName = "auto"


def run_eval(cfg: EvalConfig) -> dict:
    """`npga eval`: returns the metrics written to metrics.json."""
    if cfg.every < 1:
        raise ValueError(f"every must be at least 1, got {cfg.every}")
    device = resolve_device(cfg.device)
    avatar = load_run(cfg.run, device=device, checkpoint=cfg.checkpoint, capture=cfg.capture)
    if cfg.split:  # asked for: each must have frames, checked before anything is rendered
        splits = list(cfg.split)
        for name in splits:
            if not _has_frames(avatar, name):
                sequences, serials = avatar.split.eval_views(name, avatar.cache.serials)
                raise ValueError(f"{cfg.run}: split {name!r} has no frames to evaluate (sequences {list(sequences)}, "
                                 f"cameras with frames {list(serials)}, cache {avatar.cache.root})")  # fmt: skip
    else:
        splits = [name for name in DEFAULT_SPLITS if _has_frames(avatar, name)]
        for name in DEFAULT_SPLITS:
            if name not in splits:
                log.warning("%s: split %s has no frames in %s; not scored", cfg.run, name, avatar.cache.root)
        if not splits:
            raise ValueError(f"{cfg.run}: neither of {DEFAULT_SPLITS} has frames in {avatar.cache.root}")
    lpips = LPIPS(device)
    if not lpips.available:
        log.warning("%s; LPIPS is reported as null", lpips.reason)
    background = avatar.background.cpu()
    results = [
        evaluate(avatar.render, avatar.cache, avatar.split, name, cfg.every, lpips, background) for name in splits
    ]
    out = Path(cfg.out) if cfg.out is not None else Path(cfg.run) / EVAL_DIR
    metrics = write_report(out, results)
    meta = {"run": str(cfg.run), "step": avatar.step, "capture": str(avatar.cfg.capture), "every": cfg.every}
    (out / "eval_info.json").write_text(json.dumps(meta, indent=2))
    if (Path(cfg.run) / LOG_FILE).is_file():
        plot_training_curves(Path(cfg.run) / LOG_FILE, out / "training_curves.png", title=str(cfg.run))
    _print_summary(metrics, out, avatar.step)
    return metrics


def _has_frames(avatar: Avatar, split: str) -> bool:
    sequences, serials = avatar.split.eval_views(split, avatar.cache.serials)
    return bool(serials) and any(s in avatar.cache.sequences and avatar.cache.n_frames(s) for s in sequences)


def _print_summary(metrics: dict, out: Path, step: int) -> None:
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    print(f"evaluated step {step}; report in {out}")
    print(f"{'split':<20} {'frames':>7} {'PSNR':>7} {'SSIM':>7} {'LPIPS':>7}")
    for name, m in metrics.items():
        print(f"{name:<20} {m['n_frames']:>7} {fmt(m['psnr'], '.2f'):>7} {fmt(m['ssim'], '.4f'):>7} "
              f"{fmt(m['lpips'], '.4f'):>7}")  # fmt: skip
