"""Argument checks for `rasterize`: bad input fails here, naming the argument, not deep inside a backend."""

from __future__ import annotations

from typing import Any

import torch

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "gsplat", "torch")


def _tensor(name: str, t: Any, shape: tuple[int | None, ...], dtype: torch.dtype | None) -> None:
    """`t` is a floating tensor of `shape` (None: any size), of `dtype` if given."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must have the dtype of means ({dtype}), got {t.dtype}")


def _finite(named: dict[str, torch.Tensor]) -> None:
    """All values finite; one device sync for all tensors, however many."""
    finite = torch.stack([torch.isfinite(t).all() for t in named.values()])
    if not finite.all():
        bad = [name for name, ok in zip(named, finite.tolist(), strict=True) if not ok]
        raise ValueError(f"NaN or infinite values in {', '.join(bad)}")


def validate_arguments(
    means: Any,
    quats: Any,
    scales: Any,
    opacities: Any,
    colors: Any,
    viewmats: Any,
    Ks: Any,
    width: Any,
    height: Any,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    backgrounds: Any,
    render_mode: Any,
    backend: Any,
) -> None:
    """Raise ValueError naming the first argument that does not match gsplat.rasterization's contract."""
    _tensor("means", means, (None, 3), None)
    N, dtype = means.shape[0], means.dtype
    _tensor("quats", quats, (N, 4), dtype)
    _tensor("scales", scales, (N, 3), dtype)
    _tensor("opacities", opacities, (N,), dtype)
    _tensor("viewmats", viewmats, (None, 4, 4), dtype)
    C = viewmats.shape[0]
    if C == 0:
        raise ValueError("viewmats must hold at least one camera, got shape (0, 4, 4)")
    _tensor("Ks", Ks, (C, 3, 3), dtype)
    if isinstance(colors, torch.Tensor) and colors.ndim == 3:
        _tensor("colors", colors, (C, N, None), dtype)
    else:
        _tensor("colors", colors, (N, None), dtype)
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0 < near_plane < far_plane:
        raise ValueError(
            f"near_plane and far_plane must satisfy 0 < near_plane < far_plane, got {near_plane}, {far_plane}"
        )
    if not eps2d >= 0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backgrounds is not None:
        # gsplat wants (C, D) and ignores it in the depth-only modes; (C, 1) is fine there too.
        D = colors.shape[-1]
        if render_mode in ("D", "ED") and isinstance(backgrounds, torch.Tensor) and backgrounds.shape == (C, 1):
            D = 1
        _tensor("backgrounds", backgrounds, (C, D), dtype)
    named = {"quats": quats, "scales": scales, "opacities": opacities, "colors": colors, "viewmats": viewmats, "Ks": Ks}
    if backgrounds is not None:
        named["backgrounds"] = backgrounds
    for name, t in named.items():
        if t.device != means.device:
            raise ValueError(f"{name} is on {t.device} but means is on {means.device}: use one device")
    _finite({"means": means, **named})
