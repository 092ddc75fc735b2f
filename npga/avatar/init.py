"""Canonical Gaussians initialised on the head model's canonical surface.

One flat Gaussian per marching-cubes vertex, lying in the tangent plane (its short axis along the normal),
as wide as the local vertex spacing, coloured by the head model's colour field: training starts from an
avatar that already looks like the head. Everything per Gaussian lives in one ParameterDict so gsplat's
densification strategies split, clone and prune every entry (latent features included) together with
Adam's moments. Activations: scales are log, opacities and colours are logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from npga.config import Positive, Range
from npga.geometry import quat_from_z_to
from npga.headmodel.base import HeadModel, Mesh

PER_GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "colors", "features")


@dataclass(frozen=True)
class InitConfig:
    mesh_resolution: Annotated[int, Range(2)] = 96
    """Marching-cubes grid of the canonical surface; one Gaussian per vertex (96: ~24k on the synthetic head)."""
    latent_dim: int = 32
    """Length of each Gaussian's latent feature (0: none, the detail MLP sees only position and expression)."""
    scale_factor: Positive = 0.6
    """In-plane standard deviation as a multiple of the mean distance to the 3 nearest vertices."""
    flatness: Positive = 0.2
    """Standard deviation along the normal relative to the in-plane one."""
    opacity: Annotated[float, Range(0, 1, above=True)] = 0.9
    """Initial opacity."""


def _logit(p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    p = p.clamp(eps, 1 - eps)
    return torch.log(p / (1 - p))


def init_params(
    head: HeadModel, cfg: InitConfig, mesh: Mesh | None = None, device: torch.device | str = "cpu"
) -> nn.ParameterDict:
    """Per-Gaussian parameters (on the CPU) on the canonical surface: keys PER_GAUSSIAN_KEYS ("features" only if
    latent_dim); the surface is extracted with the head's SDF on `device`."""
    mesh = mesh if mesh is not None else head.canonical_mesh(cfg.mesh_resolution, device)
    means = mesh.vertices.float()  # (N, 3)
    pts = means.double().numpy()
    dist, _ = cKDTree(pts).query(pts, k=4, workers=-1)  # (N, 4), column 0 is the point itself
    spacing = torch.from_numpy(np.asarray(dist)[:, 1:].mean(1)).float().clamp_min(1e-6)  # (N,)
    sigma = spacing * cfg.scale_factor
    scales = torch.stack([sigma, sigma, sigma * cfg.flatness], -1).log()  # (N, 3) z along the normal
    with torch.no_grad():
        colors = head.color(means).float()  # (N, 3) in [0, 1]
    params = {
        "means": means,
        "quats": quat_from_z_to(mesh.normals.float()),  # (N, 4)
        "scales": scales,
        "opacities": _logit(torch.full((len(means),), cfg.opacity)),  # (N,)
        "colors": _logit(colors),  # (N, 3)
    }
    if cfg.latent_dim > 0:
        params["features"] = torch.zeros(len(means), cfg.latent_dim)  # (N, F)
    return nn.ParameterDict({k: nn.Parameter(v.contiguous()) for k, v in params.items()})
