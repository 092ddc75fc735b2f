"""A whole driver video tracked with a trained avatar: its inputs checked, every frame fitted (`fit`), an
interrupted run resumed at its next frame, and the result written as a tracking file.

The tracking file is the capture's `nphm_tracking.npz` layout (npga/data/tracking.py), so reenactment,
rendering and the capture reader take it unchanged. Its world frame is the video's camera; `TrackingExtras`
beside the layout hold that camera, each frame's fit residual, silhouette IoU and convergence, and the head
model's type. Foreground: a mask video (white = person), else a plain-background estimate (`foreground` says
when that fails). Resuming and writing the file (`fit_all`, `write_tracking`) serve every tracking run, the
multi-view one of a capture's cameras (`multiview`) too.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from npga.avatar.model import Avatar
from npga.cameras import Camera
from npga.config import to_dict
from npga.data.tracking import Tracking, TrackingExtras
from npga.drive.fit import TrackConfig, TrackedFrame, TrackLog, head_frame, track_frames
from npga.drive.foreground import border_color, foreground_mask
from npga.geometry import intrinsics_from_fov
from npga.io.atomic import atomic_path
from npga.io.video import VideoInfo, iter_video, probe_video

log = logging.getLogger(__name__)

FIRST_FRAMES = 3  # frames checked for a face-sized foreground before tracking starts
MIN_FOREGROUND, MAX_FOREGROUND = 0.01, 0.9  # face-sized: this fraction of the image


@dataclass(frozen=True)
class DriverVideo:
    """A monocular video of a face and what is known of its camera and foreground."""

    video: Path
    fov: float | None = None  # vertical field of view in degrees; None (and no intrinsics): fitted
    intrinsics: Path | None = None  # JSON {"K": 3x3 in pixels, "width": W, "height": H}
    mask: Path | None = None  # foreground mask video (white = person), same size and length as the video


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


def check_inputs(driver: DriverVideo, out: Path) -> tuple[VideoInfo, np.ndarray | None, np.ndarray | None]:
    """(the video's info, K or None, the background colour or None with a mask); raises on any bad input."""
    info = probe_video(driver.video)
    if driver.fov is not None and driver.intrinsics is not None:
        raise ValueError("give --fov or --intrinsics, not both")
    if driver.fov is not None and not 1.0 < driver.fov < 170.0:
        raise ValueError(f"--fov {driver.fov}: expected a vertical field of view in degrees, between 1 and 170")
    K = read_intrinsics(driver.intrinsics, info) if driver.intrinsics is not None else None
    if driver.fov is not None:
        K = intrinsics_from_fov(math.radians(driver.fov), info.width, info.height)
    if driver.mask is not None:
        m = probe_video(driver.mask)
        if (m.width, m.height, m.n_frames) != (info.width, info.height, info.n_frames):
            raise ValueError(
                f"{driver.mask}: {m.n_frames} frames of {m.width}x{m.height}, the video has "
                f"{info.n_frames} of {info.width}x{info.height}"
            )
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: a tracking file ends in .npz")
    first = list(islice(iter_video(driver.video), FIRST_FRAMES))
    background = None if driver.mask is not None else border_color(first)
    for i, (_, fg) in enumerate(islice(_frames(driver.video, driver.mask, background), FIRST_FRAMES)):
        share = float((fg > 0.5).mean())
        if not MIN_FOREGROUND <= share <= MAX_FOREGROUND:
            how = (
                f"mask {driver.mask}"
                if driver.mask is not None
                else f"background estimate (colour {background.round(2)})"
            )
            raise ValueError(
                f"{driver.video}: no face-sized foreground in frame {i} (the {how} marks {share:.1%} of "
                "the image)" + ("; give --mask" if driver.mask is None else "")
            )
    return info, K, background


def _resume_path(out: Path) -> Path:
    """Where the fits so far wait for the next frame (its own name: `out`'s temporary name is the writer's)."""
    return out.with_name(f".{out.stem}.resume.npz")


def _save_fits(path: Path, track_log: TrackLog, fingerprint: str) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, fingerprint=np.array(fingerprint), **track_log.arrays())


def _load_fits(path: Path, fingerprint: str, dim: int) -> TrackLog:
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


def fit_all(
    out: Path,
    fingerprint: str,
    n_frames: int,
    source: str,
    avatar: Avatar,
    fits: Callable[[TrackLog], Iterator[TrackedFrame]],
    fresh: bool = False,
) -> TrackLog:
    """The fits of every frame: `fits(done)` fits the frames after those `done` holds. The fits so far are saved
    after each frame beside `out`; a run on the same input (`fingerprint`) resumes from them unless `fresh`,
    until `write_tracking` writes `out`."""
    resume = _resume_path(out)
    if fresh:
        resume.unlink(missing_ok=True)
    track_log = _load_fits(resume, fingerprint, avatar.config.expression_dim)
    if len(track_log):
        log.info("resuming %s at frame %d of %d", source, len(track_log), n_frames)
    for tracked in tqdm(fits(track_log), desc="track", unit="frame", initial=len(track_log), total=n_frames):
        track_log = track_log.appended(tracked.fit)
        _save_fits(resume, track_log, fingerprint)
    return track_log


def track_video(
    driver: DriverVideo, avatar: Avatar, avatar_file: Path, out: Path, cfg: TrackConfig, fresh: bool = False
) -> Path:
    """Check the input, fit every frame (resuming an interrupted run unless `fresh`) and write the tracking
    file `out`; returns it."""
    info, K, background = check_inputs(driver, out)
    fingerprint = json.dumps(
        {
            "video": str(driver.video.resolve()),
            "size": [info.width, info.height, info.n_frames],
            "mask": str(driver.mask),
            "K": None if K is None else K.tolist(),
            "avatar": str(avatar_file.resolve()),
            "track": to_dict(cfg),
        }
    )

    def fits(done: TrackLog) -> Iterator[TrackedFrame]:
        frames = islice(_frames(driver.video, driver.mask, background), len(done), None)
        return track_frames(avatar, frames, K, cfg, done.last_state(avatar.device), len(done))

    track_log = fit_all(out, fingerprint, info.n_frames, str(driver.video), avatar, fits, fresh)
    if len(track_log) != info.n_frames:
        raise ValueError(f"{driver.video}: decoded {len(track_log)} frames, the container says {info.n_frames}")
    smoothed = track_log.with_smoothed_distance(cfg.distance_smoothing, head_frame(avatar))
    camera = Camera(K=track_log.intrinsics[-1], world_2_cam=np.eye(4), width=info.width, height=info.height)
    write_tracking(out, smoothed, camera, np.arange(len(track_log)), avatar)
    return out


def write_tracking(
    out: Path,
    track_log: TrackLog,
    camera: Camera,
    timesteps: np.ndarray,
    avatar: Avatar,
    identity: np.ndarray | None = None,
) -> None:
    """The fits as a tracking file in the fits' world, filmed by `camera` (a video's: the world's origin);
    `timesteps` (T,): the video frame of each fit. Ends the run: the fits saved for resuming go."""
    T = len(track_log)
    poses = track_log.head_to_camera  # (T, 4, 4) s R | t
    scale = head_frame(avatar).scale
    tracking = Tracking(
        expression=track_log.code,
        identity=np.zeros(0) if identity is None else identity,
        rotation=poses[:, :3, :3] / scale,
        translation=poses[:, :3, 3],
        scale=np.full(T, scale),
        timesteps=timesteps,
    )
    extras = TrackingExtras(
        intrinsics=camera.K,
        image_size=(camera.width, camera.height),
        world_2_cam=camera.world_2_cam,
        head_model=str(avatar.head_model.get("type", "")),
        residual=track_log.residual,
        iou=track_log.iou,
        problem=track_log.problem,
    )
    tracking.save(out, extras)
    _resume_path(out).unlink(missing_ok=True)
