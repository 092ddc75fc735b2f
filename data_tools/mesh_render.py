"""A vectorised z-buffer triangle rasterizer (torch, CPU) for rendering the synthetic head's mesh.

It returns, per pixel, barycentrically interpolated vertex attributes of the nearest triangle, so the
capture generator can evaluate the head's colour field at the exact canonical point under every pixel.
"""

from __future__ import annotations

import torch

PAIR_CHUNK = 1 << 22  # triangle-pixel candidate pairs processed at once


def rasterize_mesh(
    verts: torch.Tensor,  # (V, 3) pixel x, pixel y, camera depth z
    faces: torch.Tensor,  # (F, 3) int64
    attrs: torch.Tensor,  # (V, A)
    width: int,
    height: int,
    near: float = 1e-3,
    cull_back: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-surface attributes (H, W, A) and coverage mask (H, W) bool; pixel centres at +0.5.

    `cull_back`: skip the triangles seen from behind, for a closed mesh whose faces wind counter-clockwise seen
    from outside (`zero_level_mesh`'s): they are always hidden behind the front, and skipping them halves the
    work without changing the image."""
    tri = verts[faces]  # (F, 3, 3)
    keep = (tri[..., 2] > near).all(1)
    if cull_back:  # counter-clockwise from outside is clockwise on screen (pixel y points down): negative area
        e1, e2 = tri[:, 1, :2] - tri[:, 0, :2], tri[:, 2, :2] - tri[:, 0, :2]
        keep &= e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0
    tri, faces = tri[keep], faces[keep]
    x0 = torch.ceil(tri[..., 0].min(1).values - 0.5).clamp(0, width).long()
    x1 = torch.floor(tri[..., 0].max(1).values - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(tri[..., 1].min(1).values - 0.5).clamp(0, height).long()
    y1 = torch.floor(tri[..., 1].max(1).values - 0.5).clamp(-1, height - 1).long()
    nx, ny = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    counts = nx * ny  # (F,)
    depth_buf = torch.full((height * width,), float("inf"), dtype=verts.dtype)
    best = torch.full((height * width,), -1, dtype=torch.long)
    # winners per chunk: (pixel, face, barycentrics)
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    starts = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    face_order = torch.arange(len(faces))
    for lo in range(0, total, PAIR_CHUNK):
        hi = min(lo + PAIR_CHUNK, total)
        # faces whose pair ranges intersect [lo, hi)
        fsel = face_order[(starts < hi) & (starts + counts > lo)]
        c = counts[fsel]
        f = torch.repeat_interleave(fsel, c)
        local = torch.arange(int(c.sum())) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
        glob = starts[f] + local
        inside_chunk = (glob >= lo) & (glob < hi)
        f, local = f[inside_chunk], local[inside_chunk]
        px = (x0[f] + local % nx[f]).to(verts.dtype) + 0.5
        py = (y0[f] + local // nx[f]).to(verts.dtype) + 0.5
        t = tri[f]  # (M, 3, 3)
        a, b, cc = t[:, 0], t[:, 1], t[:, 2]
        area = (b[:, 0] - a[:, 0]) * (cc[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (cc[:, 0] - a[:, 0])
        w0 = (b[:, 0] - px) * (cc[:, 1] - py) - (b[:, 1] - py) * (cc[:, 0] - px)
        w1 = (cc[:, 0] - px) * (a[:, 1] - py) - (cc[:, 1] - py) * (a[:, 0] - px)
        w2 = (a[:, 0] - px) * (b[:, 1] - py) - (a[:, 1] - py) * (b[:, 0] - px)
        bary = torch.stack([w0, w1, w2], -1) / torch.where(area.abs() > 1e-12, area, torch.ones_like(area))[:, None]
        ok = (bary >= 0).all(-1) & (area.abs() > 1e-12)
        # perspective-correct barycentrics: interpolate attribute / z linearly in screen space
        inv_z = bary / t[..., 2]
        z = 1.0 / inv_z.sum(-1)
        bary_p = inv_z * z[:, None]
        pix = (py.long() * width + px.long())[ok]
        z, bary_p, f = z[ok], bary_p[ok], f[ok]
        depth_buf.scatter_reduce_(0, pix, z, reduce="amin")
        found.append((pix, z, f, bary_p))
    mask = torch.isfinite(depth_buf)
    out = torch.zeros(height * width, attrs.shape[1], dtype=attrs.dtype)
    for pix, z, f, bary_p in found:
        win = z <= depth_buf[pix]
        pix, f, bary_p = pix[win], f[win], bary_p[win]
        best[pix] = f
        out[pix] = (attrs[faces[f]] * bary_p[..., None]).sum(1)
    return out.reshape(height, width, -1), mask.reshape(height, width)
