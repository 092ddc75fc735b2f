"""Quaternion helpers (w, x, y, z), as gsplat stores Gaussian orientations."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b (..., 4): rotating by b, then by a."""
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


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) of any non-zero norm."""
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
    """Unit quaternions (..., 4) with w >= 0 of rotation matrices (..., 3, 3).

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


def quat_from_z_to(n: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (N, 4) rotating the z axis onto unit vectors n (N, 3): orient flat Gaussians by normals."""
    w = 1.0 + n[:, 2]
    q = torch.stack([w, -n[:, 1], n[:, 0], torch.zeros_like(w)], -1)  # (1 + z.n, z x n)
    opposite = w < 1e-6  # n = -z: any half turn about an axis in the xy plane
    q = torch.where(opposite[:, None], q.new_tensor([0.0, 1.0, 0.0, 0.0]), q)
    return F.normalize(q, dim=-1)
