"""`npga reenact --avatar B (--video driver.mp4 --track-with A | --tracking codes.npz) --out OUT`: drive avatar
B with codes (and head motion) tracked from a video, by `npga track` with the driver's own avatar A, or by any
tracker that writes our `nphm_tracking.npz` layout.

Writes OUT/reenact.mp4 (from the driver's camera, else B's frontal camera), OUT/novel_views.mp4 (a slow orbit)
and OUT/side_by_side.mp4 (driver | reenactment | novel view; the driver panel only when --video is given), and
OUT/tracking.npz when it tracks. Every input is checked before tracking or rendering starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from tqdm import tqdm

from npga.cameras import orbit_cameras
from npga.commands.common import Runtime, RuntimeOptions, open_avatar
from npga.config import SIGNED, OutFolder, Positive, Range
from npga.drive.fit import TrackConfig
from npga.drive.reenact import (
    check_expression_space,
    driver_camera,
    driving_codes,
    head_centers,
    reenactment_camera,
    view_up,
)
from npga.drive.video import DriverVideo, track_video
from npga.io.video import iter_video, probe_video, to_uint8, write_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    avatar: Path
    """Avatar file or run folder to drive (B)."""
    out: OutFolder
    """Folder for reenact.mp4, novel_views.mp4, side_by_side.mp4 (and tracking.npz when tracking here)."""
    video: Path | None = None
    """The driver video: tracked with --track-with, or shown beside a --tracking file made from it."""
    track_with: Path | None = None
    """Avatar (file or run folder) of the driver's own face, of B's head model, that tracks --video."""
    tracking: Path | None = None
    """Tracking file (`nphm_tracking.npz` layout) that drives B, instead of tracking here."""
    head_motion: Literal["driver", "none"] = "driver"
    """driver: B moves its head as the driver does; none: B keeps the driver's first head pose."""
    orbit_degrees: Annotated[float, SIGNED] = 30.0
    """Largest angle of the novel view's orbit to either side of the reenactment camera."""
    height: Annotated[int, Range(2)] | None = None
    """Height of the videos in pixels (default: the driver video's, else B's training size)."""
    fps: Positive | None = None
    """Frame rate of the videos (default: the driver video's, else 25)."""
    fov: Annotated[float, Range(0, 180, above=True)] | None = None
    """With --track-with: the driver camera's vertical field of view in degrees (default: fitted)."""
    intrinsics: Path | None = None
    """With --track-with: JSON {"K": 3x3, "width": W, "height": H} of the driver camera."""
    mask: Path | None = None
    """With --track-with: foreground mask video of the driver (default: background estimate)."""
    track: TrackConfig = TrackConfig()
    runtime: Runtime = RuntimeOptions()


def _check_arguments(cfg: Config) -> None:
    if (cfg.tracking is None) == (cfg.track_with is None):
        raise ValueError("give --tracking FILE, or --video VIDEO with --track-with AVATAR (one of the two)")
    if cfg.track_with is not None and cfg.video is None:
        raise ValueError("--track-with needs the --video it tracks")
    if cfg.tracking is not None and any(v is not None for v in (cfg.fov, cfg.intrinsics, cfg.mask)):
        raise ValueError("--fov, --intrinsics and --mask are for tracking (--track-with), not for --tracking")


def main(cfg: Config) -> list[Path]:
    """Writes the three videos (and the tracking file when tracking); returns the videos' paths."""
    _check_arguments(cfg)
    file_b, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    info = probe_video(cfg.video) if cfg.video is not None else None
    tracking = cfg.tracking
    if cfg.track_with is not None:
        file_a, driver_avatar = open_avatar(cfg.track_with, cfg.runtime.device)
        a_type = str(driver_avatar.head_model.get("type", ""))
        check_expression_space(str(file_a), a_type, driver_avatar.config.expression_dim, avatar, str(file_b))
        tracking = cfg.out / "tracking.npz"
        video = DriverVideo(video=cfg.video, fov=cfg.fov, intrinsics=cfg.intrinsics, mask=cfg.mask)
        track_video(video, driver_avatar, file_a, tracking, cfg.track)
    codes, poses, source = driving_codes(avatar, str(file_b), None, tracking)
    if info is not None and info.n_frames != len(codes):
        raise ValueError(f"{tracking}: {len(codes)} frames of codes, the video {cfg.video} has {info.n_frames}")
    if cfg.head_motion == "none":
        poses = poses[:1].expand_as(poses)
    driver = driver_camera(tracking)
    camera = reenactment_camera(avatar, driver, cfg.height)
    center = head_centers(avatar, poses).mean(0)  # (3,)
    orbit = orbit_cameras(camera, center, view_up(avatar, driver), len(codes), cfg.orbit_degrees)
    driver_frames = iter_video(cfg.video) if cfg.video is not None else None
    reenacted, novel, both = [], [], []
    for t in tqdm(range(len(codes)), desc="reenact", unit="frame"):
        rgb = avatar.render_code(codes[t], poses[t], [camera, orbit[t]])[0]  # one deformation, both views
        reenacted.append(to_uint8(rgb[0].cpu().numpy()))
        novel.append(to_uint8(rgb[1].cpu().numpy()))
        panels = [reenacted[-1], novel[-1]]
        if driver_frames is not None:
            frame = next(driver_frames)
            panels.insert(0, cv2.resize(frame, (camera.width, camera.height), interpolation=cv2.INTER_AREA))
        both.append(np.concatenate(panels, axis=1))  # (H, 2 or 3 W, 3)
    fps = cfg.fps or (info.fps if info is not None else 25.0)
    paths = [cfg.out / "reenact.mp4", cfg.out / "novel_views.mp4", cfg.out / "side_by_side.mp4"]
    for path, frames in zip(paths, (reenacted, novel, both), strict=True):
        write_video(path, frames, fps=fps)
    print(f"drove {file_b} with {len(codes)} frames of {source} (head motion: {cfg.head_motion})")
    for p in paths:
        print(f"wrote {p}")
    return paths
