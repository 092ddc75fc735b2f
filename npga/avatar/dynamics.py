"""The detail network: what the coarse field cannot explain, per Gaussian and per expression.

An MLP on (encoded canonical position, latent feature f_i, expression code) predicts residual position,
rotation, scale, colour and opacity. Its last layer starts at zero, so training begins from the coarse
(distilled) motion and the canonical appearance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from npga.deform.encoding import PositionalEncoding
from npga.deform.field import conditioned, mlp

# Layout of the residual vector (N, 14): slices by name.
RESIDUAL_SLICES: dict[str, slice] = {
    "position": slice(0, 3),
    "rotation": slice(3, 7),
    "scale": slice(7, 10),
    "color": slice(10, 13),
    "opacity": slice(13, 14),
}
RESIDUAL_DIM = 14


@dataclass(frozen=True)
class DetailConfig:
    n_freqs: int = 4
    """Octaves of the positional encoding of the canonical position."""
    width: int = 64
    """Hidden units per layer."""
    depth: int = 2
    """Hidden layers."""
    position_scale: float = 0.005
    """Head units of residual motion per unit of network output (millimetres on a metre-like head)."""


class DetailMLP(nn.Module):
    """(x_c (N, 3), f (N, F) or None, z (D,)) -> residuals (N, 14) in the RESIDUAL_SLICES layout."""

    def __init__(self, cfg: DetailConfig, feature_dim: int, expression_dim: int, bounds: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.feature_dim = feature_dim
        self.encoding = PositionalEncoding(bounds, cfg.n_freqs)
        self.net = mlp(self.encoding.out_dim + feature_dim + expression_dim, cfg.width, cfg.depth, RESIDUAL_DIM,
                       zero_last=True)  # fmt: skip

    def forward(self, x_c: torch.Tensor, features: torch.Tensor | None, z_ex: torch.Tensor) -> torch.Tensor:
        parts = [self.encoding(x_c)]
        if self.feature_dim:
            if features is None or features.shape[-1] != self.feature_dim:
                got = None if features is None else features.shape[-1]
                raise ValueError(f"the detail MLP expects {self.feature_dim}-d latent features, got {got}")
            parts.append(features)
        return conditioned(self.net, torch.cat(parts, -1), z_ex)
