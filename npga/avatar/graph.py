"""The kNN graph of canonical Gaussian positions and the Laplacian smoothness terms defined on it.

Neighbouring Gaussians on the skin should move and look alike; the Laplacian terms say so. The graph is
never an N x N distance matrix, and it is rebuilt when Gaussians are added or removed. Two exact methods:
- "torch", on the points' own device (no copy to the host and back on a GPU): queries go in chunks of
  Morton-ordered (spatially compact) points, a window of their Morton neighbours bounds each chunk's k-th
  distance, and only the points inside the chunk's box grown by that bound are compared exactly;
- "kdtree", scipy's KD-tree on the host: about 10x faster than "torch" on a CPU (34k points: 0.18 s
  against 2.05 s), so "auto" uses it for CPU tensors and "torch" for all others.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree

KnnMethod = Literal["auto", "torch", "kdtree"]

MORTON_BITS = 10  # per axis: a 1024^3 grid orders the points; the result does not depend on it
CHUNK = {"cuda": 4096, "cpu": 256}  # queries per chunk: few large ones on a GPU (each reads its box's size
# back to the host), small ones on a CPU (tighter boxes, less arithmetic)
BLOCK_ELEMENTS = 1 << 24  # query x candidate distances held at once (128 MB in float64)


def _spread_bits(v: torch.Tensor) -> torch.Tensor:
    """Insert two zero bits after each of the low 10 bits of v (int64): the per-axis part of a Morton code."""
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    return (v | (v << 2)) & 0x09249249


def morton_order(points: torch.Tensor) -> torch.Tensor:
    """Permutation (N,) that sorts points (N, 3) along a Z-order curve over their bounding box."""
    lo, hi = points.min(0).values, points.max(0).values
    cells = ((points - lo) / (hi - lo).clamp_min(1e-12) * (2**MORTON_BITS - 1)).long()  # (N, 3)
    code = _spread_bits(cells[:, 0]) | (_spread_bits(cells[:, 1]) << 1) | (_spread_bits(cells[:, 2]) << 2)
    return code.argsort()


def _nearest(queries: torch.Tensor, candidates: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and positions in `candidates` (M, 3) of each query's (B, 3) m nearest, nearest first.

    Candidates go in blocks whose distances fit BLOCK_ELEMENTS; each block's best merge into the running best.
    """
    block = max(BLOCK_ELEMENTS // max(len(queries), 1), m)
    best_d = queries.new_empty((len(queries), 0))
    best_i = torch.empty((len(queries), 0), dtype=torch.int64, device=queries.device)
    for start in range(0, len(candidates), block):
        c = candidates[start : start + block]
        d = (queries[:, None, 0] - c[None, :, 0]).square_()  # (B, M_block), exact differences axis by axis
        d += (queries[:, None, 1] - c[None, :, 1]).square_()
        d += (queries[:, None, 2] - c[None, :, 2]).square_()
        d, i = d.topk(min(m, d.shape[1]), dim=1, largest=False)
        best_d, order = torch.cat([best_d, d], 1).topk(min(m, best_d.shape[1] + d.shape[1]), dim=1, largest=False)
        best_i = torch.cat([best_i, i + start], 1).gather(1, order)
    return best_d, best_i


def _neighbours(
    points: torch.Tensor, queries: torch.Tensor, query_index: torch.Tensor, bound: torch.Tensor, k: int
) -> torch.Tensor:
    """Indices (B, k) of the k nearest other points of queries (B, 3), each no farther than its `bound` (B,)."""
    reach = bound.max()
    lo, hi = queries.min(0).values - reach, queries.max(0).values + reach
    inside = ((points >= lo) & (points <= hi)).all(-1).nonzero().squeeze(1)  # (M,)
    idx = inside[_nearest(queries, points[inside], k + 1)[1]]  # (B, k+1), includes the query itself
    # Drop each query itself: usually column 0, but exact duplicates (densification clones) may come first.
    keep = (idx == query_index[:, None]).to(torch.int8).argsort(dim=1, stable=True)[:, :k]  # self moves to the end
    return idx.gather(1, keep)


def knn_graph(points: torch.Tensor, k: int = 8, method: KnnMethod = "auto") -> torch.Tensor:
    """Indices (N, k) of each point's k nearest other points (N, 3), nearest first, on the points' device."""
    n = len(points)
    if n < 2:
        raise ValueError(f"a kNN graph needs at least 2 points, got {n}")
    k_eff = min(k, n - 1)
    if method == "kdtree" or (method == "auto" and points.device.type == "cpu"):
        return _kdtree_graph(points, k_eff)
    pts = points.detach().double()  # float32 distances would order near-ties by rounding
    chunk = CHUNK.get(pts.device.type, CHUNK["cpu"])
    order = morton_order(pts)  # (N,)
    ordered = pts[order]
    out = torch.empty((n, k_eff), dtype=torch.int64, device=pts.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        queries = ordered[start:stop]  # (B, 3)
        # An upper bound of each query's (k+1)-th distance (itself included) from its Morton neighbours ...
        window = ordered[max(0, start - chunk // 2) : stop + chunk // 2]
        bound = _nearest(queries, window, k_eff + 1)[0][:, -1].sqrt() * (1 + 1e-5) + 1e-12  # (B,)
        # ... so every true neighbour lies in the queries' bounding box grown by their largest bound. Isolated
        # points (large bounds) go in a group of their own, so that they do not grow the box of the others.
        far = bound > 2 * bound.median()
        for group in (~far).nonzero().squeeze(1), far.nonzero().squeeze(1):
            if len(group):
                out[order[start + group]] = _neighbours(pts, queries[group], order[start + group], bound[group], k_eff)
    return out


def _kdtree_graph(points: torch.Tensor, k: int) -> torch.Tensor:
    """`knn_graph` by scipy's KD-tree on the host (the fast method on a CPU)."""
    n = len(points)
    pts = points.detach().cpu().double().numpy()
    _, idx = cKDTree(pts).query(pts, k=k + 1, workers=-1)  # (N, k+1); includes the point itself
    idx = np.asarray(idx).reshape(n, k + 1)
    # Drop each point itself: usually column 0, but exact duplicates (densification clones) may come first.
    order = np.argsort(idx == np.arange(n)[:, None], axis=1, kind="stable")  # self moves to the end
    return torch.as_tensor(np.take_along_axis(idx, order, axis=1)[:, :k], dtype=torch.int64, device=points.device)


def laplacian(values: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Mean over graph edges of ||v_i - v_j||^2 for values (N, D): zero iff neighbours agree."""
    n, k = neighbors.shape
    # index_select, not values[neighbors]: its backward (index_add_) sums in a fixed order on the CPU, where
    # advanced indexing accumulates in parallel and makes runs (and resumed runs) differ in the last bits.
    diff = values[:, None, :] - values.index_select(0, neighbors.reshape(-1)).view(n, k, -1)  # (N, k, D)
    return diff.square().sum(-1).mean()
