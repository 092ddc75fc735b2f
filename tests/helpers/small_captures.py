"""Tiny captures written from scratch (calibration JSON, mp4s, tracking) for the capture reader tests.

Independent of the synthetic head on purpose: the bad-input tests need captures they can break file by
file, and the reader must be checked against files whose content the test knows exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from npga import nersemble
from npga.cameras import look_at
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.io.video import write_video

# The first three rig cameras; 222200046 is an NVS hold-out camera.
SERIALS = nersemble.SERIALS[:3]
RAW_K = np.array([[8000.0, 0.0, 1100.0], [0.0, 8000.0, 1604.0], [0.0, 0.0, 1.0]])  # for 2200 x 3208


def rgb_frame(k: int, t: int, size: tuple[int, int]) -> np.ndarray:
    """Smooth (codec-friendly) uint8 (H, W, 3) image, different per camera k and frame t."""
    W, H = size
    y, x = np.mgrid[0:H, 0:W] / max(W, H)
    chans = [np.sin(6 * x + 0.7 * t + k), np.cos(5 * y - 0.5 * t), np.sin(4 * (x + y) + 0.3 * k * t)]
    return np.clip(127 + 100 * np.stack(chans, -1), 0, 255).astype(np.uint8)


def alpha_frame(t: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) disc that moves with t: 255 inside, 0 outside."""
    W, H = size
    y, x = np.mgrid[0:H, 0:W]
    return (((x - W / 2 - t) ** 2 + (y - H / 2) ** 2) < (H / 4) ** 2).astype(np.uint8) * 255


def tracking_for(n: int, seed: int = 0) -> Tracking:
    rng = np.random.default_rng(seed)
    return Tracking(
        expression=rng.normal(size=(n, 4)),
        identity=rng.normal(size=3),
        rotation=np.repeat(np.eye(3)[None], n, axis=0),
        translation=rng.normal(scale=0.01, size=(n, 3)),
        scale=np.ones(n),
        timesteps=np.arange(n),
    )


def write_capture(
    root: Path,
    layout: str = "benchmark",
    size: tuple[int, int] = (32, 48),
    n_frames: int = 6,
    sequences: tuple[str, ...] = ("EXP-1", "FREE"),
) -> Path:
    """A participant folder in the benchmark (per-serial K, alpha maps) or raw (shared full-size K) layout."""
    paths = ParticipantLayout(root)
    W, H = size
    w2c, intrinsics = {}, {}
    for k, serial in enumerate(SERIALS):
        angle = np.deg2rad(-30 + 30 * k)
        eye = 1.0 * np.array([np.sin(angle), 0.05 * k, np.cos(angle)])
        w2c[serial] = look_at(eye, np.zeros(3)).tolist()
        intrinsics[serial] = [[1.5 * W + k, 0, W / 2 + 0.5 * k], [0, 1.5 * W + k, H / 2 - 0.5 * k], [0, 0, 1]]
    params = {"world_2_cam": w2c, "intrinsics": intrinsics if layout == "benchmark" else RAW_K.tolist()}
    paths.camera_params.parent.mkdir(parents=True)
    paths.camera_params.write_text(json.dumps(params))
    for seq in sequences:
        for k, serial in enumerate(SERIALS):
            write_video(paths.video(seq, serial), (rgb_frame(k, t, size) for t in range(n_frames)), fps=73, quality=10)
            if layout == "benchmark":
                frames = (np.repeat(alpha_frame(t, size)[..., None], 3, -1) for t in range(n_frames))
                write_video(paths.alpha_video(seq, serial), frames, fps=73, quality=10)
        tracking_for(n_frames).save(paths.tracking(seq))
    if layout == "raw":
        for serial in SERIALS:
            paths.background(serial).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(paths.background(serial)), np.full((H, W, 3), 90, np.uint8))
    return root
