"""Posed Gaussians in the file formats other splat tools read: the 3DGS PLY layout and the compact `.splat`.

The PLY header is written here rather than by a PLY library: the common one (plyfile) is GPL-3.0, which an
Apache-2.0 package should not require, and trimesh adds a face element that is not part of the layout. A
binary point PLY is a fixed text header and one packed array; the tests read it back with trimesh's parser.
Layouts: docs/rendering.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from npga.io.atomic import write_bytes_atomic

SH_C0 = 0.28209479177387814
"""Degree-0 spherical-harmonic basis constant: rgb = 0.5 + SH_C0 * f_dc."""
SH_REST = 45
"""f_rest coefficients of degree-3 spherical harmonics (3 colours x 15)."""
_EPS = 1e-6


def ply_property_names() -> list[str]:
    """The vertex properties of a 3DGS PLY, in file order."""
    return (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(SH_REST)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def write_ply(
    path: str | os.PathLike,
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4) wxyz
    scales: torch.Tensor,  # (N, 3) standard deviations
    opacities: torch.Tensor,  # (N,) in [0, 1]
    colors: torch.Tensor,  # (N, 3) RGB in [0, 1]
) -> Path:
    """Write activated Gaussians as a 3DGS PLY (binary little endian, float32 properties)."""
    n = len(means)
    q = _numpy(quats)
    o = np.clip(_numpy(opacities), _EPS, 1 - _EPS)
    columns = [
        _numpy(means),
        np.zeros((n, 3)),
        (_numpy(colors) - 0.5) / SH_C0,
        np.zeros((n, SH_REST)),
        np.log(o / (1 - o))[:, None],
        np.log(np.maximum(_numpy(scales), 1e-12)),
        q / np.linalg.norm(q, axis=1, keepdims=True),
    ]
    data = np.concatenate(columns, 1).astype(np.float32)  # (N, 62)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in ply_property_names()] + ["end_header"]
    return write_bytes_atomic(path, ("\n".join(header) + "\n").encode("ascii") + data.astype("<f4").tobytes())


def write_splat(
    path: str | os.PathLike,
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4) wxyz
    scales: torch.Tensor,  # (N, 3) standard deviations
    opacities: torch.Tensor,  # (N,) in [0, 1]
    colors: torch.Tensor,  # (N, 3) RGB in [0, 1]
) -> Path:
    """Write activated Gaussians in the `.splat` layout, sorted by opacity x volume (largest first)."""
    s = _numpy(scales)
    o = _numpy(opacities)
    order = np.argsort(-(o * s.prod(1)), kind="stable")
    q = _numpy(quats)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    rgba = np.concatenate([_numpy(colors), o[:, None]], 1)
    record = np.empty(
        len(o), dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)]
    )
    record["position"] = _numpy(means)[order]
    record["scale"] = s[order]
    record["rgba"] = np.clip(np.round(rgba[order] * 255), 0, 255)
    record["rotation"] = np.clip(np.round(q[order] * 128 + 128), 0, 255)
    return write_bytes_atomic(path, record.tobytes())
