"""The zero level set of a canonical SDF as a mesh: one marching-cubes routine for every implicit head model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from npga.headmodel.base import Mesh

PointFunction = Callable[[torch.Tensor], torch.Tensor]


def zero_level_mesh(
    sdf: PointFunction,
    normals: PointFunction,
    bounds: torch.Tensor,
    resolution: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Mesh:
    """Marching cubes of `sdf` on a `resolution`^3 grid over `bounds` (2, 3), faces wound to agree with the
    outward `normals`. The grid is evaluated one x-slab at a time, in `dtype` on `device`, so a 256^3 grid of a
    network SDF needs its values and one slab of activations, not its 16.7M points at once."""
    from skimage.measure import marching_cubes

    lo, hi = bounds[0].double(), bounds[1].double()
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, dtype=torch.float64) for i in range(3)]
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)  # (R^2, 2)
    values = np.empty((resolution,) * 3, dtype=np.float64)
    with torch.no_grad():
        for i, xv in enumerate(axes[0]):
            pts = torch.cat([yz.new_full((len(yz), 1), float(xv)), yz], 1).to(device, dtype)  # (R^2, 3)
            values[i] = sdf(pts).double().cpu().numpy().reshape(resolution, resolution)
    if not values.min() < 0 < values.max():
        raise ValueError(
            f"the SDF has no zero crossing inside its bounds {bounds.tolist()} "
            f"(values {values.min():.3g}..{values.max():.3g})"
        )
    spacing = tuple(float((hi[i] - lo[i]) / (resolution - 1)) for i in range(3))
    verts, faces, _, _ = marching_cubes(values, level=0.0, spacing=spacing)
    vertices = (torch.from_numpy(verts.copy()) + lo).to(dtype)  # (V, 3)
    normal = normals(vertices.to(device)).cpu()  # (V, 3)
    faces_t = torch.from_numpy(faces.astype(np.int64))  # (F, 3)
    v0, v1, v2 = (vertices[faces_t[:, i]] for i in range(3))
    flip = (torch.cross(v1 - v0, v2 - v0, dim=-1) * normal[faces_t].mean(1)).sum(-1) < 0
    faces_t[flip] = faces_t[flip][:, [0, 2, 1]]
    return Mesh(vertices=vertices.float(), faces=faces_t, normals=normal.float())
