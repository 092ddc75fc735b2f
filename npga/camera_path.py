"""Camera paths: keyframes (position, look-at, up, field of view, time) interpolated smoothly into cameras.

A cubic Hermite spline with central-difference tangents passes through every keyframe exactly and stays smooth
between them, for uneven spacing too. Format (the JSON file `npga render --camera-path` reads and
`save_camera_path` writes) and interpolation: docs/rendering.md.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from npga.cameras import Camera, look_at
from npga.geometry import intrinsics_from_fov
from npga.io.atomic import write_text_atomic

FORMAT = "npga-camera-path"
VERSION = 1
MAX_FRAMES = 30_000
"""Most frames one render makes (about 20 minutes at 24 fps): a keyframe time in milliseconds where seconds
were meant would otherwise start days of rendering."""
_KEYFRAME_KEYS = {"time", "position", "look_at", "up", "fov"}


@dataclass(frozen=True)
class Keyframe:
    time: float
    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    fov: float = 25.0


@dataclass(frozen=True)
class CameraPath:
    keyframes: tuple[Keyframe, ...]
    width: int
    height: int
    fps: float = 24.0

    @property
    def duration(self) -> float:
        return self.keyframes[-1].time - self.keyframes[0].time

    @property
    def n_frames(self) -> int:
        return int(math.floor(self.duration * self.fps + 1e-9)) + 1


def _hermite(times: np.ndarray, values: np.ndarray, t: float) -> np.ndarray:
    """Cubic Hermite interpolation at `t` of values (K, C) at increasing times (K,), central-difference tangents."""
    if len(times) == 1:
        return values[0]
    i = int(np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2))
    t0, t1 = times[i], times[i + 1]

    def tangent(k: int) -> np.ndarray:
        lo, hi = max(k - 1, 0), min(k + 1, len(times) - 1)
        return (values[hi] - values[lo]) / (times[hi] - times[lo])

    h = t1 - t0
    s = float(np.clip((t - t0) / h, 0.0, 1.0))
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * values[i] + h10 * h * tangent(i) + h01 * values[i + 1] + h11 * h * tangent(i + 1)


def path_cameras(path: CameraPath) -> list[Camera]:
    """One camera per frame at times start + i / fps."""
    times = np.array([k.time for k in path.keyframes], dtype=np.float64)
    channels = np.array([[*k.position, *k.look_at, *k.up, k.fov] for k in path.keyframes], dtype=np.float64)
    cams = []
    for i in range(path.n_frames):
        v = _hermite(times, channels, times[0] + i / path.fps)
        w2c = look_at(v[0:3], v[3:6], v[6:9] / np.linalg.norm(v[6:9]))
        cams.append(
            Camera(
                K=intrinsics_from_fov(math.radians(float(v[9])), path.width, path.height),  # fov: vertical, degrees
                world_2_cam=w2c,
                width=path.width,
                height=path.height,
                serial=f"path{i:05d}",
            )
        )
    return cams


def save_camera_path(path: CameraPath, file: str | os.PathLike) -> Path:
    data = {
        "format": FORMAT,
        "version": VERSION,
        "width": path.width,
        "height": path.height,
        "fps": path.fps,
        "keyframes": [asdict(k) for k in path.keyframes],
    }
    return write_text_atomic(file, json.dumps(data, indent=2))


def _vec(value: object) -> tuple[float, ...]:
    return tuple(float(x) for x in value)  # type: ignore[union-attr]


def load_camera_path(file: str | os.PathLike) -> CameraPath:
    """Read and check a path file; every problem is one ValueError naming the file and the key."""
    file = Path(file)
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not a readable camera path ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f'{file}: not a camera path (expected "format": "{FORMAT}")')
    unknown = sorted(set(data) - {"format", "version", "width", "height", "fps", "keyframes"})
    if unknown:
        raise ValueError(f"{file}: unknown key(s) {unknown}")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise ValueError(
            f"{file}: camera path version {data.get('version')!r} is newer than this npga reads ({VERSION})"
        )
    try:
        width, height, fps = int(data["width"]), int(data["height"]), float(data.get("fps", 24.0))
        frames = data["keyframes"]
        keyframes = []
        for i, k in enumerate(frames):
            bad = sorted(set(k) - _KEYFRAME_KEYS)
            if bad:
                raise ValueError(f"keyframe {i}: unknown key(s) {bad} (keys: {sorted(_KEYFRAME_KEYS)})")
            up = _vec(k.get("up", (0.0, 1.0, 0.0)))
            keyframes.append(
                Keyframe(
                    time=float(k["time"]),
                    position=_vec(k["position"]),
                    look_at=_vec(k["look_at"]),
                    up=up,
                    fov=float(k.get("fov", 25.0)),
                )
            )
    except (KeyError, TypeError) as e:
        raise ValueError(f"{file}: missing or malformed value ({type(e).__name__}: {e})") from e
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from e
    if width <= 0 or height <= 0 or not 0 < fps < math.inf:
        raise ValueError(f"{file}: width, height and fps must be positive")
    if not keyframes:
        raise ValueError(f"{file}: no keyframes")
    numbers = [x for k in keyframes for x in (k.time, *k.position, *k.look_at, *k.up, k.fov)]
    if not all(math.isfinite(x) for x in numbers):
        raise ValueError(f"{file}: keyframe times, vectors and fields of view must be finite numbers")
    times = [k.time for k in keyframes]
    if any(b <= a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError(f"{file}: keyframe times must increase, got {times}")
    for i, k in enumerate(keyframes):
        if len(k.position) != 3 or len(k.look_at) != 3 or len(k.up) != 3 or not 0 < k.fov < 180:
            raise ValueError(f"{file}: keyframe {i} needs 3-vectors and 0 < fov < 180")
    path = CameraPath(keyframes=tuple(keyframes), width=width, height=height, fps=fps)
    if path.n_frames > MAX_FRAMES:
        raise ValueError(
            f"{file}: {path.duration:g} s at {fps:g} fps is {path.n_frames} frames, more than {MAX_FRAMES} "
            "(are the keyframe times in seconds?)"
        )
    return path
