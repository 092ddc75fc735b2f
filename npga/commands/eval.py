"""`npga eval AVATAR_OR_RUN`: score an avatar on its held-out cameras and sequences and write the report.

The avatar file says what it was trained on (its split and the frame cache); ground truth comes from that
cache (`--capture` when the capture moved), renders from the avatar. The report lands next to the avatar
(`RUN/eval/`): metrics.json, per_frame.csv, one comparison grid per camera, a side-by-side video per split
and, for a run folder, the training curves.

With `--refine-tracking` the held-out sequences are first tracked anew from the training cameras' frames only
(npga/drive/multiview.py, starting from the capture's tracking) and scored driven by that tracking; the held-out
cameras' frames stay ground truth, never an input. The fitted tracking is saved beside the report.
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
from npga.config import AtLeast1, OutFolder
from npga.data.cache import FrameCache
from npga.data.tracking import Tracking
from npga.drive.fit import TrackConfig
from npga.drive.multiview import CaptureViews, track_capture
from npga.evaluate import INFO_FILE, evaluate, write_report
from npga.io.atomic import write_text_atomic
from npga.io.plots import plot_training_curves
from npga.metrics import LPIPS
from npga.runs import RunLayout, run_of

log = logging.getLogger(__name__)

DEFAULT_SPLITS = ("heldout_cameras", "heldout_sequences")
SplitName = Literal["heldout_cameras", "heldout_sequences", "train", "all"]
REFINED_TRACKING = "refined_tracking"  # the report's folder of the held-out sequences' fitted tracking files
# Which tracking drove a split's renders (metrics.json "tracking"): the avatar's own, as trained or as refined in
# training (--refine-tracking of `npga train`); fitted here from the training cameras (--refine-tracking of `npga
# eval`); the capture's, for a sequence the avatar does not hold.
AS_TRAINED, REFINED_IN_TRAINING = "as trained", "refined in training"
REFINED, CAPTURE = "refined from the training cameras", "capture"


@dataclass(frozen=True)
class Config:
    avatar: tyro.conf.Positional[Path]
    """Avatar file (`RUN/avatar.npga`) or run folder written by `npga train`."""
    split: tuple[SplitName, ...] = ()
    """Splits to score: heldout_cameras (training sequences, never-seen cameras), heldout_sequences (new
    expressions, all cameras), train, all. Default: the first two, those that have frames (NeRSemble
    benchmark data ships no frames of its hold-out cameras: `npga submit` is scored by the benchmark)."""
    every: AtLeast1 = 1
    """Score every n-th frame (1: all; larger for a quick look)."""
    capture: Path | None = None
    """The capture's folder when it moved since training (default: the one the avatar recorded)."""
    out: OutFolder | None = None
    """Report folder (default: eval/ next to the avatar file, i.e. RUN/eval)."""
    refine_tracking: bool = False
    """Fit the held-out sequences' codes and head poses to the training cameras' frames first (from the capture's
    tracking, as `npga track --capture` does), and score those sequences driven by the fit; saved as
    OUT/refined_tracking/SEQ.npz. The held-out cameras' frames are never read for it."""
    track: TrackConfig = TrackConfig()
    """The fit of --refine-tracking."""
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
    out = Path(cfg.out) if cfg.out is not None else RunLayout(file.parent).eval
    fitted = {}
    if cfg.refine_tracking:
        fitted = refine_heldout_tracking(
            file, avatar, cache, _refined_sequences(file, avatar, cache, splits), out / REFINED_TRACKING, cfg.track
        )
    render = tracked_renderer(avatar, cache, fitted)
    tracking = {name: _tracking_used(avatar, cache, name, tuple(fitted)) for name in splits}
    lpips = LPIPS(avatar.device)
    if not lpips.available:
        log.warning("%s; LPIPS is reported as null", lpips.reason)
    background = avatar.background.cpu()
    results = [evaluate(render, cache, avatar.split, name, cfg.every, lpips, background) for name in splits]
    metrics = write_report(out, results, tracking=tracking)
    meta = {
        "avatar": str(file),
        "step": avatar.step,
        "cache": str(cache.root),
        "every": cfg.every,
        "precision": avatar.precision,
    }
    write_text_atomic(out / INFO_FILE, json.dumps(meta, indent=2))
    run = run_of(file)
    if run is not None and run.log.is_file():
        plot_training_curves(run.log, out / "training_curves.png", title=str(run.root))
    _print_summary({name: metrics[name] for name in splits}, out, avatar.step)
    return metrics


def _refined_sequences(file: Path, avatar: Avatar, cache: FrameCache, splits: list[str]) -> tuple[str, ...]:
    """The held-out sequences that the splits score (and the cache has), checked before anything is fitted."""
    scored = {seq for name in splits for seq in avatar.split.eval_views(name, cache.serials)[0]}
    refined = tuple(s for s in avatar.split.heldout_sequences if s in scored and s in cache.sequences)
    if not refined:
        raise ValueError(
            f"--refine-tracking refits the held-out sequences {list(avatar.split.heldout_sequences)}, which none of "
            f"the splits {splits} scores from {cache.root}"
        )
    if not any(s in cache.serials for s in avatar.split.train_serials):
        raise ValueError(f"--refine-tracking: {cache.root} has no frames of {file}'s training cameras to fit to")
    return refined


def refine_heldout_tracking(
    file: Path, avatar: Avatar, cache: FrameCache, sequences: tuple[str, ...], folder: Path, cfg: TrackConfig
) -> dict[str, Tracking]:
    """Each sequence's codes and head poses fitted to the training cameras' frames only, from the capture's
    tracking: the held-out cameras' frames are ground truth, never an input. Written as folder/SEQ.npz (an
    interrupted fit resumes)."""
    serials = tuple(s for s in avatar.split.train_serials if s in cache.serials)
    fitted = {}
    for seq in sequences:
        path = track_capture(CaptureViews(cache, seq, serials), avatar, file, folder / f"{seq}.npz", cfg)
        fitted[seq] = Tracking.load(path)
    return fitted


def _tracking_used(avatar: Avatar, cache: FrameCache, split: str, refined: tuple[str, ...]) -> str:
    """Which tracking drove a split's renders, in words for metrics.json (several kinds joined by '; ')."""

    def kind(seq: str) -> str:
        if seq in refined:
            return REFINED
        if seq not in avatar.motions:
            return CAPTURE
        return REFINED_IN_TRAINING if avatar.motions[seq].refined else AS_TRAINED

    return "; ".join(sorted({kind(s) for s in avatar.split.eval_views(split, cache.serials)[0]}))


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
