"""`npga track --avatar A --video driver.mp4 --out codes.npz`: expression codes and head pose per frame of a
monocular video, fitted by rendering avatar A (npga/drive/fit.py has the method, npga/drive/video.py the loop
over the video and the tracking file it writes, which `reenact --tracking`, `render --tracking` and the capture
reader take unchanged).

Every input is checked before the first fit; an interrupted run resumes at its next frame. Options, foreground
and output keys: docs/reenactment.md, docs/captures.md#the-tracking-file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npga.commands.common import Runtime, RuntimeOptions, open_avatar
from npga.data.tracking import TrackingExtras
from npga.drive.fit import TrackConfig
from npga.drive.video import DriverVideo, track_video


@dataclass(frozen=True)
class Config:
    avatar: Path
    """Avatar file (`RUN/avatar.npga`) or run folder whose head model renders the fits."""
    video: Path
    """The driver video (mp4): one face, the camera still."""
    out: Path = Path("codes.npz")
    """Tracking file to write (`nphm_tracking.npz` layout plus the camera and fit residuals)."""
    fov: float | None = None
    """Vertical field of view of the video's camera in degrees (default: fitted on the first frame)."""
    intrinsics: Path | None = None
    """JSON file {"K": 3x3 in pixels, "width": W, "height": H} of the video's camera, instead of --fov."""
    mask: Path | None = None
    """Foreground mask video (white = person), same size and length as --video (default: background estimate)."""
    track: TrackConfig = TrackConfig()
    fresh: bool = False
    """Start over instead of resuming an interrupted run on the same video."""
    runtime: Runtime = RuntimeOptions(precision="float32")  # float32: the fit follows the avatar's own gradients


def main(cfg: Config) -> Path:
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    driver = DriverVideo(video=cfg.video, fov=cfg.fov, intrinsics=cfg.intrinsics, mask=cfg.mask)
    out = track_video(driver, avatar, file, cfg.out, cfg.track, cfg.fresh)
    fits = TrackingExtras.load(out)
    residual, iou, K = fits.residual, fits.iou, fits.intrinsics
    print(
        f"tracked {len(residual)} frames of {cfg.video}: L1 residual {residual.mean():.4f} (max "
        f"{residual.max():.4f}), silhouette IoU {iou.mean():.3f} (min {iou.min():.3f}), focal {K[1, 1]:.1f} px"
    )
    for t in np.flatnonzero(fits.problem != ""):
        print(f"frame {t} did not converge: {fits.problem[t]}")
    print(f"wrote {out}")
    return out
