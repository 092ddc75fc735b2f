"""Screen tiles and the splats that touch them, front to back: the work list of the PyTorch compositor.

A splat is listed in every tile its screen-space rectangle (mean +- radius) overlaps, as gsplat does. Every
fragment with alpha >= 1/255 lies inside that rectangle, so the tile size changes the amount of work, never
the image: small tiles waste less on pixels a splat cannot reach, large ones cost less bookkeeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileBins:
    """Splat-tile pairs grouped by tile (camera-major, then row-major), each tile's splats sorted by depth."""

    tile_size: int
    tiles_x: int
    tiles_y: int
    splats: torch.Tensor  # (M,) int64 flat index camera * N + gaussian, per pair
    starts: torch.Tensor  # (C * tiles_y * tiles_x,) int64 first pair of each tile
    counts: torch.Tensor  # (C * tiles_y * tiles_x,) int64 pairs of each tile


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, 0) - x


@torch.no_grad()
def bin_splats(
    means2d: torch.Tensor,  # (C, N, 2)
    radii: torch.Tensor,  # (C, N, 2) int, 0 where culled
    depths: torch.Tensor,  # (C, N)
    width: int,
    height: int,
    tile_size: int,
) -> TileBins:
    """List every visible splat in the tiles its rectangle overlaps, sorted by (camera, tile, depth)."""
    C, N = depths.shape
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    m = means2d.detach().reshape(C * N, 2)
    r = radii.reshape(C * N, 2).to(m.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_size).clamp(0, tiles_x).long()  # (C*N,) first column
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile_size).clamp(0, tiles_x).long()  # one past the last
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_size).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile_size).clamp(0, tiles_y).long()
    visible = (radii.reshape(C * N, 2) > 0).all(-1) & (x1 > x0) & (y1 > y0)

    # Visit splats front to back (ties by index, like gsplat's stable sort), so one stable sort by tile
    # afterwards leaves every tile's splats in depth order. Expand splats into tile rows, rows into tiles.
    order = torch.argsort(depths.detach().reshape(C * N), stable=True)
    order = order[visible[order]]
    rows = (y1 - y0)[order]
    row_splat = torch.repeat_interleave(order, rows)  # (rows,)
    row_index = torch.arange(len(row_splat), device=m.device) - torch.repeat_interleave(_exclusive_cumsum(rows), rows)
    first_tile = (row_splat // N) * (tiles_x * tiles_y) + (y0[row_splat] + row_index) * tiles_x + x0[row_splat]
    cols = (x1 - x0)[row_splat]
    pair_row = torch.repeat_interleave(torch.arange(len(cols), device=m.device), cols)  # (M,)
    offset = (first_tile - _exclusive_cumsum(cols)).to(torch.int32)  # tile of a row's pair j: offset + j
    tile = offset[pair_row] + torch.arange(len(pair_row), device=m.device, dtype=torch.int32)
    tile, by_tile = torch.sort(tile, stable=True)
    counts = torch.bincount(tile, minlength=C * tiles_x * tiles_y)
    return TileBins(
        tile_size=tile_size,
        tiles_x=tiles_x,
        tiles_y=tiles_y,
        splats=row_splat[pair_row[by_tile]],
        starts=_exclusive_cumsum(counts),
        counts=counts,
    )
