"""The detail network: what the coarse field cannot explain, per Gaussian and per expression.

An MLP on (encoded canonical position, latent feature f_i, expression code) predicts residual position,
rotation, scale, colour and opacity. Its last layer starts at zero, so training begins from the coarse
(distilled) motion and the canonical appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from npga.avatar.mouth import MouthConfig, MouthNet
from npga.config import AtLeast1
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
# What moves and shapes a Gaussian, and what changes how it looks: the losses give them separate priors.
MOTION = slice(RESIDUAL_SLICES["position"].start, RESIDUAL_SLICES["scale"].stop)
APPEARANCE = slice(RESIDUAL_SLICES["color"].start, RESIDUAL_SLICES["opacity"].stop)


@dataclass(frozen=True)
class DetailConfig:
    n_freqs: int = 4
    """Octaves of the positional encoding of the canonical position."""
    width: AtLeast1 = 64
    """Hidden units per layer."""
    depth: AtLeast1 = 2
    """Hidden layers."""
    position_scale: float = 0.005
    """Head units of residual motion per unit of network output (millimetres on a metre-like head)."""
    blendshapes: int = 0
    """Rank of a per-Gaussian term linear in the code added to the MLP's residuals, B ((P f_i) * (E z)) (0: none;
    needs latent features): each Gaussian's feature says how strongly it follows each of `blendshapes` shared
    code directions, and is learned by that Gaussian's own Adam step. Through the shared MLP alone, a change
    confined to a few hundred Gaussians (an opening mouth) gets about 1/100 of the gradient the rest of the image
    gives (benchmarks/RESULTS.md, Ablation). A low rank keeps the directions the whole avatar needs, not one
    per code component that could fit the tracking noise; the code is clamped to the training codes' range
    first (`set_code_range`), so no response is extrapolated."""
    mouth: MouthConfig = field(default_factory=MouthConfig)
    """A network of its own for the Gaussians around the lips (`npga.avatar.mouth`)."""


class DetailMLP(nn.Module):
    """(x_c (N, 3), f (N, F) or None, z (D,)) -> residuals (N, 14) in the RESIDUAL_SLICES layout."""

    def __init__(self, cfg: DetailConfig, feature_dim: int, expression_dim: int, bounds: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.feature_dim = feature_dim
        self.encoding = PositionalEncoding(bounds, cfg.n_freqs)
        self.net = mlp(
            self.encoding.out_dim + feature_dim + expression_dim, cfg.width, cfg.depth, RESIDUAL_DIM, zero_last=True
        )
        self.blendshapes = cfg.blendshapes > 0 and feature_dim > 0
        if self.blendshapes:
            self.code_embed = nn.Linear(expression_dim, cfg.blendshapes, bias=False)  # E (K, D)
            self.feature_proj = nn.Linear(feature_dim, cfg.blendshapes, bias=False)  # P (K, F)
            self.blend_out = nn.Linear(cfg.blendshapes, RESIDUAL_DIM, bias=False)  # B (14, K)
            # random E, P and B, zero features: the term starts at zero and each feature gets a gradient at once
            self.register_buffer("code_low", torch.full((expression_dim,), -torch.inf))
            self.register_buffer("code_high", torch.full((expression_dim,), torch.inf))
        # Not part of `forward`: the mouth's residuals are large by nature (lips turning into a dark cavity are
        # several colour logits), so `express` adds them outside the size priors the shared residuals are under.
        self.mouth = MouthNet(cfg.mouth, expression_dim, RESIDUAL_DIM) if cfg.mouth.enabled else None

    def set_code_range(self, codes: torch.Tensor) -> None:
        """The per-component range of the training codes (T, D) the blendshapes and the mouth network clamp to."""
        if self.blendshapes:
            self.code_low.copy_(codes.min(0).values)
            self.code_high.copy_(codes.max(0).values)
        if self.mouth is not None:
            self.mouth.set_code_range(codes)

    def forward(self, x_c: torch.Tensor, features: torch.Tensor | None, z_ex: torch.Tensor) -> torch.Tensor:
        parts = [self.encoding(x_c)]
        if self.feature_dim:
            if features is None or features.shape[-1] != self.feature_dim:
                got = None if features is None else features.shape[-1]
                raise ValueError(f"the detail MLP expects {self.feature_dim}-d latent features, got {got}")
            parts.append(features)
        out = conditioned(self.net, torch.cat(parts, -1), z_ex)
        if self.blendshapes:
            z = z_ex.clamp(self.code_low, self.code_high).to(features.dtype)
            out = out + self.blend_out(self.feature_proj(features) * self.code_embed(z))
        return out
