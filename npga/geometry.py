"""The geometric conventions npga shares, each written once: pinhole intrinsics, rotations, video sizes.

Camera axes are OpenCV's: x right, y down, z forward. Pixel centres lie at +0.5 (COLMAP's convention, not
OpenCV's), so the image centre is (width / 2, height / 2). Quaternions are Hamilton's, stored w, x, y, z (as
gsplat stores Gaussian orientations and COLMAP writes cameras). Rotations act on column vectors: x' = R x.

Imports nothing else of npga, so any layer (the rasterizer included) may use it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ---- pinhole intrinsics ----------------------------------------------------------------------------------------


def centred_intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """(3, 3) K with square pixels of focal length `focal` (pixels) and the principal point at the image centre."""
    return np.array([[focal, 0.0, 0.5 * width], [0.0, focal, 0.5 * height], [0.0, 0.0, 1.0]])


def intrinsics_from_fov(fov_y: float, width: int, height: int) -> np.ndarray:
    """(3, 3) centred K whose vertical field of view is `fov_y` (radians) over `height` pixels."""
    return centred_intrinsics(0.5 * height / math.tan(0.5 * fov_y), width, height)


def fov_from_intrinsics(K: np.ndarray, height: int) -> float:
    """Vertical field of view (radians) of a centred K (3, 3) over `height` pixels."""
    return 2.0 * math.atan(0.5 * height / K[1, 1])


# ---- video frame sizes -------------------------------------------------------------------------------------------


def even_side(n: int) -> int:
    """`n` pixels rounded down to an even number, at least 2: H.264 (yuv420p) needs even frame sizes."""
    return max(2, n // 2 * 2)


# ---- rotations -------------------------------------------------------------------------------------------------


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation matrices (..., 3, 3) of axis-angle vectors (..., 3) (angle = |v| radians about v).

    Near zero, sin(t) / t and (1 - cos t) / t^2 are replaced by their Taylor series, so the value is exact and
    the gradient finite at and around the identity.
    """
    theta2 = (v * v).sum(-1)[..., None, None]  # (..., 1, 1)
    theta = theta2.clamp_min(1e-12).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    k = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)  # [v]_x
    return torch.eye(3, dtype=v.dtype, device=v.device) + a * k + b * (k @ k)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors (..., 3), angles in [0, pi], of rotation matrices (..., 3, 3): the inverse of
    `axis_angle_to_matrix`, through the quaternion (w >= 0) so that no angle is numerically singular."""
    q = matrix_to_quat(R)  # (..., 4)
    w, v = q[..., :1], q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)  # sin(angle / 2)
    angle = 2 * torch.atan2(s, w)
    return v * torch.where(s > 1e-12, angle / s.clamp_min(1e-12), 2 / w)  # small angles: angle / s -> 2 / w


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) w, x, y, z of any non-zero norm."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (..., 4) w, x, y, z with w >= 0 of rotation matrices (..., 3, 3).

    Each of the four candidate formulas divides by one component; the largest one is picked (Shepperd), so
    no rotation is numerically singular.
    """
    m = R.reshape(-1, 3, 3)
    t = m.diagonal(dim1=-2, dim2=-1)  # (B, 3)
    candidates = torch.stack(
        [
            torch.stack([1 + t.sum(-1), m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
            torch.stack(
                [
                    m[:, 2, 1] - m[:, 1, 2],
                    1 + t[:, 0] - t[:, 1] - t[:, 2],
                    m[:, 0, 1] + m[:, 1, 0],
                    m[:, 0, 2] + m[:, 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[:, 0, 2] - m[:, 2, 0],
                    m[:, 0, 1] + m[:, 1, 0],
                    1 - t[:, 0] + t[:, 1] - t[:, 2],
                    m[:, 1, 2] + m[:, 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[:, 1, 0] - m[:, 0, 1],
                    m[:, 0, 2] + m[:, 2, 0],
                    m[:, 1, 2] + m[:, 2, 1],
                    1 - t[:, 0] - t[:, 1] + t[:, 2],
                ],
                -1,
            ),
        ],
        1,
    )  # (B, 4 candidates, 4); candidate k is 4 q_k q
    k = torch.stack(
        [
            1 + t.sum(-1),
            1 + t[:, 0] - t[:, 1] - t[:, 2],
            1 - t[:, 0] + t[:, 1] - t[:, 2],
            1 - t[:, 0] - t[:, 1] + t[:, 2],
        ],
        -1,
    ).argmax(-1)
    q = F.normalize(candidates.gather(1, k[:, None, None].expand(-1, 1, 4))[:, 0], dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(*R.shape[:-2], 4)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b (..., 4) of quaternions w, x, y, z: rotating by b, then by a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def quat_from_z_to(n: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (N, 4) w, x, y, z rotating the z axis onto unit vectors n (N, 3) (the shortest arc)."""
    w = 1.0 + n[:, 2]
    q = torch.stack([w, -n[:, 1], n[:, 0], torch.zeros_like(w)], -1)  # (1 + z.n, z x n)
    opposite = w < 1e-6  # n = -z: any half turn about an axis in the xy plane
    q = torch.where(opposite[:, None], q.new_tensor([0.0, 1.0, 0.0, 0.0]), q)
    return F.normalize(q, dim=-1)


ROTATION_TOL = 1e-3
"""How far a calibration's rotation may be from orthonormal with det 1 (or a quaternion from unit length)."""


def check_rotation(R: np.ndarray, where: str) -> None:
    """Raise unless R is a proper rotation: R R^T = I and det R = 1 (within 1e-3)."""
    if not np.isfinite(R).all():
        raise ValueError(f"{where} contains NaN or inf")
    det = float(np.linalg.det(R))
    if abs(det - 1) > ROTATION_TOL or np.abs(R @ R.T - np.eye(3)).max() > ROTATION_TOL:
        raise ValueError(
            f"{where} is not a rotation (det {det:.4g}, max |R R^T - I| "
            f"{np.abs(R @ R.T - np.eye(3)).max():.3g}); singular, scaled or mirrored"
        )
