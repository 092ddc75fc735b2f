"""The screen-space CNN: refines rasterized RGB from a few rendered latent-feature channels (NPGA's last stage).

Per-Gaussian colours cannot vary inside a splat; a few extra rendered channels let a small convolutional
network add view- and expression-dependent detail in image space. Its last layer starts at zero, so it
begins as the identity on RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from npga.config import AtLeast1


@dataclass(frozen=True)
class CNNConfig:
    enabled: bool = False
    """Refine the rendered RGB with the CNN (the paper's screen-space network)."""
    latent_channels: AtLeast1 = 4
    """Latent-feature channels rendered next to RGB (the first ones of each Gaussian's feature)."""
    hidden: AtLeast1 = 16
    """Channels of the hidden convolutions."""


class ScreenCNN(nn.Module):
    """(C, H, W, 3 + latent_channels) rendered image -> refined RGB (C, H, W, 3)."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.latent_channels = cfg.latent_channels
        last = nn.Conv2d(cfg.hidden, 3, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(
            nn.Conv2d(3 + cfg.latent_channels, cfg.hidden, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(cfg.hidden, cfg.hidden, 3, padding=1),
            nn.SiLU(),
            last,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rgb = image[..., :3]
        return rgb + self.net(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
