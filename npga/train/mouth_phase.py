"""The mouth phase: steps after the joint ones that train the mouth network alone, on windows around the mouth.

Trained with everything else, the mouth network learns the opening mouth only as far as the Gaussians under it
hold still: they move and recolour while it learns. Continuing a trained avatar with only the mouth network
learning draws the mouth better (held-out mouth 24.99 -> 25.67 dB over 3 seeds, benchmarks/RESULTS.md, The open
mouth). Only the mouth's pixels can change then, so each step renders a window around the mouth's projection
instead of the frame; the window's loss counts as its share of the frame's mean, so the network's gradient, and
with Adam's moments from the joint steps its step size, stays what the joint steps gave it.

Everything but the mouth network is frozen then, so the first time the phase meets a frame it chooses the
Gaussians that frame's windows can show (`MouthFrame`) and keeps the coarse field's displacement of them; later
steps on that frame deform and draw only those (on the demo about half of the avatar) and skip the coarse field:
a step costs a fifth of a joint one there (2 threads), 2.8x less than drawing every Gaussian.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from npga.avatar import Gaussians
from npga.losses import LossWeights, compute_losses, total_loss

MARGIN = 0.25
"""How far the window reaches past the mouth Gaussians' centres, as a fraction of their extent on screen."""
MIN_WINDOW = 16
"""Smallest window side (pixels): room for SSIM's 11-pixel window."""
SLACK = 0.5
"""How far past a frame's window (a fraction of its size, on every side) `MouthFrame` keeps the Gaussians that
reach: the mouth network moves the mouth's Gaussians, and so the window, within that."""

FROZEN_TERMS = (
    "laplacian_features",
    "laplacian_dynamics",
    "laplacian_appearance",
    "residual",
    "residual_appearance",
    "residual_l1",
)
"""Loss terms of the shared detail network's residuals and the latent features: constant in the phase."""
PER_GAUSSIAN_MEANS = ("scale", "opacity_reg", "scale_reg")
"""Loss terms that are means over every Gaussian."""

MOUTH_FRAMES_BUDGET = 1 << 30
"""Bytes of `MouthFrame`s a trainer keeps (the demo: about 25 MB); frames beyond it draw every Gaussian."""

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class MouthFrame:
    """The part of one training frame the mouth phase draws: every Gaussian inside the mouth region and every one
    whose footprint reaches the frame's mouth window grown by `SLACK` in some training camera (`windows`, from the
    mouth region's Gaussians moved by the coarse field alone, which the phase does not change), with the coarse
    field's displacement of them. Outside the region nothing moves in the phase but for the code noise on the
    frozen detail network, so a step whose window lies inside its camera's grown window draws the same pixels from
    these as from all Gaussians."""

    index: torch.Tensor  # (S,) long, into the avatar's Gaussians
    coarse_offset: torch.Tensor | None  # (S, 3) the coarse field's displacement of them; None without the field
    windows: dict[str, Window]  # training camera serial -> its grown window (absent: the mouth is not in view)

    @property
    def nbytes(self) -> int:
        offsets = 0 if self.coarse_offset is None else self.coarse_offset.nelement() * self.coarse_offset.element_size()
        return self.index.nelement() * self.index.element_size() + offsets


def grow(window: Window, fraction: float, width: int, height: int) -> Window:
    """The window grown by `fraction` of its size on every side, clipped to the image."""
    x0, y0, x1, y1 = window
    dx, dy = math.ceil((x1 - x0) * fraction), math.ceil((y1 - y0) * fraction)
    return max(x0 - dx, 0), max(y0 - dy, 0), min(x1 + dx, width), min(y1 + dy, height)


def contains(outer: Window | None, inner: Window) -> bool:
    """Whether `inner` lies inside `outer` (None: no window, holds nothing)."""
    if outer is None:
        return False
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def mouth_window(
    points: torch.Tensor,  # (M, 3) world
    viewmat: torch.Tensor,  # (4, 4) world -> camera
    K: torch.Tensor,  # (3, 3)
    width: int,
    height: int,
    margin: float,
) -> tuple[int, int, int, int] | None:
    """The pixel window (x0, y0, x1, y1), half-open and inside the image, around the projections of the points
    in front of the camera, grown by `margin` times its size on every side (a Gaussian reaches past its centre)
    and to at least `MIN_WINDOW` pixels a side; None when no point is in front of the camera or the window
    misses the image."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]  # (M, 3)
    cam = cam[cam[:, 2] > 1e-6]
    if not len(cam):
        return None
    uv = (cam @ K.T)[:, :2] / cam[:, 2:]  # (M, 2) pixel coordinates
    lo, hi = uv.min(0).values.tolist(), uv.max(0).values.tolist()
    window = []
    for a, b, size in zip(lo, hi, (width, height), strict=True):
        half = max((b - a) * (0.5 + margin), MIN_WINDOW / 2)
        start, end = math.floor((a + b) / 2 - half), math.ceil((a + b) / 2 + half)
        if end <= 0 or start >= size:
            return None
        shift = max(-start, 0) - max(end - size, 0)  # slide a window that overhangs one edge back inside
        start, end = max(start + shift, 0), min(end + shift, size)
        window.append((start, end))
    (x0, x1), (y0, y1) = window
    return x0, y0, x1, y1


def crop_intrinsics(K: torch.Tensor, x0: int, y0: int) -> torch.Tensor:
    """(3, 3) intrinsics of the image window whose top-left pixel is (x0, y0): the principal point moves by it."""
    out = K.clone()
    out[0, 2] -= x0
    out[1, 2] -= y0
    return out


@contextmanager
def only_trainable(params: Iterable[nn.Parameter], trainable: Iterable[nn.Parameter]) -> Iterator[None]:
    """Within the block only `trainable` of `params` require gradients: back-propagation builds no graph for
    the rest (the phase's step costs what its few parameters need). Restores every flag afterwards."""
    keep = {id(p) for p in trainable}
    flags = [(p, p.requires_grad) for p in params]
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def window_loss(
    rgb: torch.Tensor,  # (1, h, w, 3) the window drawn from g
    alpha: torch.Tensor,  # (1, h, w, 1)
    gt_rgb: torch.Tensor,  # (1, h, w, 3)
    gt_alpha: torch.Tensor,  # (1, h, w, 1)
    g: Gaussians,  # S of the avatar's n_gaussians
    n_gaussians: int,
    weights: LossWeights,
) -> torch.Tensor:
    """The phase's loss of one window: the joint steps' loss but for the terms that are constant in the phase
    (`FROZEN_TERMS`), its per-Gaussian means taken over all `n_gaussians` (the ones not in g are frozen, so their
    part is a constant too): the gradient the frame's loss gives the mouth network."""
    weights = replace(weights, **dict.fromkeys(FROZEN_TERMS, 0.0))
    terms = compute_losses(rgb, alpha, gt_rgb, gt_alpha, g, g.means.new_zeros((0, 0), dtype=torch.long), weights)
    for name in PER_GAUSSIAN_MEANS:
        terms[name] = terms[name] * (len(g.means) / n_gaussians)
    return total_loss(terms, weights)
