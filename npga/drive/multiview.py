"""A sequence of a capture tracked from several of its calibrated cameras at once: one code and one head pose per frame
fitted to all the views (`fit`), in the rig's world.

Frames come from the capture's frame cache; each view's foreground is the capture's alpha, else the plain-background
estimate (`foreground`). Each frame's fit starts from the capture's own tracking of it when the cache has one (unless
told to leave it out), else from the previous frame's fit. Only the named cameras' frames are read: whatever the
other cameras saw plays no part (evaluation scores the held-out cameras with codes fitted this way to the others).
Inputs are checked before the first fit; resuming and the tracking file are the video path's (`video`), the file's
camera the first named view's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from npga.avatar.model import Avatar
from npga.config import to_dict
from npga.data.cache import FrameCache, tracking_path
from npga.data.tracking import Tracking
from npga.drive.fit import (
    FrameState,
    HeadFrame,
    Rig,
    TrackConfig,
    TrackedFrame,
    TrackLog,
    Views,
    head_frame,
    track_views,
)
from npga.drive.foreground import border_color, foreground_mask
from npga.drive.reenact import check_expression_space
from npga.drive.video import FIRST_FRAMES, MAX_FOREGROUND, MIN_FOREGROUND, fit_all, write_tracking


@dataclass(frozen=True)
class CaptureViews:
    """Some calibrated cameras of one sequence of a capture's frame cache."""

    cache: FrameCache
    sequence: str
    serials: tuple[str, ...]
    from_scratch: bool = False
    """Leave the capture's own tracking of the sequence unread: each frame starts from the previous fit (the
    first from the search), as a video's do."""
    start: Tracking | None = None
    """The tracking each frame's fit starts from in place of the capture's (a training sequence as an avatar plays
    it, for the refit after training); it has the sequence's frames."""

    @property
    def tracking(self) -> Tracking | None:
        """The tracking the fits start from: the given start, else the capture's if it has one; none from
        scratch."""
        if self.from_scratch:
            return None
        if self.start is not None:
            return self.start
        return self.cache.tracking(self.sequence) if self.cache.has_tracking(self.sequence) else None

    @property
    def rig(self) -> Rig:
        cams = [self.cache.cameras[s] for s in self.serials]
        return Rig(
            world_2_cam=torch.tensor(np.stack([c.world_2_cam for c in cams]), dtype=torch.float32),
            K=torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32),
        )

    def images(self, t: int) -> np.ndarray:
        """(V, H, W, 3 or 4) uint8 row `t` of the views (alpha last when the capture has alpha maps)."""
        return np.stack([self.cache.array(self.sequence, s)[t] for s in self.serials])


def check_views(views: CaptureViews, avatar: Avatar, out: Path) -> None:
    """Raise on any bad input, in one line naming it: the sequence, the cameras, the capture's tracking, the
    output's name and a face-sized foreground in each view's first frames."""
    cache, seq = views.cache, views.sequence
    if seq not in cache.sequences:
        raise ValueError(f"--sequence {seq}: not in the frame cache {cache.root} (cached: {list(cache.sequences)})")
    if not views.serials:
        raise ValueError("--cameras: give at least one camera serial")
    for serial in views.serials:
        if serial not in cache.serials:
            raise ValueError(
                f"--cameras: unknown camera {serial!r} (cameras with frames in {cache.root}: {list(cache.serials)})"
            )
    repeated = sorted({s for s in views.serials if views.serials.count(s) > 1})
    if repeated:
        raise ValueError(f"--cameras: camera {repeated[0]!r} is given more than once")
    if views.tracking is not None:
        source = "the start" if views.start is not None else str(tracking_path(cache.root, seq))
        check_expression_space(source, None, views.tracking.expression_dim, avatar, "the avatar")
    if views.start is not None and views.start.n_frames != cache.n_frames(seq):
        raise ValueError(
            f"the start: {views.start.n_frames} frames of {seq}, the frame cache {cache.root} {cache.n_frames(seq)}"
        )
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: a tracking file ends in .npz")
    for serial, background in zip(views.serials, _backgrounds(views), strict=True):
        for t in range(min(FIRST_FRAMES, cache.n_frames(seq))):
            share = float((_foreground(cache.array(seq, serial)[t], background) > 0.5).mean())
            if not MIN_FOREGROUND <= share <= MAX_FOREGROUND:
                how = "alpha" if background is None else f"background estimate (colour {background.round(2)})"
                raise ValueError(
                    f"{cache.root}: no face-sized foreground in frame {t} of {seq} in camera {serial} (the {how} "
                    f"marks {share:.1%} of the image)"
                )


def _backgrounds(views: CaptureViews) -> list[np.ndarray | None]:
    """Each view's plain-background colour, None where the capture's alpha gives the foreground."""
    if views.cache.has_alpha:
        return [None] * len(views.serials)
    n = min(FIRST_FRAMES, views.cache.n_frames(views.sequence))
    return [border_color([views.cache.array(views.sequence, s)[t][..., :3] for t in range(n)]) for s in views.serials]


def _foreground(row: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """(H, W) in [0, 1] of a cached row (H, W, 3 or 4) uint8: its alpha, else the background estimate."""
    if background is None:
        return row[..., 3].astype(np.float32) / 255.0
    return foreground_mask(row[..., :3], background)


def capture_start(tracking: Tracking, t: int, head: HeadFrame, K: torch.Tensor) -> FrameState:
    """Frame `t` of a capture's tracking in the fit's terms: code, unit rotation and the head's centroid in the
    world, on K's device (K (3, 3): the first view's)."""
    pose = torch.from_numpy(tracking.head_to_world(t))  # (4, 4) s R | t
    scale = torch.linalg.det(pose[:3, :3]).abs().pow(1 / 3)
    centroid = pose[:3, :3] @ head.centroid.double().cpu() + pose[:3, 3]
    to = lambda x: x.float().to(K.device)
    return FrameState(
        code=to(torch.from_numpy(tracking.expression[t])), rotation=to(pose[:3, :3] / scale), centroid=to(centroid), K=K
    )


def capture_frames(views: CaptureViews, avatar: Avatar, first: int) -> Iterator[Views]:
    """The views of frames `first`, `first` + 1, ... with their foregrounds and the capture's starts."""
    cache, seq = views.cache, views.sequence
    tracking = views.tracking
    head, K, backgrounds = head_frame(avatar), views.rig.K[0].to(avatar.device), _backgrounds(views)
    for t in range(first, cache.n_frames(seq)):
        rows = views.images(t)
        masks = np.stack([_foreground(row, bg) for row, bg in zip(rows, backgrounds, strict=True)])
        start = None if tracking is None else capture_start(tracking, t, head, K)
        yield Views(images=np.ascontiguousarray(rows[..., :3]), masks=masks, start=start)


def track_capture(
    views: CaptureViews, avatar: Avatar, avatar_file: Path, out: Path, cfg: TrackConfig, fresh: bool = False
) -> Path:
    """Check the input, fit every frame of the sequence to all the views (resuming an interrupted run unless
    `fresh`) and write the tracking file `out` in the rig's world, filmed by the first view; returns it."""
    check_views(views, avatar, out)
    cache, seq = views.cache, views.sequence
    n_frames = cache.n_frames(seq)
    fingerprint = json.dumps(
        {
            "cache": str(cache.root.resolve()),
            "sequence": seq,
            "cameras": list(views.serials),
            "from_scratch": views.from_scratch,
            "start": "given" if views.start is not None else "capture",
            "frames": n_frames,
            "avatar": str(avatar_file.resolve()),
            "track": to_dict(cfg),
        }
    )

    def fits(done: TrackLog) -> Iterator[TrackedFrame]:
        frames = capture_frames(views, avatar, len(done))
        return track_views(avatar, frames, views.rig, cfg, done.last_state(avatar.device), len(done))

    track_log = fit_all(out, fingerprint, n_frames, f"{seq} of {cache.root}", avatar, fits, fresh)
    identity = cache.tracking(seq).identity if cache.has_tracking(seq) else None
    write_tracking(out, track_log, cache.cameras[views.serials[0]], cache.timesteps(seq), avatar, identity)
    return out
