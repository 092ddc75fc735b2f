"""The training objective: one small function per term, named like the weight that scales it.

`compute_losses` returns {name: unweighted term}; `LossWeights` has one field per name, and the total is
the weighted sum, so every term can be logged by name and switched off by a zero weight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from npga.avatar.deform import Gaussians
from npga.avatar.dynamics import APPEARANCE, MOTION
from npga.avatar.graph import laplacian
from npga.config import Positive
from npga.metrics import ssim


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    """Mean absolute colour error against the ground truth composited on the background."""
    ssim: float = 0.2
    """1 - SSIM (Gaussian window 11, sigma 1.5)."""
    alpha: float = 0.1
    """Mean absolute error of the rendered alpha against the alpha map (silhouette)."""
    laplacian_features: float = 1.0
    """Laplacian of the latent features on the kNN graph: neighbours carry similar features."""
    laplacian_dynamics: float = 0.1
    """Laplacian of the detail network's motion residuals (position, rotation, scale): neighbours move alike."""
    laplacian_appearance: float = 0.1
    """Laplacian of the detail network's appearance residuals (colour, opacity): neighbours change alike."""
    residual: float = 0.01
    """Mean squared motion residual (position, rotation, scale): the coarse field explains what it can."""
    residual_appearance: float = 0.01
    """Mean squared appearance residual (colour, opacity): the canonical Gaussians explain what they can. Apart
    from `residual` because the two fail differently: free motion fits the tracking noise (a pose error is a
    motion), while an opening mouth or a crease is an appearance change a strong prior forbids."""
    residual_l1: float = 0.0
    """Mean absolute detail residual: a sparse prior. Like the squared one it keeps the many small residuals
    that would fit noise at zero, but a few Gaussians may change a lot (a mouth that opens) at linear cost."""
    scale: float = 1.0
    """Largest standard deviation beyond `max_scale` (head units), squared: no needle or blob artefacts."""
    max_scale: Positive = 0.005
    """Threshold of the scale term (not a loss term)."""
    opacity_reg: float = 0.0
    """Mean opacity: 3DGS-MCMC's pressure towards few visible Gaussians (gsplat's MCMC preset: 0.01)."""
    scale_reg: float = 0.0
    """Mean standard deviation: 3DGS-MCMC's pressure towards small Gaussians (gsplat's MCMC preset: 0.01)."""
    lpips: float = 0.0
    """LPIPS (AlexNet) against the ground truth, when its weights are present (see `npga.metrics.LPIPS`)."""
    lpips_start: int = 0
    """First step with the LPIPS term (the paper adds it late; not a loss term)."""


SETTINGS = ("max_scale", "lpips_start")  # fields of LossWeights that are not weights
LOSS_TERMS = tuple(f.name for f in dataclasses.fields(LossWeights) if f.name not in SETTINGS)


def l1(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return (pred - gt).abs().mean()


def dssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim(pred, gt).mean()


def scale_excess(scales: torch.Tensor, max_scale: float) -> torch.Tensor:
    """Mean squared excess (in units of max_scale) of each Gaussian's largest standard deviation (N, 3)."""
    return ((scales.max(-1).values - max_scale).clamp_min(0) / max_scale).square().mean()


def compute_losses(
    rgb: torch.Tensor,  # (C, H, W, 3) rendered on the background
    alpha: torch.Tensor,  # (C, H, W, 1)
    gt_rgb: torch.Tensor,  # (C, H, W, 3) composited on the same background
    gt_alpha: torch.Tensor,  # (C, H, W, 1)
    gaussians: Gaussians,
    neighbors: torch.Tensor,  # (N, k) kNN graph of the canonical means
    weights: LossWeights,
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Every unweighted term by name (the keys of LOSS_TERMS); terms with zero weight are not computed.

    `lpips` ((C, H, W, 3) pair -> (C,), differentiable) is absent when its weights are, or before
    `lpips_start`: its term is then zero.
    """
    zero = rgb.new_zeros(())
    w = {name: getattr(weights, name) for name in LOSS_TERMS}
    feats, res = gaussians.features, gaussians.residuals
    terms = {
        "l1": lambda: l1(rgb, gt_rgb),
        "ssim": lambda: dssim(rgb, gt_rgb),
        "alpha": lambda: l1(alpha, gt_alpha),
        "laplacian_features": lambda: zero if feats is None else laplacian(feats, neighbors),
        "laplacian_dynamics": lambda: zero if res is None else laplacian(res[:, MOTION], neighbors),
        "laplacian_appearance": lambda: zero if res is None else laplacian(res[:, APPEARANCE], neighbors),
        "residual": lambda: zero if res is None else res[:, MOTION].square().sum(-1).mean(),
        "residual_appearance": lambda: zero if res is None else res[:, APPEARANCE].square().sum(-1).mean(),
        "residual_l1": lambda: zero if res is None else res.abs().sum(-1).mean(),
        "scale": lambda: scale_excess(gaussians.scales, weights.max_scale),
        "opacity_reg": lambda: gaussians.opacities.mean(),
        "scale_reg": lambda: gaussians.scales.mean(),
        "lpips": lambda: zero if lpips is None else lpips(rgb, gt_rgb).mean(),
    }
    return {name: fn() if w[name] != 0 else zero for name, fn in terms.items()}


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted sum of `compute_losses`' terms."""
    return sum(getattr(weights, name) * value for name, value in terms.items())
