"""EWA projection of 3D Gaussians to screen-space splats, constant for constant as gsplat 1.5 (pinhole).

Differentiable w.r.t. means, quats and scales through autograd (a few dozen ops over N, cheap next to
compositing). The radii are not differentiated, as in gsplat: they only decide which tiles a splat visits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from npga.geometry import quat_to_matrix

ALPHA_THRESHOLD = 1.0 / 255.0  # fragments below this alpha are skipped; splats below it are culled
MAX_EXTENT_SIGMAS = 3.33  # screen-space extent cap, in standard deviations


@dataclass(frozen=True)
class Projected:
    """Per camera and Gaussian; radius 0 marks a culled pair (its other fields are finite but meaningless)."""

    means2d: torch.Tensor  # (C, N, 2) pixel coordinates
    conics: torch.Tensor  # (C, N, 3) inverse 2D covariance: xx, xy, yy
    depths: torch.Tensor  # (C, N) camera-space z
    radii: torch.Tensor  # (C, N, 2) int32 screen-space half extent in x and y


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariance R S S R^T (..., 3, 3) from wxyz quaternions (..., 4, any norm) and standard deviations
    (..., 3): gsplat's `quat_scale_to_covar_preci` (a CUDA kernel) in PyTorch."""
    M = quat_to_matrix(quats) * scales[..., None, :]  # (..., 3, 3) = R @ diag(s)
    return M @ M.transpose(-1, -2)


def project(
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4)
    scales: torch.Tensor,  # (N, 3)
    opacities: torch.Tensor,  # (N,)
    viewmats: torch.Tensor,  # (C, 4, 4)
    Ks: torch.Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    radius_clip: float = 0.0,
) -> Projected:
    """Screen-space splats; culled (radius 0): outside [near, far], degenerate, below 1/255 opacity, off screen."""
    R = viewmats[:, None, :3, :3]  # (C, 1, 3, 3)
    mean_c = (R @ means[None, :, :, None]).squeeze(-1) + viewmats[:, None, :3, 3]  # (C, N, 3)
    covar_c = R @ quat_scale_to_covar(quats, scales)[None] @ R.transpose(-1, -2)  # (C, N, 3, 3)
    x, y, z = mean_c.unbind(-1)  # (C, N)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))  # culled ones must not poison gradients with 1/0

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # (C, 1)
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # The Jacobian is taken at the position clamped to 1.3x the field of view, so splats far off screen do
    # not get huge footprints.
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z_safe
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], -1)
    J = J.reshape(*z.shape, 2, 3)  # (C, N, 2, 3)
    cov2d = J @ covar_c @ J.transpose(-1, -2)  # (C, N, 2, 2)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)  # (C, N, 2)

    a = cov2d[..., 0, 0] + eps2d  # low-pass filter: every splat covers at least about a pixel
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    invertible = in_depth & (det > 0)
    det = torch.where(invertible, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)  # (C, N, 3)

    with torch.no_grad():
        opac = opacities[None].expand_as(z)
        valid = invertible & (opac >= ALPHA_THRESHOLD)
        # Opacity-aware extent: beyond it a fragment's alpha is below ALPHA_THRESHOLD anyway.
        extend = torch.sqrt(2.0 * torch.log((opac / ALPHA_THRESHOLD).clamp_min(1.0))).clamp(max=MAX_EXTENT_SIGMAS)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        valid &= (rx > radius_clip) | (ry > radius_clip)
        mx, my = means2d.unbind(-1)
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], -1).where(valid[..., None], 0.0).to(torch.int32)

    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii)


@torch.no_grad()
def may_draw(
    means: torch.Tensor,  # (N, 3)
    scales: torch.Tensor,  # (N, 3)
    viewmats: torch.Tensor,  # (C, 4, 4)
    Ks: torch.Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
) -> torch.Tensor:
    """(C, N) bool, True for every Gaussian `project` gives a footprint on each image (and for some more): a
    bound from the largest standard deviation and the projection's largest stretch, sqrt(1 + (x^2 + y^2) / z^2)
    f / z, instead of each covariance (a tenth of the cost), for callers that draw part of an image from fewer
    Gaussians."""
    mean_c = means[None] @ viewmats[:, :3, :3].transpose(-1, -2) + viewmats[:, None, :3, 3]  # (C, N, 3)
    x, y, z = mean_c.unbind(-1)
    ahead = z >= near_plane
    rz = 1.0 / torch.where(ahead, z, torch.ones_like(z))
    f = torch.maximum(Ks[:, 0, 0], Ks[:, 1, 1])[:, None]  # (C, 1)
    stretch = f * rz * torch.sqrt(1.0 + (x * x + y * y) * rz * rz)  # (C, N) pixels per head unit, at most
    sigma = torch.sqrt((stretch * scales.max(-1).values) ** 2 + eps2d)  # (C, N) pixels
    r = torch.ceil(MAX_EXTENT_SIGMAS * sigma)
    u = Ks[:, 0, 0, None] * x * rz + Ks[:, 0, 2, None]
    v = Ks[:, 1, 1, None] * y * rz + Ks[:, 1, 2, None]
    return ahead & (u + r > 0) & (u - r < width) & (v + r > 0) & (v - r < height)
