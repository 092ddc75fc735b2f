"""`npga render`: videos of a trained avatar that people look at rather than read numbers from.

- `orbit.mp4`: the camera swings around the head (+-`orbit_degrees` about the rig's up axis) while the
  avatar replays the expressions of its first training sequence;
- `expressions.mp4`: a fixed frontal camera, the avatar driven by the tracked codes of every sequence in
  turn (held-out ones included, labelled), next to the ground truth where that camera has frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from npga.cameras import Camera, look_at
from npga.config import DeviceName, resolve_device
from npga.data.layout import NERSEMBLE_HOLDOUT_SERIALS
from npga.io.video import to_uint8, write_video
from npga.metrics import composite
from npga.run import Avatar, load_run


@dataclass(frozen=True)
class RenderConfig:
    run: Path
    """Run folder written by `npga train`."""
    out: Path | None = None
    """Folder for the videos (default: RUN/videos)."""
    height: int | None = None
    """Video height in pixels (default: the frame cache's)."""
    orbit_frames: int = 96
    orbit_degrees: float = 60.0
    """Largest angle of the orbit to either side of the frontal camera."""
    fps: float = 24.0
    capture: Path | None = None
    """The capture's folder when it moved since training."""
    device: DeviceName = "auto"


def frontal_camera(avatar: Avatar) -> Camera:
    """The rig's centre hold-out camera (NeRSemble's frontal view), else the calibrated camera nearest the
    rig's mean viewing direction."""
    cams = avatar.cache.cameras
    if NERSEMBLE_HOLDOUT_SERIALS[1] in cams:
        return cams[NERSEMBLE_HOLDOUT_SERIALS[1]]
    forward = np.mean([c.world_2_cam[2, :3] for c in cams.values()], 0)
    return max(cams.values(), key=lambda c: float(c.world_2_cam[2, :3] @ forward))


def rig_up(cameras: list[Camera]) -> np.ndarray:
    """World direction that is up in the rig's images (OpenCV's camera y points down)."""
    up = -np.mean([c.world_2_cam[1, :3] for c in cameras], 0)
    return up / np.linalg.norm(up)


def orbit_cameras(reference: Camera, target: np.ndarray, up: np.ndarray, n: int, degrees: float) -> list[Camera]:
    """`reference` swung about the axis `up` through `target`: angle = degrees * sin(2 pi i / n)."""
    eye0 = reference.center - target
    cams = []
    for i in range(n):
        a = math.radians(degrees) * math.sin(2 * math.pi * i / n)
        rot = cv2.Rodrigues((up * a).reshape(3, 1))[0]  # (3, 3) rotation about `up`
        w2c = look_at(target + rot @ eye0, target, up)
        cams.append(Camera(K=reference.K, world_2_cam=w2c, width=reference.width, height=reference.height,
                           serial=f"orbit{i:03d}"))  # fmt: skip
    return cams


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    frame = np.ascontiguousarray(frame)
    scale = max(frame.shape[0] / 600, 0.35)
    cv2.putText(frame, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (40, 40, 40), 1, cv2.LINE_AA)
    return frame


def render_videos(cfg: RenderConfig) -> list[Path]:
    """`npga render`: writes orbit.mp4 and expressions.mp4; returns their paths."""
    device = resolve_device(cfg.device)
    avatar = load_run(cfg.run, device=device, capture=cfg.capture)
    out = Path(cfg.out) if cfg.out is not None else Path(cfg.run) / "videos"
    front = frontal_camera(avatar)
    if cfg.height is not None:
        front = front.resized(round(front.width * cfg.height / front.height) // 2 * 2, cfg.height)
    cache = avatar.cache

    seq = avatar.split.train_sequences[0]
    center = avatar.gaussians(*avatar.tracked(seq, 0)).means.mean(0).cpu().numpy()  # (3,) the head, roughly
    cams = orbit_cameras(front, center, rig_up(list(cache.cameras.values())), cfg.orbit_frames, cfg.orbit_degrees)

    def orbit() -> list[np.ndarray]:
        frames = []
        for i, cam in enumerate(tqdm(cams, desc="orbit", unit="frame")):
            rgb, _ = avatar.render(seq, i % cache.n_frames(seq), [cam])
            frames.append(to_uint8(rgb[0].cpu().numpy()))
        return frames

    def expressions() -> list[np.ndarray]:
        frames = []
        sequences = avatar.split.train_sequences + avatar.split.heldout_sequences
        with_gt = front.serial in cache.serials and cfg.height is None
        background = avatar.background.cpu()
        for s in tqdm(sequences, desc="expressions", unit="sequence"):
            held = " (held out)" if s in avatar.split.heldout_sequences else ""
            for t in range(cache.n_frames(s)):
                rgb, _ = avatar.render(s, t, [front])
                frame = to_uint8(rgb[0].cpu().numpy())
                if with_gt:
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
