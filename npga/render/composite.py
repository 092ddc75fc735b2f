"""Front-to-back alpha compositing of binned splats in PyTorch, with a hand-written backward.

Image formation is gsplat 1.5 "classic", constant for constant: alpha = min(0.999, opacity * exp(-sigma)),
fragments below 1/255 skipped, a pixel stops before the fragment that would bring its transmittance to 1e-4
or below, pixel centres at +0.5. (gsplat also skips fragments with sigma < 0; projection only makes
positive-definite conics, for which that happens through rounding alone, so it is not reproduced.)

Work is dense per tile: a batch of tiles of similar length is evaluated slab by slab (the next SLAB splats of
every tile against all of its pixels), so memory follows the batch size, never N x H x W, and a tile leaves
its batch once all of its pixels have stopped.

The backward recomputes the alphas slab by slab, front to back, from the stop index each pixel kept in the
forward pass (gsplat's kernel walks back to front from its last index; front to back needs only the final
colour and transmittance, which the forward returns anyway). It is faster than autograd through the same
slabs, which also keeps every slab's intermediates alive (benchmarks/RESULTS.md has the numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from npga.render.projection import ALPHA_THRESHOLD
from npga.render.tiles import TileBins

MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
SLAB = 64  # splats per tile evaluated at once
BATCH_ELEMENTS = 1 << 18  # splat-pixel pairs of one slab across a batch of tiles (1 MB per float32 array)
NO_STOP = torch.iinfo(torch.int32).max  # stop index of a pixel whose transmittance never fell to 1e-4


@dataclass(frozen=True)
class _Batch:
    """Tiles composited together, padded to the longest one."""

    starts: torch.Tensor  # (A,) first pair of each tile in TileBins.splats
    counts: torch.Tensor  # (A,) pairs per tile
    centres: torch.Tensor  # (A, 1, 2) tile centre in pixels
    pixels: torch.Tensor  # (A, P) flat index into the tile-padded images (C * Hp * Wp)
    length: int  # pairs of the longest tile


def _batches(bins: TileBins, dtype: torch.dtype) -> list[_Batch]:
    """Non-empty tiles, longest first, grouped so that one slab of a batch holds about BATCH_ELEMENTS pairs."""
    ts = bins.tile_size
    per_image = bins.tiles_x * bins.tiles_y
    Hp, Wp = bins.tiles_y * ts, bins.tiles_x * ts
    tiles = torch.nonzero(bins.counts).squeeze(1)
    tiles = tiles[torch.argsort(bins.counts[tiles], descending=True, stable=True)]
    lengths = bins.counts[tiles].tolist()
    rem = tiles % per_image
    x0, y0 = (rem % bins.tiles_x) * ts, (rem // bins.tiles_x) * ts
    centres = (torch.stack([x0, y0], -1).to(dtype) + ts / 2)[:, None, :]
    local = torch.arange(ts, device=tiles.device)
    offsets = (local[:, None] * Wp + local[None, :]).reshape(-1)  # (P,) pixels of a tile from its corner
    pixels = (((tiles // per_image) * Hp + y0) * Wp + x0)[:, None] + offsets
    out = []
    i = 0
    while i < len(tiles):
        j = i + max(1, BATCH_ELEMENTS // (min(lengths[i], SLAB) * ts * ts))
        t = tiles[i:j]
        out.append(_Batch(bins.starts[t], bins.counts[t], centres[i:j], pixels[i:j], lengths[i]))
        i = j
    return out


def _pixel_monomials(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(6, P) monomials px^2, py^2, px*py, px, py, 1 of the pixel centres relative to the tile centre.

    log(opacity) - sigma is a quadratic in the pixel position, so an (R, S, 6) x (6, P) product gives all of
    a slab's exponents; centring keeps float32 cancellation near 1e-5 for the worst splats.
    """
    r = torch.arange(tile_size, dtype=dtype, device=device) + 0.5 - tile_size / 2
    py, px = torch.meshgrid(r, r, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)
    return torch.stack([px * px, py * py, px * py, px, py, torch.ones_like(px)])


class _Slab:
    """The splats k0 ... k0 + SLAB - 1 of some tiles of a batch: their parameters and exponent coefficients."""

    def __init__(self, batch: _Batch, rows: torch.Tensor, k0: int, bins: TileBins, params: torch.Tensor) -> None:
        k = torch.arange(k0, k0 + SLAB, device=rows.device)
        pair = (batch.starts[rows, None] + k).clamp_(max=max(len(bins.splats) - 1, 0))
        pad = len(params) - 1  # a transparent splat fills each tile up to the slab's end
        self.splats = torch.where(k < batch.counts[rows, None], bins.splats[pair], pad)  # (R, S)
        p = params[self.splats]  # (R, S, 6): x, y, conic a, b, c, log(opacity)
        self.local = p[..., :2] - batch.centres[rows]  # (R, S, 2) splat centre relative to the tile centre
        self.conics = p[..., 2:5]
        a, b, c = self.conics.unbind(-1)
        mx, my = self.local.unbind(-1)
        const = p[..., 5] - (0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my)
        self.coeffs = torch.stack([-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx, const], -1)

    def gradients(self, moments: torch.Tensor) -> torch.Tensor:
        """(R, S, 6) d loss / d (x, y, conic a, b, c, log opacity) from sums of v_sigma * monomial (R, S, 6).

        sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 with (dx, dy) = mean - pixel, so each gradient is a
        quadratic in the splat's tile-local mean of these six sums.
        """
        sxx, syy, sxy, sx, sy, s0 = moments.unbind(-1)
        mx, my = self.local.unbind(-1)
        a, b, c = self.conics.unbind(-1)
        dx, dy = mx * s0 - sx, my * s0 - sy
        dxx = mx * mx * s0 - 2 * mx * sx + sxx
        dyy = my * my * s0 - 2 * my * sy + syy
        dxy = mx * my * s0 - mx * sy - my * sx + sxy
        return torch.stack([a * dx + b * dy, b * dx + c * dy, 0.5 * dxx, dxy, 0.5 * dyy, -s0], -1)


class _Tables:
    """Per-call constants: pixel monomials and thresholds rounded exactly as the working dtype compares them."""

    def __init__(self, tile_size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.mono = _pixel_monomials(tile_size, dtype, device)  # (6, P)
        # F.threshold(x, t, 0) keeps x > t; the neighbouring floats make the comparisons gsplat's: keep
        # alpha >= 1/255, and differentiate where opacity * exp(-sigma) <= 0.999.
        lo = torch.tensor(ALPHA_THRESHOLD, dtype=dtype)
        hi = torch.tensor(-MAX_ALPHA, dtype=dtype)
        self.alpha_floor = torch.nextafter(lo, torch.zeros_like(lo)).item()
        self.neg_clamp_floor = torch.nextafter(hi, torch.full_like(hi, -2.0)).item()

    def raw_alphas(self, slab: _Slab) -> torch.Tensor:
        """opacity * exp(-sigma) (R, S, P), zero below ALPHA_THRESHOLD, not yet clamped at MAX_ALPHA."""
        return F.threshold(torch.matmul(slab.coeffs, self.mono).exp_(), self.alpha_floor, 0.0, inplace=True)


def _hold_after(trans: torch.Tensor, n_keep: torch.Tensor) -> torch.Tensor:
    """Count only the first n_keep (R, P) splats of each pixel: hold the transmittance (R, S, P), in place,
    at its value after the last of them, which is returned (R, P)."""
    last = trans.gather(1, (n_keep - 1).clamp_min(0)[:, None, :]).squeeze(1)
    last = torch.where(n_keep > 0, last, 1.0)
    torch.maximum(trans, last[:, None, :], out=trans)
    return last


def _drops(trans: torch.Tensor) -> torch.Tensor:
    """Drop of the transmittance (R, S, P) at each splat, starting from 1: alpha * transmittance in front."""
    delta = torch.empty_like(trans)
    delta[:, 0] = 1.0 - trans[:, 0]
    torch.sub(trans[:, :-1], trans[:, 1:], out=delta[:, 1:])
    return delta


def _splat_params(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor) -> torch.Tensor:
    """(C * N + 1, 6) x, y, conic a, b, c, log(opacity) per splat; the last row is a transparent pad."""
    C, N = opacities.shape
    params = torch.cat([means2d, conics, torch.log(opacities)[..., None]], -1).reshape(C * N, 6)
    pad = params.new_tensor([[0.0, 0.0, 1.0, 0.0, 1.0, -1e4]])  # exp(-1e4) underflows to alpha 0
    return torch.cat([params, pad])


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, bins: TileBins):
        C, N, D = colors.shape
        dtype, device = colors.dtype, colors.device
        Hp, Wp = bins.tiles_y * bins.tile_size, bins.tiles_x * bins.tile_size
        params = _splat_params(means2d, conics, opacities)
        cols = torch.cat([colors.reshape(C * N, D), colors.new_zeros(1, D)])
        tab = _Tables(bins.tile_size, dtype, device)
        P = tab.mono.shape[1]
        acc_img = torch.zeros(C * Hp * Wp, D, dtype=dtype, device=device)
        T_img = torch.ones(C * Hp * Wp, dtype=dtype, device=device)
        stop_img = torch.full((C * Hp * Wp,), NO_STOP, dtype=torch.int32, device=device)
        batches = _batches(bins, dtype)
        for batch in batches:
            A = len(batch.starts)
            acc = torch.zeros(A, P, D, dtype=dtype, device=device)
            T = torch.ones(A, P, dtype=dtype, device=device)
            stop = torch.full((A, P), NO_STOP, dtype=torch.int32, device=device)
            for k0 in range(0, batch.length, SLAB):
                rows = torch.nonzero((batch.counts > k0) & (stop == NO_STOP).any(1)).squeeze(1)
                if len(rows) == 0:
                    break
                slab = _Slab(batch, rows, k0, bins, params)
                alpha = tab.raw_alphas(slab).clamp_(max=MAX_ALPHA)  # (R, S, P)
                trans = torch.cumprod(torch.rsub(alpha, 1.0), 1)  # transmittance after each splat / T_in
                T_in, stop_in = T[rows], stop[rows]
                # A pixel keeps splats while T_in * transmittance > 1e-4 (a prefix); stopped pixels keep none.
                limit = torch.where(stop_in == NO_STOP, MIN_TRANSMITTANCE / T_in, float("inf"))
                n_keep = (trans > limit[:, None, :]).sum(1)  # (R, P)
                last = _hold_after(trans, n_keep)
                colour = torch.bmm(_drops(trans).transpose(1, 2), cols[slab.splats])  # (R, P, D) / T_in
                acc.index_add_(0, rows, colour.mul_(T_in[..., None]))
                T.index_copy_(0, rows, T_in * last)
                stopped = (n_keep < SLAB) & (stop_in == NO_STOP)
                stop.index_copy_(0, rows, torch.where(stopped, (k0 + n_keep).int(), stop_in))
            ids = batch.pixels.reshape(-1)
            acc_img.index_copy_(0, ids, acc.reshape(-1, D))
            T_img.index_copy_(0, ids, T.reshape(-1))
            stop_img.index_copy_(0, ids, stop.reshape(-1))
        ctx.bins, ctx.batches = bins, batches
        ctx.save_for_backward(params, opacities, cols, acc_img, T_img, stop_img)
        return acc_img.reshape(C, Hp, Wp, D), T_img.reshape(C, Hp, Wp)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_acc, grad_T):
        params, opacities, cols, acc_img, T_img, stop_img = ctx.saved_tensors
        C, N = opacities.shape
        D = cols.shape[1]
        bins = ctx.bins
        dtype, device = cols.dtype, cols.device
        tab = _Tables(bins.tile_size, dtype, device)
        G_img = grad_acc.reshape(-1, D)
        gT_img = grad_T.reshape(-1)
        v_params = torch.zeros_like(params)  # d loss / d (x, y, a, b, c, log opacity) per splat
        v_cols = torch.zeros_like(cols)
        for batch in ctx.batches:
            ids = batch.pixels
            G = G_img[ids]  # (A, P, D)
            T = torch.ones(ids.shape, dtype=dtype, device=device)  # transmittance in front of the slab
            # d loss / d (transmittance in front of the slab), times that transmittance: what the splats
            # from the slab on and the final transmittance (through background and alpha) contribute.
            rest = (acc_img[ids] * G).sum(-1) + T_img[ids] * gT_img[ids]  # (A, P)
            stop = stop_img[ids]
            last_stop = stop.amax(1)  # a tile is done once its last pixel stopped
            for k0 in range(0, batch.length, SLAB):
                rows = torch.nonzero((batch.counts > k0) & (last_stop > k0)).squeeze(1)
                if len(rows) == 0:
                    break
                slab = _Slab(batch, rows, k0, bins, params)
                raw = tab.raw_alphas(slab)  # (R, S, P)
                alpha = raw.clamp(max=MAX_ALPHA)
                trans = torch.cumprod(torch.rsub(alpha, 1.0), 1)
                _hold_after(trans, (stop[rows] - k0).clamp(0, SLAB))
                delta = _drops(trans)  # alpha * transmittance in front, / T_in; 0 where not kept
                T_in = T[rows]  # (R, P)
                Gr = G[rows]  # (R, P, D)
                v_cols.index_add_(0, slab.splats.reshape(-1), torch.bmm(delta, Gr * T_in[..., None]).reshape(-1, D))
                cg = torch.bmm(cols[slab.splats], Gr.transpose(1, 2))  # (R, S, P) colour . dL/dcolour
                dcg = delta * cg
                rest_in = rest[rows]
                rest.index_copy_(0, rows, rest_in - T_in * dcg.sum(1))
                T.index_copy_(0, rows, T_in * trans[:, -1])
                # d loss / d alpha per unit of T_in: the splat's own colour, minus what it hides (the splats
                # behind it and the final transmittance), rescaled by 1 / (1 - alpha).
                v_alpha = torch.cumsum(dcg, 1).sub_((rest_in / T_in)[:, None, :]).div_(torch.rsub(alpha, 1.0))
                v_alpha.add_(cg.mul_(trans)).add_(dcg)
                # v_sigma = -alpha * v_alpha where gsplat differentiates: kept, alpha >= 1/255, raw <= 0.999.
                minus_alpha = F.threshold(raw.neg_(), tab.neg_clamp_floor, 0.0, inplace=True)
                v_sigma = v_alpha.mul_(minus_alpha).mul_(delta.sign_()).mul_(T_in[:, None, :])
                moments = torch.matmul(v_sigma, tab.mono.T)  # (R, S, 6)
                v_params.index_add_(0, slab.splats.reshape(-1), slab.gradients(moments).reshape(-1, 6))
        v_params, v_cols = v_params[:-1].reshape(C, N, 6), v_cols[:-1].reshape(C, N, D)
        # Splats that reached a pixel have opacity >= 1/255; the others have no gradient (and may have opacity 0).
        v_opacities = v_params[..., 5] / opacities.clamp_min(ALPHA_THRESHOLD)
        return v_params[..., :2], v_params[..., 2:5], v_opacities, v_cols, None


def composite(
    means2d: torch.Tensor,  # (C, N, 2)
    conics: torch.Tensor,  # (C, N, 3)
    opacities: torch.Tensor,  # (C, N)
    colors: torch.Tensor,  # (C, N, D)
    bins: TileBins,
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulated colour (C, H, W, D) and final transmittance (C, H, W); differentiable w.r.t. all four inputs."""
    acc, T = _Composite.apply(means2d, conics, opacities, colors, bins)
    return acc[:, :height, :width], T[:, :height, :width]
