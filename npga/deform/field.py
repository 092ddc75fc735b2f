"""The forward deformation field G(x_c, z_ex) -> dx: where a canonical point moves under an expression.

Gaussians live in canonical space and must be pushed forward every frame; NPHM only offers the backward
direction (posed -> canonical), so G is distilled from it (`npga.deform.distill`). G is a plain MLP on the
positional encoding of x_c and the expression code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from npga.config import AtLeast1, Positive, from_dict, to_dict
from npga.deform.encoding import PositionalEncoding


@dataclass(frozen=True)
class FieldConfig:
    n_freqs: int = 6
    """Octaves of the positional encoding of x_c."""
    width: AtLeast1 = 128
    """Hidden units per layer."""
    depth: AtLeast1 = 4
    """Hidden layers."""
    output_scale: Positive = 0.01
    """Displacement units per unit of network output: keeps the last layer's outputs O(1) for
    centimetre-sized motions in metre-like head coordinates."""


def mlp(in_dim: int, width: int, depth: int, out_dim: int, zero_last: bool = False) -> nn.Sequential:
    """`depth` hidden SiLU layers; `zero_last` starts the network at exactly zero output."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.SiLU()]
        d = width
    last = nn.Linear(d, out_dim)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


def conditioned(net: nn.Sequential, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """`net` on the rows of x (N, E) each followed by one shared code z (D,), i.e. net(cat([x, z expanded])):
    the code's part of the first layer is one matrix-vector product added as a bias, instead of N copies of
    the code concatenated and multiplied (at 250k Gaussians and a 100-d code, most of the first layer)."""
    first = net[0]
    E = x.shape[-1]
    h = F.linear(x, first.weight[:, :E], first.bias + first.weight[:, E:] @ z.to(x.dtype))
    for layer in net[1:]:
        h = layer(h)
    return h


class ForwardField(nn.Module):
    """G(x_c, z) -> dx (N, 3); starts as the identity deformation (zero displacement)."""

    def __init__(self, cfg: FieldConfig, expression_dim: int, bounds: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.expression_dim = expression_dim
        self.encoding = PositionalEncoding(bounds, cfg.n_freqs)
        self.net = mlp(self.encoding.out_dim + expression_dim, cfg.width, cfg.depth, 3, zero_last=True)

    def forward(self, x_c: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
        """x_c (N, 3), z_ex (D,) or (N, D) -> displacement (N, 3)."""
        if z_ex.shape[-1] != self.expression_dim:
            raise ValueError(f"expression code has {z_ex.shape[-1]} dims, the field expects {self.expression_dim}")
        if z_ex.ndim == 1:
            return conditioned(self.net, self.encoding(x_c), z_ex) * self.cfg.output_scale
        return self.net(torch.cat([self.encoding(x_c), z_ex.to(x_c.dtype)], dim=-1)) * self.cfg.output_scale

    def to_checkpoint(self) -> dict[str, Any]:
        """Everything needed to rebuild the field without knowing how it was made."""
        return {
            "config": to_dict(self.cfg),
            "expression_dim": self.expression_dim,
            "bounds": torch.stack(
                [self.encoding.center - self.encoding.half_extent, self.encoding.center + self.encoding.half_extent]
            ),
            "state_dict": self.state_dict(),
        }

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any]) -> ForwardField:
        field = cls(from_dict(FieldConfig, data["config"]), data["expression_dim"], data["bounds"])
        field.load_state_dict(data["state_dict"])
        return field
