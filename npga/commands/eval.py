"""`npga eval AVATAR_OR_RUN`: score an avatar on its held-out cameras and sequences and write the report.

The avatar file says what it was trained on (its split and the frame cache); ground truth comes from that
cache (`--capture` when the capture moved), renders from the avatar. The report lands next to the avatar
(`RUN/eval/`): metrics.json, per_frame.csv, one comparison grid per camera, a side-by-side video per split
and, for a run folder, the training curves.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from npga.avatar.model import Avatar
from npga.commands.common import Runtime, RuntimeOptions, open_avatar, open_training_cache, tracked_renderer
from npga.data.cache import FrameCache
from npga.evaluate import evaluate, write_report
from npga.io.atomic import write_text_atomic
from npga.io.plots import plot_training_curves
from npga.metrics import LPIPS
from npga.runs import RunLayout, run_of

log = logging.getLogger(__name__)

DEFAULT_SPLITS = ("heldout_cameras", "heldout_sequences")
SplitName = Literal["heldout_cameras", "heldout_sequences", "train", "all"]


@dataclass(frozen=True)
class Config:
    avatar: tyro.conf.Positional[Path]
    """Avatar file (`RUN/avatar.npga`) or run folder written by `npga train`."""
    split: tuple[SplitName, ...] = ()
    """Splits to score: heldout_cameras (training sequences, never-seen cameras), heldout_sequences (new
    expressions, all cameras), train, all. Default: the first two, those that have frames (NeRSemble
    benchmark data ships no frames of its hold-out cameras: `npga submit` is scored by the benchmark)."""
    every: int = 1
    """Score every n-th frame (1: all; larger for a quick look)."""
    capture: Path | None = None
    """The capture's folder when it moved since training (default: the one the avatar recorded)."""
    out: Path | None = None
    """Report folder (default: eval/ next to the avatar file, i.e. RUN/eval)."""
    runtime: Runtime = RuntimeOptions(precision="float32")  # float32: the scores are the avatar's own


def main(cfg: Config) -> dict:
    """Returns the metrics written to metrics.json."""
    if cfg.every < 1:
        raise ValueError(f"every must be at least 1, got {cfg.every}")
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    cache = open_training_cache(file, avatar, cfg.capture)
    if cfg.split:  # asked for: each must have frames, checked before anything is rendered
        splits = list(cfg.split)
        for name in splits:
            if not _has_frames(avatar, cache, name):
                sequences, serials = avatar.split.eval_views(name, cache.serials)
                raise ValueError(
                    f"{file}: split {name!r} has no frames to evaluate (sequences {list(sequences)}, "
                    f"cameras with frames {list(serials)}, cache {cache.root})"
                )
    else:
        splits = [name for name in DEFAULT_SPLITS if _has_frames(avatar, cache, name)]
        for name in DEFAULT_SPLITS:
            if name not in splits:
                log.warning("%s: split %s has no frames in %s; not scored", file, name, cache.root)
        if not splits:
            raise ValueError(f"{file}: neither of {DEFAULT_SPLITS} has frames in {cache.root}")
    lpips = LPIPS(avatar.device)
    if not lpips.available:
        log.warning("%s; LPIPS is reported as null", lpips.reason)
    background = avatar.background.cpu()
    render = tracked_renderer(avatar, cache)
    results = [evaluate(render, cache, avatar.split, name, cfg.every, lpips, background) for name in splits]
    out = Path(cfg.out) if cfg.out is not None else RunLayout(file.parent).eval
    metrics = write_report(out, results)
    meta = {
        "avatar": str(file),
        "step": avatar.step,
        "cache": str(cache.root),
        "every": cfg.every,
        "precision": avatar.precision,
    }
    write_text_atomic(out / "eval_info.json", json.dumps(meta, indent=2))
    run = run_of(file)
    if run is not None and run.log.is_file():
        plot_training_curves(run.log, out / "training_curves.png", title=str(run.root))
    _print_summary(metrics, out, avatar.step)
    return metrics


def _has_frames(avatar: Avatar, cache: FrameCache, split: str) -> bool:
    sequences, serials = avatar.split.eval_views(split, cache.serials)
    return bool(serials) and any(s in cache.sequences and cache.n_frames(s) for s in sequences)


def _print_summary(metrics: dict, out: Path, step: int) -> None:
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
    print(f"evaluated step {step}; report in {out}")
    print(f"{'split':<20} {'frames':>7} {'PSNR':>7} {'SSIM':>7} {'LPIPS':>7}")
    for name, m in metrics.items():
        print(
            f"{name:<20} {m['n_frames']:>7} {fmt(m['psnr'], '.2f'):>7} {fmt(m['ssim'], '.4f'):>7} "
            f"{fmt(m['lpips'], '.4f'):>7}"
        )
