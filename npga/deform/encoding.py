"""Positional encoding: lets small MLPs represent the sharp, local deformations of lips and eyelids.

Points are first mapped from the head's bounding box to [-1, 1]^3, so the frequencies mean the same thing
for any head model's units.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """x -> [x, sin(2^k pi x), cos(2^k pi x) for k < n_freqs] of the box-normalised x."""

    def __init__(self, bounds: torch.Tensor, n_freqs: int) -> None:
        super().__init__()
        bounds = torch.as_tensor(bounds, dtype=torch.float32)  # (2, 3) min and max corner
        self.register_buffer("center", (bounds[0] + bounds[1]) / 2)
        self.register_buffer("half_extent", (bounds[1] - bounds[0]).max() / 2)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freqs, dtype=torch.float32))
        self.n_freqs = n_freqs

    @property
    def out_dim(self) -> int:
        return 3 * (1 + 2 * self.n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3) -> (N, out_dim)
        u = (x - self.center) / self.half_extent  # (N, 3) in about [-1, 1]
        angles = (u[:, :, None] * self.freqs).flatten(1)  # (N, 3 * n_freqs)
        return torch.cat([u, angles.sin(), angles.cos()], dim=-1)
