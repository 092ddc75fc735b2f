"""Where distillation looks: points around the canonical surface and expression codes around the tracked ones.

The forward field only ever moves Gaussians that sit on (or near) the head's surface, under the codes of
a capture; sampling there spends the network's capacity where it is used.
"""

from __future__ import annotations

import torch

from npga.headmodel.base import Mesh


def sample_surface(mesh: Mesh, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-uniform points (n, 3) on the mesh and their interpolated unit normals (n, 3)."""
    v = mesh.vertices[mesh.faces]  # (F, 3 corners, 3)
    area = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1).norm(dim=-1)  # (F,)
    face = torch.multinomial(area, n, replacement=True, generator=generator)  # (n,)
    u, w = torch.rand(2, n, generator=generator)
    flip = u + w > 1  # fold the unit square onto the triangle
    u, w = torch.where(flip, 1 - u, u), torch.where(flip, 1 - w, w)
    bary = torch.stack([1 - u - w, u, w], -1)  # (n, 3)
    points = (bary[:, :, None] * v[face]).sum(1)
    normals = torch.nn.functional.normalize((bary[:, :, None] * mesh.normals[mesh.faces[face]]).sum(1), dim=-1)
    return points, normals


def sample_near_surface(
    mesh: Mesh, n: int, shell: float, jitter: float, surface_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """Points (n, 3): a `surface_fraction` within ~`jitter` of the surface, the rest uniform in a +-`shell` band."""
    points, normals = sample_surface(mesh, n, generator)
    near = torch.rand(n, generator=generator) < surface_fraction  # (n,)
    offset = torch.where(
        near, torch.randn(n, generator=generator) * jitter, (torch.rand(n, generator=generator) * 2 - 1) * shell
    )
    return points + offset[:, None] * normals + torch.randn(n, 3, generator=generator) * jitter / 2


def sample_codes(
    codes: torch.Tensor, n: int, interpolation_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """(n, D): tracked codes (T, D), and for `interpolation_fraction` of them a random blend of two.

    The blend weight is drawn per component, so blends mix expressions of different sequences (a jaw opening
    with a smile) the way a free-form sequence does.
    """
    T = len(codes)
    a = codes[torch.randint(T, (n,), generator=generator)]
    b = codes[torch.randint(T, (n,), generator=generator)]
    w = torch.rand(n, codes.shape[1], generator=generator)
    blend = torch.rand(n, 1, generator=generator) < interpolation_fraction
    return torch.where(blend, w * a + (1 - w) * b, a)
