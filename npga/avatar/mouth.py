"""The mouth network: the detail network's residuals for the Gaussians around the lips, from a network of its own.

An opening mouth changes a band a few millimetres wide from lips to a dark cavity and teeth. Through the shared
detail network that change gets about 1/100 of the gradient the rest of the image gives, so it is never learned
(benchmarks/RESULTS.md, Ablation); a network that only the Gaussians inside the head model's mouth region feed
gets its own Adam normalisation, so the mouth's gradient moves it at full speed. Its residuals are added outside
the losses' size priors (`npga.avatar.deform.express`): under them a strong prior meant to keep the shared
network from fitting the tracking noise held the mouth to a hundredth of a colour logit. Its positional encoding spans
the region alone, fine enough for a millimetre band, and its code is clamped to the training codes' range.

With `MouthConfig.additive` the code's components act on the mouth one at a time: a capture shows the
mouth open with some expressions and not others, and a network of the whole code met a held-out smile with the jaw
open as a combination it had never seen (the worst held-out frames, 22 dB); as a sum of what each component does
alone it draws the cavity the jaw opens under any smile (benchmarks/RESULTS.md, The open mouth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from npga.config import SIGNED, AtLeast1, Positive
from npga.deform.encoding import PositionalEncoding
from npga.deform.field import conditioned, mlp

Vec3 = tuple[float, float, float]
FADE = 0.3
"""The network's weight fades from 1 to 0 over the outer 30% of the region's normalised radius."""


@dataclass(frozen=True)
class MouthConfig:
    enabled: bool = False
    """Give the Gaussians in the head model's mouth region a network of their own (adds to the detail MLP's
    residuals, so it needs `use_detail`)."""
    n_freqs: AtLeast1 = 7
    """Octaves of the positional encoding over the region's box (7: about 1 mm on the demo head's lips)."""
    width: AtLeast1 = 64
    """Hidden units per layer."""
    depth: AtLeast1 = 2
    """Hidden layers."""
    center: Annotated[Vec3, SIGNED] | None = None
    """Centre of the region (canonical coordinates); None: the head model's (`mouth_region`)."""
    radii: Annotated[Vec3, Positive] | None = None
    """Half-axes of the region's ellipsoid; None: the head model's."""
    additive: bool = False
    """The residuals as the network's value at the zero (neutral) code plus, per code component, the change that
    component alone makes: a combination of components unseen in training is the sum of their seen effects (one
    pass of the hidden layers per component: D + 1 instead of 1, on the region's Gaussians only). False (what
    avatars saved before this option mean): one network of the whole code, free to learn how components
    interact."""


def mouth_weight(x_c: torch.Tensor, center: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(N,) in [0, 1]: 1 inside the region's inner 70%, a smoothstep down to 0 at its ellipsoid's surface."""
    r = ((x_c - center) / radii).norm(dim=-1)  # (N,) normalised radius
    t = ((1.0 - r) / FADE).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class MouthNet(nn.Module):
    """(x_c (N, 3), z (D,)) -> residuals (N, out_dim) in the detail network's layout, zero outside the region."""

    def __init__(self, cfg: MouthConfig, expression_dim: int, out_dim: int) -> None:
        super().__init__()
        if cfg.center is None or cfg.radii is None:
            raise ValueError("the mouth network needs its region: the head model's mouth_region or center and radii")
        self.cfg = cfg
        center, radii = torch.tensor(cfg.center), torch.tensor(cfg.radii)
        self.register_buffer("center", center)
        self.register_buffer("radii", radii)
        self.encoding = PositionalEncoding(torch.stack([center - radii, center + radii]), cfg.n_freqs)
        self.net = mlp(self.encoding.out_dim + expression_dim, cfg.width, cfg.depth, out_dim, zero_last=True)
        self.register_buffer("code_low", torch.full((expression_dim,), -torch.inf))
        self.register_buffer("code_high", torch.full((expression_dim,), torch.inf))

    def set_code_range(self, codes: torch.Tensor) -> None:
        """The per-component range of the training codes (T, D): the network never extrapolates beyond it."""
        self.code_low.copy_(codes.min(0).values)
        self.code_high.copy_(codes.max(0).values)

    def forward(self, x_c: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
        w = mouth_weight(x_c, self.center, self.radii)  # (N,)
        inside = (w > 0).nonzero()[:, 0]  # (M,) only these are computed
        out = x_c.new_zeros(len(x_c), self.net[-1].out_features)
        if len(inside):
            z = z_ex.clamp(self.code_low, self.code_high)
            encoded = self.encoding(x_c[inside])  # (M, E)
            h = self._additive(encoded, z) if self.cfg.additive else conditioned(self.net, encoded, z)  # (M, out)
            out = out.index_put((inside,), (w[inside, None] * h).to(out.dtype))
        return out

    def _additive(self, encoded: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(M, out_dim) g(x, 0) + sum_k [g(x, z_k e_k) - g(x, 0)], g the network: the first layer's code part is a
        per-component bias, so all D + 1 codes share one product with the encoding."""
        first = self.net[0]
        E = encoded.shape[-1]
        neutral = F.linear(encoded, first.weight[:, :E], first.bias)  # (M, W) first layer at the zero code
        per_component = (first.weight[:, E:] * z.to(encoded.dtype)).T  # (D, W) what each component adds to it
        h = torch.cat([neutral[None], neutral[None] + per_component[:, None]])  # (D + 1, M, W)
        for layer in self.net[1:]:
            h = layer(h)
        return h[0] + (h[1:] - h[0]).sum(0)
