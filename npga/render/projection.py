"""EWA projection of 3D Gaussians to screen space, constant for constant as gsplat 1.5 ("classic", pinhole).

Differentiable w.r.t. means, quats, scales (and opacities through nothing: the opacity only bounds the
screen-space extent, which, as in gsplat, is not differentiated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALPHA_THRESHOLD = 1.0 / 255.0  # fragments below this alpha are skipped
MAX_EXTENT_SIGMAS = 3.33  # screen-space extent cap, in standard deviations


@dataclass(frozen=True)
class Projected:
    """Per camera and Gaussian; radius 0 marks a culled pair."""

    means2d: torch.Tensor  # (C, N, 2) pixel coordinates
    conics: torch.Tensor  # (C, N, 3) inverse 2D covariance: xx, xy, yy
    depths: torch.Tensor  # (C, N) camera-space z
    radii: torch.Tensor  # (C, N, 2) int32 screen-space half extent in x and y


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariance R S S R^T (N, 3, 3) from wxyz quaternions (N, 4, any norm) and scales (N, 3)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # fmt: skip
    M = R * scales[:, None, :]  # (N, 3, 3) = R @ diag(s)
    return M @ M.transpose(-1, -2)


def project(
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4)
    scales: torch.Tensor,  # (N, 3)
    opacities: torch.Tensor,  # (N,) or (C, N)
    viewmats: torch.Tensor,  # (C, 4, 4)
    Ks: torch.Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    radius_clip: float = 0.0,
) -> Projected:
    R = viewmats[:, None, :3, :3]  # (C, 1, 3, 3)
    t = viewmats[:, None, :3, 3]  # (C, 1, 3)
    mean_c = (R @ means[None, :, :, None]).squeeze(-1) + t  # (C, N, 3)
    covar = quat_scale_to_covar(quats, scales)  # (N, 3, 3)
    covar_c = R @ covar[None] @ R.transpose(-1, -2)  # (C, N, 3, 3)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # (C, 1)
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = mean_c.unbind(-1)  # (C, N)
    # The Jacobian is evaluated at a position clamped to 1.3x the field of view, so Gaussians far off
    # screen do not get huge screen-space footprints.
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], -1)
    J = J.reshape(*z.shape, 2, 3)  # (C, N, 2, 3)
    cov2d = J @ covar_c @ J.transpose(-1, -2)  # (C, N, 2, 2)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)  # (C, N, 2)

    a = cov2d[..., 0, 0] + eps2d  # low-pass filter: every splat covers at least ~a pixel
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    in_range = (z >= near_plane) & (z <= far_plane) & (det > 0)
    det_safe = torch.where(in_range, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)  # (C, N, 3)

    with torch.no_grad():
        opac = opacities.expand(z.shape) if opacities.ndim == 2 else opacities[None].expand(z.shape)
        valid = in_range & (opac >= ALPHA_THRESHOLD)
        # Opacity-aware extent: beyond it the fragment alpha is below ALPHA_THRESHOLD anyway.
        ratio = (opac / ALPHA_THRESHOLD).clamp_min(1.0)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(ratio)), max=MAX_EXTENT_SIGMAS)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        valid &= ~((rx <= radius_clip) & (ry <= radius_clip))
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= ~((mx + rx <= 0) | (mx - rx >= width) | (my + ry <= 0) | (my - ry >= height))
        valid &= torch.isfinite(mx) & torch.isfinite(my)
        radii = torch.stack([rx, ry], -1).where(valid[..., None], torch.zeros_like(means2d))
        radii = radii.to(torch.int32)

    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii)


def tile_bounds(means2d: torch.Tensor, radii: torch.Tensor, tile_size: int, tiles_x: int, tiles_y: int):
    """Inclusive-exclusive tile rectangle (x0, y0, x1, y1) each (C, N) int64 that a splat touches."""
    m = means2d.detach()
    r = radii.to(m.dtype)
    x0 = torch.floor((m[..., 0] - r[..., 0]) / tile_size).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[..., 0] + r[..., 0]) / tile_size).clamp(0, tiles_x).long()
    y0 = torch.floor((m[..., 1] - r[..., 1]) / tile_size).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[..., 1] + r[..., 1]) / tile_size).clamp(0, tiles_y).long()
    return x0, y0, x1, y1
