"""`npga render AVATAR_OR_RUN`: videos of a trained avatar that people look at rather than read numbers from.

- `orbit.mp4`: the camera swings around the head (+-`orbit_degrees` about the rig's up axis) while the
  avatar replays the expressions of its first training sequence;
- `expressions.mp4`: a fixed frontal camera, the avatar driven by every sequence it carries in turn (held-out
  ones labelled), next to the ground truth when the frames it was trained on are at hand.
Only the avatar file is needed; nothing of the capture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import tyro
from tqdm import tqdm

from npga.cameras import frontal_camera, orbit_cameras, rig_up
from npga.commands.common import open_avatar, open_training_cache
from npga.config import DeviceName
from npga.data.cache import FrameCache
from npga.io.video import to_uint8, write_video
from npga.metrics import composite
from npga.runs import RunLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    avatar: tyro.conf.Positional[Path]
    """Avatar file (`RUN/avatar.npga`) or run folder written by `npga train`."""
    out: Path | None = None
    """Folder for the videos (default: videos/ next to the avatar file, i.e. RUN/videos)."""
    height: int | None = None
    """Video height in pixels (default: the size the avatar was trained at)."""
    orbit_frames: int = 96
    orbit_degrees: float = 60.0
    """Largest angle of the orbit to either side of the frontal camera."""
    fps: float = 24.0
    capture: Path | None = None
    """Where the capture is now, for ground truth beside the renders (default: where the avatar recorded it)."""
    device: DeviceName = "auto"


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    frame = np.ascontiguousarray(frame)
    scale = max(frame.shape[0] / 600, 0.35)
    cv2.putText(frame, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (40, 40, 40), 1, cv2.LINE_AA)
    return frame


def main(cfg: Config) -> list[Path]:
    """Writes orbit.mp4 and expressions.mp4; returns their paths."""
    file, avatar = open_avatar(cfg.avatar, cfg.device)
    out = Path(cfg.out) if cfg.out is not None else RunLayout(file.parent).videos
    front = frontal_camera(avatar.cameras)
    if cfg.height is not None:
        front = front.resized(round(front.width * cfg.height / front.height) // 2 * 2, cfg.height)
    cache: FrameCache | None = None
    if cfg.height is None:
        try:
            cache = open_training_cache(file, avatar, cfg.capture)
        except (FileNotFoundError, ValueError) as e:
            log.info("no ground truth beside the renders: %s", e)

    seq = avatar.split.train_sequences[0]
    n = len(avatar.motion(seq))
    center = avatar.gaussians(*avatar.tracked(seq, 0)).means.mean(0).cpu().numpy()  # (3,) the head, roughly
    cams = orbit_cameras(front, center, rig_up(list(avatar.cameras.values())), cfg.orbit_frames, cfg.orbit_degrees)

    def orbit() -> list[np.ndarray]:
        frames = []
        for i, cam in enumerate(tqdm(cams, desc="orbit", unit="frame")):
            rgb, _ = avatar.render(seq, i % n, [cam])
            frames.append(to_uint8(rgb[0].cpu().numpy()))
        return frames

    def expressions() -> list[np.ndarray]:
        frames = []
        sequences = [s for s in avatar.split.train_sequences + avatar.split.heldout_sequences if s in avatar.motions]
        with_gt = cache is not None and front.serial in cache.serials
        background = avatar.background.cpu()
        for s in tqdm(sequences, desc="expressions", unit="sequence"):
            held = " (held out)" if s in avatar.split.heldout_sequences else ""
            for t in range(len(avatar.motion(s))):
                rgb, _ = avatar.render(s, t, [front])
                frame = to_uint8(rgb[0].cpu().numpy())
                if with_gt and s in cache.sequences:
                    gt_rgb, gt_alpha = (torch.from_numpy(a) for a in cache.frame(s, front.serial, t))
                    frame = np.concatenate([to_uint8(composite(gt_rgb, gt_alpha, background).numpy()), frame], 1)
                frames.append(_label(frame, f"{s}{held}"))
        return frames

    paths = [out / "orbit.mp4", out / "expressions.mp4"]
    write_video(paths[0], orbit(), fps=cfg.fps)
    write_video(paths[1], expressions(), fps=cfg.fps)
    for p in paths:
        print(f"wrote {p}")
    return paths
