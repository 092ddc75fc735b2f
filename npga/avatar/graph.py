"""The kNN graph of canonical Gaussian positions and the Laplacian smoothness terms defined on it.

Neighbouring Gaussians on the skin should move and look alike; the Laplacian terms say so. The graph is
built with a KD-tree (O(N log N)), never an N x N distance matrix, and rebuilt when Gaussians are added
or removed.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree


def knn_graph(points: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Indices (N, k) of each point's k nearest other points (N, 3), nearest first, on the points' device."""
    n = len(points)
    if n < 2:
        raise ValueError(f"a kNN graph needs at least 2 points, got {n}")
    k_eff = min(k, n - 1)
    pts = points.detach().cpu().double().numpy()
    _, idx = cKDTree(pts).query(pts, k=k_eff + 1, workers=-1)  # (N, k+1); includes the point itself
    idx = np.asarray(idx).reshape(n, k_eff + 1)
    # Drop each point itself: usually column 0, but exact duplicates (densification clones) may come first.
    order = np.argsort(idx == np.arange(n)[:, None], axis=1, kind="stable")  # self moves to the end
    idx = np.take_along_axis(idx, order, axis=1)[:, :k_eff]
    return torch.as_tensor(idx, dtype=torch.int64, device=points.device)


def laplacian(values: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Mean over graph edges of ||v_i - v_j||^2 for values (N, D): zero iff neighbours agree."""
    n, k = neighbors.shape
    # index_select, not values[neighbors]: its backward (index_add_) sums in a fixed order on the CPU, where
    # advanced indexing accumulates in parallel and makes runs (and resumed runs) differ in the last bits.
    diff = values[:, None, :] - values.index_select(0, neighbors.reshape(-1)).view(n, k, -1)  # (N, k, D)
    return diff.square().sum(-1).mean()
