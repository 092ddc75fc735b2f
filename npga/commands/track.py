"""`npga track --avatar A --video driver.mp4 --out codes.npz`: expression codes and head pose per frame of a
monocular video, fitted by rendering avatar A (npga/track.py has the method).

The output is a tracking file in our `nphm_tracking.npz` layout, so `npga reenact --tracking`, `npga render
--tracking` and the capture reader take it unchanged. Its world frame is the video's camera; beside the
layout's arrays it holds `intrinsics` (3, 3), `image_size` (W, H), `world_2_cam` (4, 4, the identity),
`residual` (T,) and `iou` (T,) of each frame's fit, `converged` (T,) with the reason where not (`problem`),
and `head_model` (the head model's type).
Foreground: `--mask` (a video, white = person), else a plain-background estimate (npga/foreground.py says
when that fails). Every input is checked before the first fit; an interrupted run resumes at its next frame.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from npga.avatar.model import Avatar
from npga.commands.common import open_avatar
from npga.config import DeviceName, to_dict
from npga.data.tracking import Tracking
from npga.foreground import border_color, foreground_mask
from npga.geometry import intrinsics_from_fov
from npga.io.video import VideoInfo, iter_video, probe_video
from npga.track import TrackConfig, TrackLog, head_frame, track_frames

log = logging.getLogger(__name__)

FIRST_FRAMES = 3  # frames checked for a face-sized foreground before tracking starts
MIN_FOREGROUND, MAX_FOREGROUND = 0.01, 0.9  # face-sized: this fraction of the image


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
    device: DeviceName = "auto"


def read_intrinsics(path: Path, info: VideoInfo) -> np.ndarray:
    """(3, 3) K from a JSON file, checked against the video's size."""
    try:
        data = json.loads(Path(path).read_text())
        K = np.asarray(data["K"], dtype=np.float64)
        width, height = int(data["width"]), int(data["height"])
    except FileNotFoundError:
        raise FileNotFoundError(f"intrinsics file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{path}: expected JSON {{"K": 3x3, "width": W, "height": H}} ({e})') from e
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{path}: K must be a finite 3x3 matrix with positive focal lengths")
    if (width, height) != (info.width, info.height):
        raise ValueError(f"{path} is for {width}x{height} images, the video is {info.width}x{info.height}")
    return K


def _frames(video: Path, mask: Path | None, background: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame (H, W, 3) uint8, foreground (H, W) in [0, 1]) of each frame."""
    masks = iter_video(mask, grey=True) if mask is not None else None
    for frame in iter_video(video):
        if masks is None:
            yield frame, foreground_mask(frame, background)
        else:
            yield frame, next(masks).astype(np.float32) / 255.0


def check_inputs(cfg: Config) -> tuple[VideoInfo, np.ndarray | None, np.ndarray | None]:
    """(the video's info, K or None, the background colour or None with a mask); raises on any bad input."""
    info = probe_video(cfg.video)
    if cfg.fov is not None and cfg.intrinsics is not None:
        raise ValueError("give --fov or --intrinsics, not both")
    if cfg.fov is not None and not 1.0 < cfg.fov < 170.0:
        raise ValueError(f"--fov {cfg.fov}: expected a vertical field of view in degrees, between 1 and 170")
    K = read_intrinsics(cfg.intrinsics, info) if cfg.intrinsics is not None else None
    if cfg.fov is not None:
        K = intrinsics_from_fov(math.radians(cfg.fov), info.width, info.height)
    if cfg.mask is not None:
        m = probe_video(cfg.mask)
        if (m.width, m.height, m.n_frames) != (info.width, info.height, info.n_frames):
            raise ValueError(
                f"{cfg.mask}: {m.n_frames} frames of {m.width}x{m.height}, the video has "
                f"{info.n_frames} of {info.width}x{info.height}"
            )
    if cfg.out.suffix != ".npz":
        raise ValueError(f"--out {cfg.out}: a tracking file ends in .npz")
    first = list(islice(iter_video(cfg.video), FIRST_FRAMES))
    background = None if cfg.mask is not None else border_color(first)
    for i, (_, fg) in enumerate(islice(_frames(cfg.video, cfg.mask, background), FIRST_FRAMES)):
        share = float((fg > 0.5).mean())
        if not MIN_FOREGROUND <= share <= MAX_FOREGROUND:
            how = f"mask {cfg.mask}" if cfg.mask is not None else f"background estimate (colour {background.round(2)})"
            raise ValueError(
                f"{cfg.video}: no face-sized foreground in frame {i} (the {how} marks {share:.1%} of "
                "the image)" + ("; give --mask" if cfg.mask is None else "")
            )
    return info, K, background


def _partial_path(out: Path) -> Path:
    return out.with_name(f".{out.stem}.partial.npz")


def _save_partial(path: Path, track_log: TrackLog, fingerprint: str) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, fingerprint=np.array(fingerprint), **track_log.arrays())
    os.replace(tmp, path)


def _resume(path: Path, fingerprint: str, dim: int) -> TrackLog:
    """The fits of an interrupted run on the same input, else an empty log."""
    if not path.is_file():
        return TrackLog.empty(dim)
    try:
        with np.load(path) as npz:
            if str(npz["fingerprint"]) != fingerprint:
                log.info("%s belongs to another input or setting: starting over", path)
                return TrackLog.empty(dim)
            return TrackLog(**{f: npz[f] for f in TrackLog.__dataclass_fields__})
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s is unreadable (%s): starting over", path, e)
        return TrackLog.empty(dim)


def track_video(cfg: Config, avatar: Avatar, avatar_file: Path) -> Path:
    """Check the input, fit every frame (resuming an interrupted run) and write cfg.out; returns it."""
    info, K, background = check_inputs(cfg)
    partial = _partial_path(cfg.out)
    fingerprint = json.dumps(
        {
            "video": str(cfg.video.resolve()),
            "size": [info.width, info.height, info.n_frames],
            "mask": str(cfg.mask),
            "K": None if K is None else K.tolist(),
            "avatar": str(avatar_file.resolve()),
            "track": to_dict(cfg.track),
        }
    )
    if cfg.fresh:
        partial.unlink(missing_ok=True)
    track_log = _resume(partial, fingerprint, avatar.config.expression_dim)
    if len(track_log):
        log.info("resuming %s at frame %d of %d", cfg.video, len(track_log), info.n_frames)
    frames = islice(_frames(cfg.video, cfg.mask, background), len(track_log), None)
    fits = track_frames(avatar, frames, K, cfg.track, track_log.last_state(avatar.device), len(track_log))
    partial.parent.mkdir(parents=True, exist_ok=True)
    for tracked in tqdm(fits, desc="track", unit="frame", initial=len(track_log), total=info.n_frames):
        track_log = track_log.appended(tracked.fit)
        _save_partial(partial, track_log, fingerprint)
    if len(track_log) != info.n_frames:
        raise ValueError(f"{cfg.video}: decoded {len(track_log)} frames, the container says {info.n_frames}")
    smoothed = track_log.with_smoothed_distance(cfg.track.distance_smoothing, head_frame(avatar))
    write_tracking(cfg.out, smoothed, track_log.intrinsics[-1], info, avatar)
    partial.unlink()
    return cfg.out


def write_tracking(out: Path, track_log: TrackLog, K: np.ndarray, info: VideoInfo, avatar: Avatar) -> None:
    T = len(track_log)
    poses = track_log.head_to_camera  # (T, 4, 4) s R | t
    scale = head_frame(avatar).scale
    tracking = Tracking(
        expression=track_log.code,
        identity=np.zeros(0),
        rotation=poses[:, :3, :3] / scale,
        translation=poses[:, :3, 3],
        scale=np.full(T, scale),
        timesteps=np.arange(T),
    )
    extras = {
        "intrinsics": K,
        "image_size": np.array([info.width, info.height]),
        "world_2_cam": np.eye(4),
        "residual": track_log.residual,
        "iou": track_log.iou,
        "converged": track_log.problem == "",
        "problem": track_log.problem,
        "head_model": np.array(str(avatar.head_model.get("type", ""))),
    }
    tracking.save(out, extras)


def main(cfg: Config) -> Path:
    file, avatar = open_avatar(cfg.avatar, cfg.device)
    out = track_video(cfg, avatar, file)
    with np.load(out) as npz:
        residual, iou, problem, K = npz["residual"], npz["iou"], npz["problem"], npz["intrinsics"]
    print(
        f"tracked {len(residual)} frames of {cfg.video}: L1 residual {residual.mean():.4f} (max "
        f"{residual.max():.4f}), silhouette IoU {iou.mean():.3f} (min {iou.min():.3f}), focal {K[1, 1]:.1f} px"
    )
    for t in np.flatnonzero(problem != ""):
        print(f"frame {t} did not converge: {problem[t]}")
    print(f"wrote {out}")
    return out
