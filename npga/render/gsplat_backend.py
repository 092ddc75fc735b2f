"""The CUDA backend: a thin call into gsplat.rasterization ("classic" mode, colours given, no SH).

gsplat compiles its CUDA kernels the first time they run (needs nvcc and ninja; minutes, once per machine)
and refuses CPU tensors, so this module is only entered with CUDA tensors. gsplat is imported here, not at
module level, so importing npga.render never loads it.
"""

from __future__ import annotations

from typing import Any

import torch


def rasterize_gsplat(
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
    packed: bool,
    absgrad: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """gsplat.rasterization with our arguments; `meta` is gsplat's own, plus "backend"."""
    if not means.is_cuda:
        raise ValueError(f"backend='gsplat' needs CUDA tensors, got means on {means.device}; use backend='torch'")
    from gsplat import rasterization

    render_colors, render_alphas, meta = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        eps2d=eps2d,
        backgrounds=backgrounds,
        render_mode=render_mode,
        packed=packed,
        absgrad=absgrad,
        rasterize_mode="classic",
    )
    meta["backend"] = "gsplat"
    return render_colors, render_alphas, meta
