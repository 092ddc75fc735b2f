"""The interface every parametric head model offers (synthetic or NPHM).

A head is a canonical SDF with a colour field, plus a *backward* deformation field that maps a
posed point and an expression code to its canonical position (NPHM's direction). Gaussians need the
opposite direction; `npga.deform` distills it from `backward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh of the canonical surface."""

    vertices: torch.Tensor  # (V, 3)
    faces: torch.Tensor  # (F, 3) int64
    normals: torch.Tensor  # (V, 3) unit, pointing out of the head


@dataclass(frozen=True)
class MouthRegion:
    """An axis-aligned ellipsoid in canonical space around the lips' seam, deep enough to hold the teeth and the
    mouth's interior: where an opening mouth changes the picture far more than the head model's motion says
    (the avatar gives it a network of its own, `npga.avatar.mouth`)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]


@runtime_checkable
class HeadModel(Protocol):
    """Canonical geometry, appearance and the backward deformation of one identity."""

    @property
    def expression_dim(self) -> int:
        """Length of an expression code z_ex."""
        ...

    @property
    def bounds(self) -> torch.Tensor:
        """(2, 3) min and max corner of a box holding the canonical head (for marching cubes, sampling)."""
        ...

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance (N,) of canonical points x (N, 3); negative inside."""
        ...

    def color(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (N, 3), as it appears in images, of canonical points x (N, 3)."""
        ...

    def backward(self, x_posed: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
        """Canonical positions (N, 3) of posed points x_posed (N, 3) under codes z_ex (D,) or (N, D)."""
        ...

    def description(self) -> dict[str, Any]:
        """JSON-able mapping with a `type` that `npga.headmodel.head_model_from_description` rebuilds this from."""
        ...

    def mouth_region(self) -> MouthRegion | None:
        """Where the mouth is in canonical space; None when the model cannot say (then the user can)."""
        ...

    def canonical_mesh(self, resolution: int = 128, device: torch.device | str = "cpu") -> Mesh:
        """Zero level set of `sdf` by marching cubes on a `resolution`^3 grid over `bounds`, the SDF evaluated on
        `device` (a network SDF's grid is the slow part); the mesh comes back on the CPU."""
        ...
