"""Loss terms against hand-computed values; weights and terms share names."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from npga.avatar.deform import Gaussians
from npga.losses import LOSS_TERMS, LossWeights, compute_losses, scale_excess, total_loss


def _gaussians(n: int = 5, scales: torch.Tensor | None = None) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    return Gaussians(
        means=torch.randn(n, 3, generator=g),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        scales=torch.full((n, 3), 0.001) if scales is None else scales,
        opacities=torch.rand(n, generator=g),
        colors=torch.rand(n, 3, generator=g),
        features=torch.randn(n, 4, generator=g),
        residuals=torch.randn(n, 14, generator=g),
    )


def test_every_term_has_a_weight_of_the_same_name():
    names = {f.name for f in dataclasses.fields(LossWeights)}
    assert set(LOSS_TERMS) <= names
    assert {"max_scale", "lpips_start"} == names - set(LOSS_TERMS)


def test_scale_excess_by_hand():
    scales = torch.tensor([[0.002, 0.001, 0.001], [0.010, 0.003, 0.001], [0.0075, 0.0, 0.0]])
    # largest sigma 0.002, 0.010, 0.0075 vs 0.005: excess 0, 1.0, 0.5 (in units of 0.005) -> mean of squares
    assert scale_excess(scales, 0.005).item() == pytest.approx((0 + 1.0 + 0.25) / 3)


def test_terms_and_weighted_total():
    rgb = torch.full((1, 16, 16, 3), 0.5, requires_grad=True)
    gt = torch.full((1, 16, 16, 3), 0.75)
    alpha, gt_alpha = torch.ones(1, 16, 16, 1), torch.full((1, 16, 16, 1), 0.5)
    g = _gaussians()
    neighbors = torch.tensor([[1], [0], [3], [2], [0]])
    fake_lpips = lambda a, b: (a - b).abs().mean((1, 2, 3)) * 2
    w = LossWeights(lpips=0.5, residual_l1=0.01)
    terms = compute_losses(rgb, alpha, gt, gt_alpha, g, neighbors, w, fake_lpips)
    assert set(terms) == set(LOSS_TERMS)
    assert terms["l1"].item() == pytest.approx(0.25)
    assert terms["alpha"].item() == pytest.approx(0.5)
    assert terms["lpips"].item() == pytest.approx(0.5)
    r = g.residuals.detach().numpy()
    # motion: position, rotation, scale (the first 10 of 14); appearance: colour, opacity (the last 4)
    motion_sq = [sum(v * v for v in row[:10]) for row in r]
    appearance_sq = [sum(v * v for v in row[10:]) for row in r]
    assert terms["residual"].item() == pytest.approx(sum(motion_sq) / len(r), rel=1e-5)
    assert terms["residual_appearance"].item() == pytest.approx(sum(appearance_sq) / len(r), rel=1e-5)
    # each Gaussian's one neighbour: mean over edges of the squared difference, split the same way
    pairs = [(i, int(j)) for i, j in enumerate(neighbors[:, 0])]
    lap = lambda cols: sum(sum((r[i][c] - r[j][c]) ** 2 for c in cols) for i, j in pairs) / len(pairs)
    assert terms["laplacian_dynamics"].item() == pytest.approx(lap(range(10)), rel=1e-5)
    assert terms["laplacian_appearance"].item() == pytest.approx(lap(range(10, 14)), rel=1e-5)
    assert terms["residual_l1"].item() == pytest.approx(sum(abs(v) for row in r for v in row) / len(r), rel=1e-5)
    assert terms["scale"].item() == 0.0
    expected = sum(getattr(w, k) * v for k, v in terms.items())
    assert total_loss(terms, w).item() == pytest.approx(expected.item())
    total_loss(terms, w).backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0

    # no LPIPS model (weights absent, or before lpips_start) and zero weights: zero terms, no work
    off = dataclasses.replace(w, ssim=0.0, laplacian_features=0.0)
    terms = compute_losses(rgb, alpha, gt, gt_alpha, g, neighbors, off, None)
    assert terms["lpips"].item() == 0.0 and terms["ssim"].item() == 0.0 and terms["laplacian_features"].item() == 0.0
