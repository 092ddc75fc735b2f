"""`rasterize`: gsplat's `rasterization` signature (the subset npga uses) on CPU and CUDA.

Arguments mean exactly what they mean in gsplat 1.5, so code written against one backend runs on the other,
and `meta` carries what gsplat.strategy.DefaultStrategy reads (means2d that receives gradients, radii,
width, height, n_cameras, gaussian_ids), so densification works unchanged on either backend.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from npga.render.gsplat_backend import rasterize_gsplat
from npga.render.torch_backend import rasterize_torch
from npga.render.validate import validate_arguments

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]


def rasterize(
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4) wxyz, any norm
    scales: torch.Tensor,  # (N, 3)
    opacities: torch.Tensor,  # (N,)
    colors: torch.Tensor,  # (N, D) or (C, N, D)
    viewmats: torch.Tensor,  # (C, 4, 4) world -> camera, OpenCV axes
    Ks: torch.Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    backgrounds: torch.Tensor | None = None,  # (C, D)
    render_mode: RenderMode = "RGB",
    packed: bool = False,
    absgrad: bool = False,
    backend: Literal["auto", "gsplat", "torch"] = "auto",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Render Gaussians: colours (C, H, W, D'), alphas (C, H, W, 1) and `meta` for densification.

    D' is D for "RGB", 1 for "D" (accumulated depth) and "ED" (expected depth), D + 1 for "RGB+D" and
    "RGB+ED". "auto" uses gsplat for CUDA tensors and the PyTorch backend otherwise. Unlike gsplat,
    `packed` defaults to False, the default of gsplat's strategies: pass the same value to both. The
    PyTorch backend is unpacked only and has no absgrad.
    """
    validate_arguments(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane,
        far_plane,
        eps2d,
        backgrounds,
        render_mode,
        backend,
    )
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "torch"
    if backend == "gsplat":
        return rasterize_gsplat(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmats,
            Ks,
            width,
            height,
            near_plane,
            far_plane,
            radius_clip,
            eps2d,
            backgrounds,
            render_mode,
            packed,
            absgrad,
        )
    if packed:
        raise ValueError("packed=True needs the gsplat backend; the torch backend is unpacked (packed=False)")
    if absgrad:
        raise ValueError("absgrad=True needs the gsplat backend")
    return rasterize_torch(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane,
        far_plane,
        radius_clip,
        eps2d,
        backgrounds,
        render_mode,
    )
