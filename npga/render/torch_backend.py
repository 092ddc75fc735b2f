"""The PyTorch backend: gsplat 1.5 "classic" image formation on any device, used on the CPU.

Projection (autograd), tile binning and compositing (hand-written backward) glued together with gsplat's
render modes and the `meta` that gsplat.strategy.DefaultStrategy reads, in gsplat's unpacked layout.
"""

from __future__ import annotations

from typing import Any

import torch

from npga.render.composite import composite
from npga.render.projection import project
from npga.render.tiles import bin_splats

# 8x8 tiles: 16x16 ones (gsplat's) make a CPU evaluate ~2x more splat-pixel pairs that cannot touch;
# 4x4 ones save a little compositing but lose it again in binning (10k splats at 128^2, 2 cores).
TILE_SIZE = 8


def rasterize_torch(
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4)
    scales: torch.Tensor,  # (N, 3)
    opacities: torch.Tensor,  # (N,)
    colors: torch.Tensor,  # (N, D) or (C, N, D)
    viewmats: torch.Tensor,  # (C, 4, 4)
    Ks: torch.Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    eps2d: float,
    backgrounds: torch.Tensor | None,  # (C, D)
    render_mode: str,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Same outputs as gsplat.rasterization(..., packed=False, rasterize_mode="classic")."""
    C, N = viewmats.shape[0], means.shape[0]
    proj = project(
        means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d, radius_clip
    )
    cols = colors if colors.ndim == 3 else colors.expand(C, N, colors.shape[-1])  # (C, N, D)
    depth = proj.depths[..., None]  # (C, N, 1)
    if render_mode in ("D", "ED"):
        cols = depth
    elif render_mode in ("RGB+D", "RGB+ED"):
        cols = torch.cat([cols, depth], -1)
    if backgrounds is not None and render_mode in ("D", "ED"):
        backgrounds = torch.zeros_like(backgrounds[:, :1])  # gsplat: depth has no background
    elif backgrounds is not None and render_mode in ("RGB+D", "RGB+ED"):
        backgrounds = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], -1)

    bins = bin_splats(proj.means2d, proj.radii, proj.depths, width, height, TILE_SIZE)
    opac = opacities[None].expand(C, N)
    acc, T = composite(proj.means2d, proj.conics, opac, cols, bins, width, height)
    T = T[..., None]  # (C, H, W, 1)
    render_colors = acc if backgrounds is None else acc + T * backgrounds[:, None, None, :]
    render_alphas = 1.0 - T
    if render_mode in ("ED", "RGB+ED"):
        expected = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], expected], -1)
    meta = {
        "camera_ids": None,
        "gaussian_ids": None,
        "batch_ids": None,
        "radii": proj.radii,  # (C, N, 2) int32
        "means2d": proj.means2d,  # (C, N, 2) receives d loss / d means2d after backward (retain_grad)
        "depths": proj.depths,  # (C, N)
        "conics": proj.conics,  # (C, N, 3)
        "opacities": opac,  # (C, N)
        "tile_size": TILE_SIZE,
        "tile_width": bins.tiles_x,
        "tile_height": bins.tiles_y,
        "width": width,
        "height": height,
        "n_cameras": C,
        "n_batches": 1,
        "backend": "torch",
    }
    return render_colors, render_alphas, meta
