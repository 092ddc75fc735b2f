"""Between a browser's viewport camera (viser) and our `Camera`, both in OpenCV axes.

viser reports a viewport as the camera-to-world rotation `wxyz` (x right, y down, z forward, the OpenCV
convention our cameras use), the camera centre `position` and the vertical field of view in radians; the
image is the canvas, square pixels, principal point in its centre. So only the direction of the transform
and the intrinsics change here, never the axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from npga.cameras import Camera
from npga.geometry import fov_from_intrinsics, intrinsics_from_fov, matrix_to_quat, quat_to_matrix


def viewport_camera(wxyz: np.ndarray, position: np.ndarray, fov: float, width: int, height: int) -> Camera:
    """Our Camera for a viewport: camera-to-world rotation `wxyz` (4,), centre `position` (3,), vertical
    field of view `fov` (radians), `width` x `height` pixels."""
    # (3, 3) columns: camera axes in world coordinates
    R_world_cam = quat_to_matrix(torch.as_tensor(np.asarray(wxyz, dtype=np.float64))).numpy()
    w2c = np.eye(4)
    w2c[:3, :3] = R_world_cam.T
    w2c[:3, 3] = -R_world_cam.T @ np.asarray(position, dtype=np.float64)
    return Camera(K=intrinsics_from_fov(fov, width, height), world_2_cam=w2c, width=width, height=height)


@dataclass(frozen=True)
class ViewportPose:
    """What a viewport needs to look through a camera: viser's camera fields."""

    wxyz: np.ndarray  # (4,) camera -> world rotation
    position: np.ndarray  # (3,) camera centre
    look_at: np.ndarray  # (3,) the orbit centre, on the optical axis
    up_direction: np.ndarray  # (3,) world direction that is up in the image
    fov: float  # vertical, radians


def camera_viewport(camera: Camera, target: np.ndarray) -> ViewportPose:
    """The viewport pose of `camera`, orbiting about the point of its optical axis nearest to `target` (3,).

    The field of view is the camera's vertical one; a viewport of another aspect ratio shows more or less
    to the sides.
    """
    R_world_cam = camera.world_2_cam[:3, :3].T
    forward = R_world_cam[:, 2]
    centre = camera.center
    distance = max(float((np.asarray(target, dtype=np.float64) - centre) @ forward), 1e-3)
    return ViewportPose(
        wxyz=matrix_to_quat(torch.from_numpy(R_world_cam)).numpy(),
        position=centre,
        look_at=centre + distance * forward,
        up_direction=-R_world_cam[:, 1],
        fov=fov_from_intrinsics(camera.K, camera.height),
    )


def fit_resolution(width: int, height: int, longest_side: int) -> tuple[int, int]:
    """`width` x `height` scaled down (never up) so its longest side is at most `longest_side`, aspect kept."""
    scale = min(1.0, longest_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
