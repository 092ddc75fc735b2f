"""The mouth phase: steps after the joint ones that train the mouth network alone, on windows around the mouth.

Trained with everything else, the mouth network learns the opening mouth only as far as the Gaussians under it
hold still: they move and recolour while it learns. Continuing a trained avatar with only the mouth network
learning draws the mouth better (held-out mouth 24.99 -> 25.67 dB over 3 seeds, benchmarks/RESULTS.md, The open
mouth). Only the mouth's pixels can change then, so each step renders a window around the mouth's projection
instead of the frame, at about a third of a joint step's cost; the window's loss counts as its share of the
frame's mean, so the network's gradient, and with Adam's moments from the joint steps its step size, stays what
the joint steps gave it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

MARGIN = 0.25
"""How far the window reaches past the mouth Gaussians' centres, as a fraction of their extent on screen."""
MIN_WINDOW = 16
"""Smallest window side (pixels): room for SSIM's 11-pixel window."""


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
