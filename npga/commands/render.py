"""`npga render AVATAR_OR_RUN`: videos of a trained avatar that people look at rather than read numbers from.

Without `--camera-path`, `orbit.mp4` and `expressions.mp4` into a folder; with it, one video or PNG sequence
along that path. Only the avatar file is needed; nothing of the capture. Outputs and the camera-path file:
docs/rendering.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
import tyro
from tqdm import tqdm

from npga.avatar.model import Avatar
from npga.camera_path import MAX_FRAMES, load_camera_path, path_cameras
from npga.cameras import Camera, frontal_camera, orbit_cameras, rig_up, turntable_cameras
from npga.commands.common import Runtime, RuntimeOptions, open_avatar, open_training_cache
from npga.config import SIGNED, OutPath, Positive, Range
from npga.data.cache import FrameCache
from npga.drive.reenact import driving_codes
from npga.geometry import even_side
from npga.io.atomic import atomic_path
from npga.io.video import to_uint8, write_video
from npga.metrics import composite
from npga.runs import RunLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    avatar: tyro.conf.Positional[Path]
    """Avatar file (`RUN/avatar.npga`) or run folder written by `npga train`."""
    out: OutPath | None = None
    """Overview: folder for the videos (default: videos/ next to the avatar file, i.e. RUN/videos). With
    --camera-path: an .mp4 file, or a folder for PNG frames."""
    camera_path: str | None = None
    """orbit (swing about the rig's up axis), turntable (a full turn), capture:SERIAL (a rig camera, fixed) or a
    camera-path JSON file; unset: the overview videos."""
    sequence: str | None = None
    """With --camera-path: the avatar's sequence that drives it (default: its first training sequence)."""
    tracking: Path | None = None
    """With --camera-path: a tracking file (`nphm_tracking.npz` layout) that drives it instead."""
    frames: Annotated[int, Range(1, MAX_FRAMES)] | None = None
    """With orbit, turntable or capture:SERIAL: frames to render (default: the expression track's length)."""
    size: str | None = None
    """With --camera-path: WxH in pixels (default: the path file's, else the avatar's training size)."""
    background: str = "avatar"
    """With --camera-path: avatar (its training background), white, black or R,G,B in [0, 1]."""
    png_alpha: bool = False
    """With --camera-path and a folder --out: RGBA PNGs (alpha from the render)."""
    height: Annotated[int, Range(2)] | None = None
    """Video height in pixels (default: the size the avatar was trained at)."""
    orbit_frames: Annotated[int, Range(1, MAX_FRAMES)] = 96
    orbit_degrees: Annotated[float, SIGNED] = 60.0
    """Largest angle of the orbit to either side of the frontal camera."""
    fps: Positive = 24.0
    capture: Path | None = None
    """Where the capture is now, for ground truth beside the renders (default: where the avatar recorded it)."""
    runtime: Runtime = RuntimeOptions()


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    frame = np.ascontiguousarray(frame)
    scale = max(frame.shape[0] / 600, 0.35)
    cv2.putText(frame, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (40, 40, 40), 1, cv2.LINE_AA)
    return frame


def main(cfg: Config) -> list[Path]:
    """Writes the overview videos, or the frames along --camera-path; returns the paths written."""
    if cfg.camera_path is not None:
        return render_path(cfg)
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    out = Path(cfg.out) if cfg.out is not None else RunLayout(file.parent).videos
    front = frontal_camera(avatar.cameras)
    if cfg.height is not None:
        front = front.resized(even_side(round(front.width * cfg.height / front.height)), cfg.height)
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


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WxH, e.g. 550x802") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"--size {text!r}: width and height must be positive")
    return w, h


def _background(text: str, avatar: Avatar) -> torch.Tensor:
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "avatar": tuple(avatar.config.background)}
    if text in named:
        return torch.tensor(named[text])
    try:
        rgb = tuple(float(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 1 for v in rgb):
        raise ValueError(f"--background {text!r}: expected avatar, white, black or R,G,B in [0, 1]")
    return torch.tensor(rgb)


def path_cameras_for(spec: str, avatar: Avatar, n: int, size: tuple[int, int] | None) -> list[Camera]:
    """The cameras of a --camera-path spec: n frames for the built-in paths, the file's own count for JSON."""
    if spec.endswith(".json"):
        path = load_camera_path(spec)
        if size is not None:
            path = dataclasses.replace(path, width=size[0], height=size[1])
        return path_cameras(path)
    if spec.startswith("capture:"):
        serial = spec.split(":", 1)[1]
        if serial not in avatar.cameras:
            raise ValueError(f"--camera-path {spec}: the avatar has no camera {serial!r} ({sorted(avatar.cameras)})")
        reference = avatar.cameras[serial]
    elif spec in ("orbit", "turntable"):
        reference = frontal_camera(avatar.cameras)
    else:
        raise ValueError(f"--camera-path {spec!r}: expected orbit, turntable, capture:SERIAL or a .json file")
    if size is not None:
        reference = reference.resized(*size)
    if spec.startswith("capture:"):
        return [reference] * n
    z, pose = avatar.tracked(avatar.split.train_sequences[0], 0)
    center = avatar.gaussians(z, pose).means.mean(0).cpu().numpy()  # (3,) the head, roughly
    up = rig_up(list(avatar.cameras.values()))
    if spec == "orbit":
        return orbit_cameras(reference, center, up, n, 60.0)
    return turntable_cameras(reference, center, up, n)


def render_path(cfg: Config) -> list[Path]:
    """Frames along --camera-path into an .mp4 or a PNG folder."""
    if cfg.tracking is not None and cfg.sequence is not None:
        raise ValueError("give --sequence or --tracking, not both")
    out = cfg.out
    if out is None:
        raise ValueError("--camera-path needs --out (an .mp4 file or a folder for PNGs)")
    video = out.suffix.lower() == ".mp4"
    if video and cfg.png_alpha:
        raise ValueError("--png-alpha writes PNG frames: give a folder as --out, not an .mp4")
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    size = _size(cfg.size) if cfg.size is not None else None
    background = _background(cfg.background, avatar)
    codes, poses, _ = driving_codes(avatar, str(file), cfg.sequence, cfg.tracking)
    cams = path_cameras_for(cfg.camera_path, avatar, cfg.frames or len(codes), size)

    def frames() -> Iterator[np.ndarray]:  # one at a time: a long path never holds all its frames in memory
        for i, cam in enumerate(tqdm(cams, desc="render", unit="frame")):
            t = i % len(codes)  # the expression track loops when the path is longer
            rgb, alpha = avatar.render_code(codes[t], poses[t], [cam], background)
            rgba = torch.cat([rgb[0], alpha[0].clamp(0, 1)], -1) if cfg.png_alpha else rgb[0]
            yield to_uint8(rgba.cpu().numpy())

    if video:
        write_video(out, frames(), fps=cfg.fps)
        paths = [out]
    else:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"frame_{i:05d}.png" for i in range(len(cams))]
        for path, frame in zip(paths, frames(), strict=True):
            with atomic_path(path) as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(frame, cv2.COLOR_RGBA2BGRA if cfg.png_alpha else cv2.COLOR_RGB2BGR))
    print(f"wrote {len(cams)} frames of {cams[0].width}x{cams[0].height} along {cfg.camera_path}: {out}")
    return paths
