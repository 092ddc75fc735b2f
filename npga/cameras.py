"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), as NeRSemble ships them.

A camera is plain data (numpy); `stack_cameras` turns a list into the `viewmats`/`Ks` tensors the
rasterizer takes, so the hot path never converts conventions. Camera paths (an orbit about the rig's up
axis) are built from a rig's cameras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from npga import nersemble


@dataclass(frozen=True)
class Camera:
    """One calibrated view: intrinsics in pixels for an image of `width` x `height`."""

    K: np.ndarray = field(repr=False)  # (3, 3) intrinsics in pixels
    world_2_cam: np.ndarray = field(repr=False)  # (4, 4) world -> camera, OpenCV axes
    width: int
    height: int
    serial: str = ""

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        w2c = np.asarray(self.world_2_cam, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"Camera {self.serial!r}: K must be 3x3, got shape {K.shape}")
        if w2c.shape != (4, 4):
            raise ValueError(f"Camera {self.serial!r}: world_2_cam must be 4x4, got shape {w2c.shape}")
        if not (np.isfinite(K).all() and np.isfinite(w2c).all()):
            raise ValueError(f"Camera {self.serial!r}: calibration contains NaN or inf")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Camera {self.serial!r}: image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "world_2_cam", w2c)

    @property
    def cam_2_world(self) -> np.ndarray:  # (4, 4)
        return np.linalg.inv(self.world_2_cam)

    @property
    def center(self) -> np.ndarray:  # (3,) camera centre in world coordinates
        R, t = self.world_2_cam[:3, :3], self.world_2_cam[:3, 3]
        return -R.T @ t

    def resized(self, width: int, height: int) -> Camera:
        """The same camera for an image resampled to `width` x `height` (pixel centres at +0.5)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 2] *= sx
        K[1, 1] *= sy
        K[1, 2] *= sy
        return Camera(K=K, world_2_cam=self.world_2_cam, width=width, height=height, serial=self.serial)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) and camera-space depth (N,)."""
        p_cam = points @ self.world_2_cam[:3, :3].T + self.world_2_cam[:3, 3]
        z = p_cam[:, 2]
        uv = (p_cam[:, :2] / z[:, None]) @ self.K[:2, :2].T + self.K[:2, 2]
        return uv, z


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 1.0, 0.0)) -> np.ndarray:
    """World -> camera (4, 4) in OpenCV axes for a camera at `eye` looking at `target`.

    `up` is the world direction that should appear upwards in the image (OpenCV's y points down).
    """
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)  # right = forward x up
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to `up`")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def stack_cameras(
    cameras: Sequence[Camera], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """`viewmats (C, 4, 4)` and `Ks (C, 3, 3)` for the rasterizer. All cameras must share one image size."""
    if not cameras:
        raise ValueError("stack_cameras: no cameras given")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"stack_cameras: cameras have different image sizes {sorted(sizes)}")
    viewmats = torch.tensor(np.stack([c.world_2_cam for c in cameras]), device=device, dtype=dtype)
    Ks = torch.tensor(np.stack([c.K for c in cameras]), device=device, dtype=dtype)
    return viewmats, Ks


def frontal_camera(cameras: dict[str, Camera]) -> Camera:
    """The rig's centre hold-out camera (NeRSemble's frontal view), else the camera nearest the rig's mean
    viewing direction."""
    if nersemble.FRONTAL_SERIAL in cameras:
        return cameras[nersemble.FRONTAL_SERIAL]
    forward = np.mean([c.world_2_cam[2, :3] for c in cameras.values()], 0)
    return max(cameras.values(), key=lambda c: float(c.world_2_cam[2, :3] @ forward))


def rig_up(cameras: Sequence[Camera]) -> np.ndarray:
    """World direction (3,) that is up in the rig's images (OpenCV's camera y points down)."""
    up = -np.mean([c.world_2_cam[1, :3] for c in cameras], 0)
    return up / np.linalg.norm(up)


def _swung(reference: Camera, target: np.ndarray, up: np.ndarray, angles: list[float], name: str) -> list[Camera]:
    """`reference` rotated about the axis `up` through `target` by each angle (radians), looking at `target`."""
    eye0 = reference.center - target
    cams = []
    for i, a in enumerate(angles):
        rot = cv2.Rodrigues((up * a).reshape(3, 1))[0]  # (3, 3) rotation about `up`
        w2c = look_at(target + rot @ eye0, target, up)
        cams.append(
            Camera(
                K=reference.K, world_2_cam=w2c, width=reference.width, height=reference.height, serial=f"{name}{i:03d}"
            )
        )
    return cams


def orbit_cameras(reference: Camera, target: np.ndarray, up: np.ndarray, n: int, degrees: float) -> list[Camera]:
    """`reference` swung about the axis `up` through `target`: angle = degrees * sin(2 pi i / n)."""
    return _swung(
        reference, target, up, [math.radians(degrees) * math.sin(2 * math.pi * i / n) for i in range(n)], "orbit"
    )


def turntable_cameras(reference: Camera, target: np.ndarray, up: np.ndarray, n: int) -> list[Camera]:
    """`reference` carried once around `target` about `up` in n even steps."""
    return _swung(reference, target, up, [2 * math.pi * i / n for i in range(n)], "turntable")
