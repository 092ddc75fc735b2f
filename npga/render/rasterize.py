"""`rasterize`: gsplat's `rasterization` signature (the subset npga uses) on CPU and CUDA.

Arguments mean exactly what they mean in gsplat 1.5, so code written against one backend runs on the
other, and `meta` carries what `gsplat.strategy.DefaultStrategy` reads (means2d with gradients, radii,
width, height, n_cameras, gaussian_ids), so densification works unchanged on either backend.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from npga.render.projection import project
from npga.render.torch_backend import TILE_SIZE, rasterize_torch

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def _check(name: str, t: Any, shape: tuple[int | None, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    ok = t.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape, strict=False))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")


def validate_arguments(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    backgrounds: torch.Tensor | None,
    render_mode: str,
) -> None:
    """Raise ValueError naming the first bad argument."""
    _check("means", means, (None, 3))
    N = means.shape[0]
    _check("quats", quats, (N, 4))
    _check("scales", scales, (N, 3))
    _check("opacities", opacities, (N,))
    _check("viewmats", viewmats, (None, 4, 4))
    C = viewmats.shape[0]
    if C == 0:
        raise ValueError("viewmats must hold at least one camera, got shape (0, 4, 4)")
    _check("Ks", Ks, (C, 3, 3))
    if colors.ndim == 2:
        _check("colors", colors, (N, None))
    else:
        _check("colors", colors, (C, N, None))
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive integers, got {width!r} x {height!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if backgrounds is not None:
        D = 1 if render_mode in ("D", "ED") else colors.shape[-1]
        _check("backgrounds", backgrounds, (C, D))
    devices = {t.device for t in (means, quats, scales, opacities, colors, viewmats, Ks)}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")


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

    D' is D for "RGB", 1 for "D"/"ED" and D + 1 for "RGB+D"/"RGB+ED". "auto" uses gsplat on CUDA tensors
    and the PyTorch backend otherwise. `packed` and `absgrad` are forwarded to gsplat; the PyTorch
    backend is always unpacked and has no absgrad.
    """
    validate_arguments(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, render_mode)
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "torch"
    if backend == "gsplat":
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
            radius_clip, eps2d, backgrounds, render_mode, packed, absgrad,
        )  # fmt: skip
    if backend != "torch":
        raise ValueError(f"backend must be 'auto', 'gsplat' or 'torch', got {backend!r}")
    if absgrad:
        raise ValueError("absgrad=True needs the gsplat backend")
    C = viewmats.shape[0]
    proj = project(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
                   radius_clip)  # fmt: skip
    cols = colors if colors.ndim == 3 else colors[None].expand(C, *colors.shape)
    depth = proj.depths[..., None]  # (C, N, 1)
    if render_mode in ("D", "ED"):
        cols = depth
    elif render_mode in ("RGB+D", "RGB+ED"):
        cols = torch.cat([cols, depth], -1)
    if backgrounds is None:
        bg = torch.zeros(C, cols.shape[-1], dtype=means.dtype, device=means.device)
    elif render_mode in ("D", "ED"):
        bg = torch.zeros_like(backgrounds)
    elif render_mode in ("RGB+D", "RGB+ED"):
        bg = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], -1)
    else:
        bg = backgrounds
    render_colors, render_alphas = rasterize_torch(proj, opacities, cols, bg, width, height)
    if render_mode in ("ED", "RGB+ED"):
        expected = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], expected], -1)
    meta = {
        "means2d": proj.means2d,
        "radii": proj.radii,
        "depths": proj.depths,
        "conics": proj.conics,
        "gaussian_ids": None,
        "camera_ids": None,
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        "n_cameras": C,
        "n_batches": 1,
        "backend": "torch",
    }
    return render_colors, render_alphas, meta


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, radius_clip,
    eps2d, backgrounds, render_mode, packed, absgrad,
):  # fmt: skip
    """A thin call into gsplat (CUDA only; its kernels compile on first use, minutes, once per machine)."""
    if not means.is_cuda:
        raise ValueError("backend='gsplat' needs CUDA tensors; use backend='torch' on the CPU")
    from gsplat import rasterization

    render_colors, render_alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        backgrounds=backgrounds, render_mode=render_mode, packed=packed, absgrad=absgrad,
        rasterize_mode="classic",
    )  # fmt: skip
    meta["backend"] = "gsplat"
    return render_colors, render_alphas, meta
