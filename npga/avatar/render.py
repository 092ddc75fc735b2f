"""Rendering posed Gaussians into camera images, with the optional screen-space CNN on top."""

from __future__ import annotations

from typing import Any

import torch

from npga.avatar.cnn import ScreenCNN
from npga.avatar.deform import Gaussians
from npga.render import rasterize


def render_gaussians(
    g: Gaussians,
    viewmats: torch.Tensor,  # (C, 4, 4)
    Ks: torch.Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    background: torch.Tensor,  # (3,)
    cnn: ScreenCNN | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """RGB (C, H, W, 3), alpha (C, H, W, 1) and the rasterizer's `meta` (for densification)."""
    C = len(viewmats)
    colors, bg = g.colors, background
    if cnn is not None:
        if g.features is None or g.features.shape[1] < cnn.latent_channels:
            raise ValueError(f"the CNN renders {cnn.latent_channels} latent channels; the avatar has too few features")
        colors = torch.cat([colors, g.features[:, : cnn.latent_channels]], -1)  # (N, 3 + L)
        bg = torch.cat([bg, bg.new_zeros(cnn.latent_channels)])
    image, alpha, meta = rasterize(
        g.means,
        g.quats,
        g.scales,
        g.opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        backgrounds=bg.expand(C, -1).contiguous(),
    )
    rgb = image if cnn is None else cnn(image)
    return rgb, alpha, meta
