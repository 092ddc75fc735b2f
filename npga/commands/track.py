"""`npga track --avatar A --video driver.mp4 --out codes.npz`: expression codes and head pose per frame of a
monocular video, fitted by rendering avatar A (npga/drive/fit.py has the method, npga/drive/video.py the loop
over the video and the tracking file it writes, which `reenact --tracking`, `render --tracking` and the capture
reader take unchanged). `npga track --avatar A --capture CAP --sequence SEQ --cameras S1 S2 ...`: the same from
several calibrated cameras of a capture's sequence at once (npga/drive/multiview.py), in the rig's world.

Every input is checked before the first fit; an interrupted run resumes at its next frame. Options, foreground
and output keys: docs/reenactment.md, docs/captures.md#the-tracking-file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np

from npga.avatar.model import Avatar
from npga.commands.common import Runtime, RuntimeOptions, open_avatar
from npga.config import OutFile, Range
from npga.data.cache import FrameCache, read_manifest
from npga.data.tracking import TrackingExtras
from npga.drive.fit import TrackConfig
from npga.drive.multiview import CaptureViews, track_capture
from npga.drive.video import DriverVideo, track_video


@dataclass(frozen=True)
class Config:
    avatar: Path
    """Avatar file (`RUN/avatar.npga`) or run folder whose head model renders the fits."""
    video: Path | None = None
    """The driver video (mp4): one face, the camera still. Or, instead, --capture with --sequence and --cameras."""
    capture: Path | None = None
    """A capture folder: tracks --sequence from its --cameras at once, frames read from its frame cache at the
    avatar's training size (`npga prepare`)."""
    sequence: str | None = None
    """With --capture: the sequence to track."""
    cameras: tuple[str, ...] = ()
    """With --capture: the serials of the cameras to fit to; the first films the tracking file."""
    from_scratch: bool = False
    """With --capture: leave the capture's own tracking of the sequence out and fit every frame from the previous
    one (the first from a search), as for a video: a tracking too far off, or in another head model's codes."""
    out: OutFile = Path("codes.npz")
    """Tracking file to write (`nphm_tracking.npz` layout plus the camera and fit residuals)."""
    fov: Annotated[float, Range(0, 180, above=True)] | None = None
    """Vertical field of view of the video's camera in degrees (default: fitted on the first frame)."""
    intrinsics: Path | None = None
    """JSON file {"K": 3x3 in pixels, "width": W, "height": H} of the video's camera, instead of --fov."""
    mask: Path | None = None
    """Foreground mask video (white = person), same size and length as --video (default: background estimate)."""
    track: TrackConfig = TrackConfig()
    fresh: bool = False
    """Start over instead of resuming an interrupted run on the same input."""
    runtime: Runtime = RuntimeOptions(precision="float32")  # float32: the fit follows the avatar's own gradients


def _check_arguments(cfg: Config) -> None:
    views = cfg.capture is not None or cfg.sequence is not None or bool(cfg.cameras)
    if (cfg.video is None) == (not views):
        raise ValueError("give --video VIDEO, or --capture CAP with --sequence SEQ and --cameras SERIAL... (one)")
    if views and (cfg.capture is None or cfg.sequence is None or not cfg.cameras):
        raise ValueError("--capture, --sequence and --cameras go together: give all three")
    if views and any(v is not None for v in (cfg.fov, cfg.intrinsics, cfg.mask)):
        raise ValueError("--fov, --intrinsics and --mask are for --video; a capture's cameras are calibrated")
    if cfg.from_scratch and not views:
        raise ValueError("--from-scratch is for --capture: a video has no tracking to leave out")
    if cfg.capture is not None and not Path(cfg.capture).is_dir():
        raise FileNotFoundError(f"--capture {cfg.capture}: no such folder")


def capture_cache(file: Path, avatar: Avatar, capture: Path) -> FrameCache:
    """`capture`'s frame cache at the avatar's training size: CAP/cache/WxH, as `npga prepare` names it."""
    camera = next(iter(avatar.cameras.values()))  # the rig's cameras share the training size
    cache = Path(capture) / "cache" / f"{camera.width}x{camera.height}"
    if read_manifest(cache) is None:
        raise FileNotFoundError(
            f"{capture}: no frame cache {cache.name} (the size {file} was trained at); run "
            f"`npga prepare --capture {capture} --height {camera.height}`"
        )
    return FrameCache.open(cache)


def main(cfg: Config) -> Path:
    _check_arguments(cfg)
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    if cfg.video is not None:
        driver = DriverVideo(video=cfg.video, fov=cfg.fov, intrinsics=cfg.intrinsics, mask=cfg.mask)
        out, source = track_video(driver, avatar, file, cfg.out, cfg.track, cfg.fresh), str(cfg.video)
    else:
        cache = capture_cache(file, avatar, cfg.capture)
        views = CaptureViews(cache, cfg.sequence, tuple(cfg.cameras), cfg.from_scratch)
        out = track_capture(views, avatar, file, cfg.out, cfg.track, cfg.fresh)
        source = f"{cfg.sequence} in cameras {' '.join(cfg.cameras)}"
    fits = TrackingExtras.load(out)
    residual, iou, K = fits.residual, fits.iou, fits.intrinsics
    print(
        f"tracked {len(residual)} frames of {source}: L1 residual {residual.mean():.4f} (max "
        f"{residual.max():.4f}), silhouette IoU {iou.mean():.3f} (min {iou.min():.3f}), focal {K[1, 1]:.1f} px"
    )
    for t in np.flatnonzero(fits.problem != ""):
        print(f"frame {t} did not converge: {fits.problem[t]}")
    print(f"wrote {out}")
    return out
