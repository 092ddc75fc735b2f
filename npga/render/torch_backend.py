"""Tile-based Gaussian compositing in pure PyTorch: the CPU reference backend of `rasterize`.

Same image formation as gsplat 1.5 "classic": splats sorted front to back per 16x16 tile, alpha clamped
at 0.999, fragments below 1/255 skipped, a pixel stops before the splat that would bring its
transmittance to 1e-4 or below, pixel centres at +0.5. Tiles are composited in batches whose padded size
is bounded, so memory follows the number of splat-tile pairs, never N x H x W; large frames recompute
each batch in the backward pass (activation checkpointing) instead of keeping its intermediates.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from npga.render.projection import ALPHA_THRESHOLD, Projected, tile_bounds

TILE_SIZE = 16
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
BATCH_ELEMENTS = 1 << 21  # splat-pixel pairs composited at once
SLAB_SIZE = 128  # splats per tile composited per step before checking which pixels are done
CHECKPOINT_ABOVE = 1 << 24  # total splat-pixel pairs above which batches are recomputed in backward


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, 0) - x


def _sorted_intersections(proj: Projected, width: int, height: int):
    """Splat-tile pairs sorted by (camera, tile, depth): flat splat index (M,), tile start/count per tile."""
    C, N = proj.depths.shape
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    x0, y0, x1, y1 = tile_bounds(proj.means2d, proj.radii, TILE_SIZE, tiles_x, tiles_y)
    visible = (proj.radii > 0).all(-1)  # (C, N)
    nx, ny = (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)
    counts = torch.where(visible, nx * ny, torch.zeros_like(nx)).flatten()  # (C*N,)
    M = int(counts.sum())
    src = torch.repeat_interleave(torch.arange(C * N, device=counts.device), counts)  # (M,)
    local = torch.arange(M, device=counts.device) - torch.repeat_interleave(_exclusive_cumsum(counts), counts)
    nx_s = nx.flatten()[src]
    tx = x0.flatten()[src] + local % nx_s.clamp_min(1)
    ty = y0.flatten()[src] + local // nx_s.clamp_min(1)
    tile = (src // N) * (tiles_x * tiles_y) + ty * tiles_x + tx  # (M,)
    depth = proj.depths.detach().flatten()[src]
    order = torch.argsort(depth, stable=True)
    order = order[torch.argsort(tile[order], stable=True)]
    n_tiles = C * tiles_x * tiles_y
    tile_counts = torch.bincount(tile[order], minlength=n_tiles)  # (n_tiles,)
    return src[order], _exclusive_cumsum(tile_counts), tile_counts, tiles_x, tiles_y


def _composite_slab(
    pix: torch.Tensor,  # (B, P, 2) pixel centres relative to the tile corner
    valid_k: torch.Tensor,  # (B, K) bool: padding mask
    means2d: torch.Tensor,  # (B, K, 2) relative to the tile corner
    conics: torch.Tensor,  # (B, K, 3)
    opacities: torch.Tensor,  # (B, K)
    colors: torch.Tensor,  # (B, K, D)
    T_in: torch.Tensor,  # (B, P) transmittance in front of this slab
    done_in: torch.Tensor,  # (B, P) bool: pixel already stopped
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite the next K depth-sorted splats of each tile: colour (B, P, D), T_out (B, P), done_out (B, P).

    The Gaussian exponent is a quadratic form in the pixel position, so all P x K exponents of a tile come
    from one batched matrix product of pixel monomials (B, P, 6) with per-splat coefficients (B, K, 6).
    Coordinates are tile-local, which keeps float32 cancellation far below the 1e-4 accuracy target.
    """
    a, b, c = conics.unbind(-1)  # (B, K)
    mx, my = means2d.unbind(-1)
    # sigma(p) = 0.5 a (px - mx)^2 + 0.5 c (py - my)^2 + b (px - mx)(py - my), expanded in monomials of p.
    const = 0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my
    coeffs = torch.stack([0.5 * a, 0.5 * c, b, -(a * mx + b * my), -(c * my + b * mx), const], -1)  # (B, K, 6)
    px, py = pix.unbind(-1)  # (B, P)
    monomials = torch.stack([px * px, py * py, px * py, px, py, torch.ones_like(px)], -1)  # (B, P, 6)
    sigma = monomials @ coeffs.transpose(1, 2)  # (B, P, K)
    alpha = torch.clamp(opacities[:, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
    live = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & valid_k[:, None, :] & ~done_in[..., None]
    alpha = torch.where(live, alpha, 0.0)
    with torch.no_grad():
        # A pixel stops before the first fragment that would drop its transmittance to 1e-4 or below.
        keep = T_in[..., None] * torch.cumprod(1.0 - alpha, -1) > MIN_TRANSMITTANCE
        done_out = done_in | ~keep[..., -1]
    alpha = torch.where(keep, alpha, 0.0)
    T_incl = torch.cumprod(1.0 - alpha, -1)  # (B, P, K)
    T_excl = torch.cat([torch.ones_like(T_incl[..., :1]), T_incl[..., :-1]], -1)
    weights = alpha * T_excl * T_in[..., None]
    return weights @ colors, T_in * T_incl[..., -1], done_out


def rasterize_torch(
    proj: Projected,
    opacities: torch.Tensor,  # (N,)
    colors: torch.Tensor,  # (C, N, D)
    backgrounds: torch.Tensor,  # (C, D)
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite projected splats: colours (C, H, W, D) and alphas (C, H, W, 1)."""
    C, N = proj.depths.shape
    D = colors.shape[-1]
    splat, tile_start, tile_counts, tiles_x, tiles_y = _sorted_intersections(proj, width, height)
    Hp, Wp = tiles_y * TILE_SIZE, tiles_x * TILE_SIZE
    P = TILE_SIZE * TILE_SIZE

    means2d = proj.means2d.reshape(C * N, 2)
    conics = proj.conics.reshape(C * N, 3)
    opac = opacities[None].expand(C, N).reshape(C * N)
    cols = colors.reshape(C * N, D)

    tiles = torch.nonzero(tile_counts).squeeze(1)
    tiles = tiles[torch.argsort(tile_counts[tiles], descending=True, stable=True)]  # similar sizes batch together
    total = int(tile_counts.sum()) * P
    use_checkpoint = total > CHECKPOINT_ABOVE and torch.is_grad_enabled()

    iy, ix = torch.meshgrid(torch.arange(TILE_SIZE), torch.arange(TILE_SIZE), indexing="ij")
    offsets = torch.stack([ix.flatten(), iy.flatten()], -1).to(means2d)  # (P, 2)

    pieces: list[torch.Tensor] = []
    trans: list[torch.Tensor] = []
    pixel_ids: list[torch.Tensor] = []
    i = 0
    while i < len(tiles):
        K = int(tile_counts[tiles[i]])
        slab = min(K, SLAB_SIZE)
        B = max(1, BATCH_ELEMENTS // (slab * P))
        batch = tiles[i : i + B]
        i += B
        cam, rem = batch // (tiles_x * tiles_y), batch % (tiles_x * tiles_y)
        corner = (torch.stack([rem % tiles_x, rem // tiles_x], -1) * TILE_SIZE).to(means2d)[:, None, :]  # (B, 1, 2)
        pix = offsets[None].expand(len(batch), -1, -1) + 0.5  # (B, P, 2) tile-local pixel centres
        counts = tile_counts[batch]  # (B,)
        rgb = torch.zeros(len(batch), P, D, dtype=means2d.dtype, device=means2d.device)
        T = torch.ones(len(batch), P, dtype=means2d.dtype, device=means2d.device)
        done = torch.zeros(len(batch), P, dtype=torch.bool, device=means2d.device)
        # Front-to-back slabs of splats; stop once every pixel of the batch is done (most of a head is opaque).
        for k0 in range(0, K, slab):
            active = torch.nonzero((counts > k0) & ~done.all(1)).squeeze(1)  # tiles with splats and live pixels
            if len(active) == 0:
                break
            k = torch.arange(k0, min(k0 + slab, K), device=batch.device)
            valid_k = k[None] < counts[active, None]  # (A, k)
            g = splat[(tile_start[batch[active]][:, None] + k[None]).clamp(max=len(splat) - 1)]  # (A, k) flat index
            args = (pix[active], valid_k, means2d[g] - corner[active], conics[g], opac[g], cols[g], T[active],
                    done[active])  # fmt: skip
            if use_checkpoint:
                rgb_k, T_k, done_k = checkpoint(_composite_slab, *args, use_reentrant=False)
            else:
                rgb_k, T_k, done_k = _composite_slab(*args)
            rgb = rgb.index_add(0, active, rgb_k)
            T = T.index_copy(0, active, T_k)
            done = done.index_copy(0, active, done_k)
        pieces.append(rgb.reshape(-1, D))
        trans.append(T.reshape(-1))
        pix_long = (pix + corner).long()
        pixel_ids.append(((cam[:, None] * Hp + pix_long[..., 1]) * Wp + pix_long[..., 0]).reshape(-1))

    T_img = torch.ones(C * Hp * Wp, dtype=means2d.dtype, device=means2d.device)
    rgb_img = torch.zeros(C * Hp * Wp, D, dtype=means2d.dtype, device=means2d.device)
    if pieces:
        ids = torch.cat(pixel_ids)
        T_img = T_img.index_copy(0, ids, torch.cat(trans))
        rgb_img = rgb_img.index_copy(0, ids, torch.cat(pieces))
    elif torch.is_grad_enabled():
        # Nothing visible: keep the inputs in the graph (with zero gradients), so `backward()` and the
        # densification strategy's read of `means2d.grad` work as when something is visible.
        rgb_img = rgb_img + 0.0 * (means2d.sum() + cols.sum() + opac.sum() + conics.sum())
    T_img = T_img.reshape(C, Hp, Wp, 1)[:, :height, :width]
    rgb_img = rgb_img.reshape(C, Hp, Wp, D)[:, :height, :width]
    rgb_img = rgb_img + T_img * backgrounds[:, None, None, :]
    return rgb_img, 1.0 - T_img
