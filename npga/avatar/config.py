"""The avatar's architecture: what rebuilds its networks from an avatar file, with no training config.

`AvatarConfig` holds only what shapes the avatar (expression dimension, the head model's box that the
positional encodings normalise by, latent size, the three networks' settings, background). Training
derives it from `TrainConfig`; the avatar file stores it; `build_nets` turns it into modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from npga.avatar.cnn import CNNConfig, ScreenCNN
from npga.avatar.deform import AvatarNets
from npga.avatar.dynamics import DetailConfig, DetailMLP
from npga.deform.field import FieldConfig, ForwardField

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class AvatarConfig:
    expression_dim: int
    """Length of the head model's expression code."""
    bounds: tuple[Vec3, Vec3]
    """Min and max corner of the head model's canonical box (the networks' encodings normalise by it)."""
    latent_dim: int = 32
    """Length of each Gaussian's latent feature (0: none)."""
    coarse: FieldConfig | None = None
    """The distilled forward field's architecture; None: no coarse motion."""
    detail: DetailConfig | None = None
    """The detail MLP's architecture; None: no residuals."""
    cnn: CNNConfig | None = None
    """The screen-space CNN's architecture; None: rasterized colours as they are."""
    background: Vec3 = (1.0, 1.0, 1.0)
    """Colour the avatar renders on."""


def build_nets(cfg: AvatarConfig, coarse: ForwardField | None = None) -> AvatarNets:
    """Modules for `cfg`, randomly initialised (load weights after); `coarse` supplies an existing field.

    The detail MLP and CNN are made first, so a seeded trainer draws the same initial weights whether or
    not it builds the coarse field here.
    """
    bounds = torch.tensor(cfg.bounds, dtype=torch.float32)  # (2, 3)
    detail = DetailMLP(cfg.detail, cfg.latent_dim, cfg.expression_dim, bounds) if cfg.detail is not None else None
    cnn = ScreenCNN(cfg.cnn) if cfg.cnn is not None else None
    if cfg.coarse is None:
        coarse = None
    elif coarse is None:
        coarse = ForwardField(cfg.coarse, cfg.expression_dim, bounds)
    elif coarse.expression_dim != cfg.expression_dim or coarse.cfg != cfg.coarse:
        raise ValueError(
            f"the forward field ({coarse.expression_dim}-d codes, {coarse.cfg}) does not match the "
            f"avatar's ({cfg.expression_dim}-d codes, {cfg.coarse})"
        )
    return AvatarNets(coarse, detail, cnn)
