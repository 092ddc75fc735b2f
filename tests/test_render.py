"""npga.render.rasterize against an independent brute-force reference, finite differences and gsplat.

The reference below is written from the formulas of EWA splatting as gsplat 1.5 "classic" forms images, in
float64 torch, every Gaussian against every pixel in depth order; it shares no code with npga.render, and
being plain autograd it also gives reference gradients.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from npga.cameras import look_at
from npga.render import RENDER_MODES, rasterize


def _rotation(q: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotation of wxyz quaternions of any norm."""
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def reference_render(
    means,
    quats,
    scales,
    opacities,
    colors,
    viewmats,
    Ks,
    W,
    H,
    backgrounds=None,
    mode="RGB",
    eps2d=0.3,
    near=0.01,
    far=1e10,
    stats=None,
):
    """Brute force, float64: colours (C, H, W, D') and alphas (C, H, W, 1), differentiable by autograd.

    `stats`, if a dict, gets the screen-space radii (C, N, 2) of the splats drawn and counts pixels that
    stopped at transmittance 1e-4 and fragments clamped at 0.999.
    """
    args = (means, quats, scales, opacities, colors, viewmats, Ks)
    means, quats, scales, opacities, colors, viewmats, Ks = (t.double() for t in args)
    C, N = len(viewmats), len(means)
    if colors.ndim == 2:
        colors = colors.expand(C, *colors.shape)
    ys, xs = torch.meshgrid(torch.arange(H).double() + 0.5, torch.arange(W).double() + 0.5, indexing="ij")
    cov3 = _rotation(quats) @ torch.diag_embed(scales.double() ** 2) @ _rotation(quats).transpose(1, 2)
    images, alphas = [], []
    radii = torch.zeros(C, N, 2, dtype=torch.int32)
    for ci in range(C):
        R, t = viewmats[ci, :3, :3], viewmats[ci, :3, 3]
        fx, fy, cx, cy = Ks[ci, 0, 0], Ks[ci, 1, 1], Ks[ci, 0, 2], Ks[ci, 1, 2]
        p = means @ R.T + t  # (N, 3) camera space
        feats = {"RGB": colors[ci], "D": p[:, 2:], "ED": p[:, 2:]}
        feats["RGB+D"] = feats["RGB+ED"] = torch.cat([colors[ci], p[:, 2:]], -1)
        feat = feats[mode]
        order = torch.argsort(p[:, 2].detach(), stable=True)
        T = torch.ones(H, W, dtype=torch.float64)
        acc = torch.zeros(H, W, feat.shape[1], dtype=torch.float64)
        done = torch.zeros(H, W, dtype=torch.bool)
        for i in order.tolist():
            x, y, z = p[i]
            if not near <= z.item() <= far or opacities[i].item() < 1 / 255:
                continue
            # Jacobian of the perspective projection at the position clamped to 1.3x the field of view.
            lim_x = ((W - cx) / fx + 0.15 * W / fx, cx / fx + 0.15 * W / fx)
            lim_y = ((H - cy) / fy + 0.15 * H / fy, cy / fy + 0.15 * H / fy)
            u = torch.clamp(x / z, -lim_x[1], lim_x[0])
            v = torch.clamp(y / z, -lim_y[1], lim_y[0])
            zero = z * 0
            J = torch.stack([torch.stack([fx / z, zero, -fx * u / z]), torch.stack([zero, fy / z, -fy * v / z])])
            cov2 = J @ R @ cov3[i] @ R.T @ J.T + eps2d * torch.eye(2, dtype=torch.float64)
            if torch.linalg.det(cov2).item() <= 0:
                continue
            conic = torch.linalg.inv(cov2)
            mu = torch.stack([fx * x / z + cx, fy * y / z + cy])
            op = opacities[i]
            extend = min(3.33, math.sqrt(2 * math.log(op.item() * 255)))
            rx = math.ceil(extend * math.sqrt(cov2[0, 0].item()))
            ry = math.ceil(extend * math.sqrt(cov2[1, 1].item()))
            if mu[0] + rx <= 0 or mu[0] - rx >= W or mu[1] + ry <= 0 or mu[1] - ry >= H:
                continue
            radii[ci, i] = torch.tensor([rx, ry])
            dx, dy = mu[0] - xs, mu[1] - ys
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            raw = op * torch.exp(-sigma)
            a = torch.clamp(raw, max=0.999)
            use = (sigma >= 0) & (a >= 1 / 255) & ~done
            stop = use & (T * (1 - a) <= 1e-4).detach()
            done = done | stop
            use = use & ~stop
            acc = acc + torch.where(use, a * T, 0.0)[..., None] * feat[i]
            T = torch.where(use, T * (1 - a), T)
            if stats is not None:
                stats["clamped"] = stats.get("clamped", 0) + int((use & (raw > 0.999)).sum())
        if stats is not None:
            stats["stopped"] = stats.get("stopped", 0) + int(done.sum())
        if backgrounds is not None:
            bg = backgrounds[ci].double()
            bg = torch.zeros_like(bg[:1]) if mode in ("D", "ED") else bg
            bg = torch.cat([bg, torch.zeros_like(bg[:1])]) if mode in ("RGB+D", "RGB+ED") else bg
            acc = acc + T[..., None] * bg
        if mode in ("ED", "RGB+ED"):
            acc = torch.cat([acc[..., :-1], acc[..., -1:] / (1 - T[..., None]).clamp(min=1e-10)], -1)
        images.append(acc)
        alphas.append(1 - T[..., None])
    if stats is not None:
        stats["radii"] = radii
    return torch.stack(images), torch.stack(alphas)


def make_scene(N: int, C: int, D: int, W: int, H: int, seed: int = 0, opaque: bool = False):
    """Overlapping Gaussians around the origin, seen by C cameras about 1 unit away (float32).

    Also: one behind camera 0, one off screen, one huge, one tiny, one below 1/255 opacity, three of opacity
    1 centred on pixels (alpha clamped at 0.999). `opaque` packs opaque ones tightly enough that the 1e-4
    stop and hundreds of splats per tile occur.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g) * (0.03 if opaque else 0.08)
    means[0] = torch.tensor([0.0, 0.0, 1.5])  # behind camera 0 (which sits at z = 1)
    means[1] = torch.tensor([0.9, 0.0, 0.0])  # off screen
    scales = torch.exp(torch.empty(N, 3).uniform_(-5.0, -3.0, generator=g))
    scales[2] = torch.tensor([0.2, 0.15, 0.1])  # huge
    scales[3] = torch.tensor([1e-4, 1e-4, 1e-4])  # tiny
    quats = torch.randn(N, 4, generator=g)
    low = 0.8 if opaque else 0.02
    opacities = low + (0.99 - low) * torch.rand(N, generator=g)
    opacities[4] = 0.003  # culled
    colors = torch.rand(N, D, generator=g)
    eyes = [[0.0, 0.0, 1.0], [0.5, 0.2, 0.8], [-0.6, -0.1, 0.7]][:C]
    viewmats = torch.tensor(np.stack([look_at(e, [0, 0, 0]) for e in eyes]), dtype=torch.float32)
    f = 1.2 * max(W, H)
    Ks = torch.tensor([[f, 0, W / 2 + 3], [0, f * 1.05, H / 2 - 2], [0, 0, 1]]).expand(C, 3, 3).clone()
    # Three opaque ones centred on pixel centres of camera 0, in front: their alpha is clamped at 0.999.
    pix = torch.tensor([[W // 2, H // 2], [W // 2 + 3, H // 2 + 2], [W // 2 - 3, H // 2 + 1]]) + 0.5
    cam = torch.cat([(pix - Ks[0, :2, 2]) / Ks[0, [0, 1], [0, 1]] * 0.8, torch.full((3, 1), 0.8)], 1)
    means[5:8] = (cam - viewmats[0, :3, 3]) @ viewmats[0, :3, :3]  # camera -> world
    opacities[5:8] = 1.0
    backgrounds = torch.rand(C, D, generator=g)
    return means, quats, scales, opacities, colors, viewmats, Ks, backgrounds


# (N, C, D, W, H, opaque): widths and heights not multiples of the tile size, non-square, several cameras,
# RGB and RGB + 32 latent channels, a sparse and a saturated scene.
SCENES = {
    "sparse": (120, 3, 3, 40, 27, False),
    "saturated": (400, 1, 35, 33, 48, True),
}


@pytest.mark.parametrize("scene", SCENES)
def test_matches_brute_force_reference(scene):
    N, C, D, W, H, opaque = SCENES[scene]
    means, quats, scales, opacities, colors, viewmats, Ks, bg = make_scene(N, C, D, W, H, opaque=opaque)
    img, alpha, meta = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=bg)
    stats: dict[str, int] = {}
    with torch.no_grad():
        ref, ref_alpha = reference_render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, bg, stats=stats)
    assert img.shape == (C, H, W, D) and alpha.shape == (C, H, W, 1) and img.dtype == torch.float32
    assert (img.double() - ref).abs().max() < 1e-4
    assert (alpha.double() - ref_alpha).abs().max() < 1e-4
    assert stats["clamped"] > 0 and ref_alpha.min() < 0.01
    if opaque:
        assert stats["stopped"] > 100  # the 1e-4 stop decided many pixels
    assert meta["means2d"].shape == (C, N, 2) and meta["radii"].shape == (C, N, 2)
    assert meta["radii"].dtype == torch.int32 and torch.equal(meta["radii"], stats["radii"])
    assert (meta["radii"][0, :2] == 0).all() and (meta["radii"][:, 4] == 0).all()  # behind, off screen; faint


@pytest.mark.parametrize("mode", RENDER_MODES)
def test_render_modes_match_reference(mode):
    N, C, D, W, H = 60, 2, 3, 24, 20
    means, quats, scales, opacities, _, viewmats, Ks, bg = make_scene(N, C, D, W, H, seed=3)
    colors = torch.rand(C, N, D, generator=torch.Generator().manual_seed(1))  # per-camera colours
    img, alpha, _ = rasterize(
        means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=bg, render_mode=mode
    )
    with torch.no_grad():
        ref, ref_alpha = reference_render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, bg, mode)
    assert img.shape == ref.shape
    err = (img.double() - ref).abs()
    if mode in ("ED", "RGB+ED"):
        err[..., -1] *= ref_alpha[..., 0].clamp(max=1.0)  # expected depth: relative to the alpha it divides by
    assert err.max() < 1e-4
    assert (alpha.double() - ref_alpha).abs().max() < 1e-4


@pytest.mark.parametrize(("scene", "mode"), [("sparse", "RGB+ED"), ("saturated", "RGB")])
def test_gradients_match_reference_autograd(scene, mode):
    """float64 gradients w.r.t. every input, with stops, clamps and hundreds of splats per pixel."""
    N, C, D, W, H, opaque = SCENES[scene]
    inputs = [t.double() for t in make_scene(N, C, D, W, H, opaque=opaque)]
    weight = torch.rand(C, H, W, D + (mode != "RGB"), generator=torch.Generator().manual_seed(2)).double()

    def grads(render):
        leaves = [t.clone().requires_grad_() for t in inputs]
        m, q, s, o, c, V, K, bg = leaves
        img, alpha = render(m, q, s, o, c, V, K, W, H, bg, mode)[:2]
        loss = (img * weight).sum() + (alpha * weight[..., :1]).sum()
        return torch.autograd.grad(loss, [m, q, s, o, c, bg])

    ours = grads(lambda *a: rasterize(*a[:9], backgrounds=a[9], render_mode=a[10]))
    ref = grads(reference_render)
    for name, g, r in zip(["means", "quats", "scales", "opacities", "colors", "backgrounds"], ours, ref, strict=True):
        assert (g - r).norm() <= 1e-8 * r.norm(), name


@pytest.mark.parametrize(("tile_size", "slab", "batch_elements"), [(4, 64, 1 << 18), (16, 8, 1 << 9), (8, 5, 1)])
def test_work_partition_changes_neither_image_nor_gradients(monkeypatch, tile_size, slab, batch_elements):
    """Tile size, slab length and batch size (one tile per batch at 1) only split the work differently."""
    import npga.render.composite
    import npga.render.torch_backend

    N, C, D, W, H, opaque = SCENES["saturated"]
    inputs = [t.double() for t in make_scene(N, C, D, W, H, opaque=opaque)]

    def render():
        leaves = [t.clone().requires_grad_() for t in inputs[:5]]
        img, alpha, _ = rasterize(*leaves, *inputs[5:7], W, H, backgrounds=inputs[7])
        return [img, alpha, *torch.autograd.grad((img * img).sum() + alpha.sum(), leaves)]

    default = render()
    monkeypatch.setattr(npga.render.torch_backend, "TILE_SIZE", tile_size)
    monkeypatch.setattr(npga.render.composite, "SLAB", slab)
    monkeypatch.setattr(npga.render.composite, "BATCH_ELEMENTS", batch_elements)
    for a, b in zip(default, render(), strict=True):
        assert (a - b).abs().max() <= 1e-10 * (1 + b.abs().max())


def test_gradients_match_finite_differences():
    """float64, a tiny scene whose fragments stay clear of the 1/255, 0.999 and 1e-4 thresholds."""
    torch.manual_seed(0)
    N, W, H = 4, 12, 10
    means = (torch.randn(N, 3) * 0.02).double().requires_grad_()
    quats = torch.randn(N, 4).double().requires_grad_()
    scales = (0.02 + 0.01 * torch.rand(N, 3)).double().requires_grad_()
    opacities = torch.tensor([0.5, 0.6, 0.4, 0.7]).double().requires_grad_()
    colors = torch.rand(N, 3).double().requires_grad_()
    bg = torch.rand(1, 3).double().requires_grad_()
    viewmats = torch.tensor(look_at([0.05, 0.02, 0.4], [0, 0, 0]))[None]
    Ks = torch.tensor([[30.0, 0, 6.2], [0, 31.0, 4.9], [0, 0, 1]]).double()[None]
    weight = torch.rand(1, H, W, 4).double()

    def loss(m, q, s, o, c, b):
        img, alpha, _ = rasterize(m, q, s, o, c, viewmats, Ks, W, H, backgrounds=b, render_mode="RGB+D")
        return (img * weight).sum() + (alpha * weight[..., :1]).sum()

    assert torch.autograd.gradcheck(loss, (means, quats, scales, opacities, colors, bg), eps=1e-6, atol=1e-5)


def _camera(W: int, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    viewmats = torch.tensor(look_at([0, 0, 1.0], [0, 0, 0]), dtype=torch.float32)[None]
    Ks = torch.tensor([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]])[None]
    return viewmats, Ks


def test_no_gaussians_render_the_background():
    W, H = 17, 9
    viewmats, Ks = _camera(W, H)
    bg = torch.tensor([[0.2, 0.4, 0.6]], requires_grad=True)
    empty = [torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3)]
    empty = [t.requires_grad_() for t in empty]
    img, alpha, meta = rasterize(*empty, viewmats, Ks, W, H, backgrounds=bg)
    assert img.shape == (1, H, W, 3) and torch.equal(img, bg.detach().expand(1, H, W, 3))
    assert (alpha == 0).all() and meta["means2d"].shape == (1, 0, 2) and meta["radii"].shape == (1, 0, 2)
    img.sum().backward()
    assert torch.allclose(bg.grad, torch.full((1, 3), float(W * H)))
    assert empty[0].grad is not None and empty[0].grad.shape == (0, 3)


def test_all_culled_renders_background_with_zero_gradients():
    W, H = 17, 9
    viewmats, Ks = _camera(W, H)
    means = torch.tensor(
        [[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.995], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True
    )  # behind the camera, at it (z = 0), before the near plane, off screen, visible but transparent
    quats = torch.tensor([[1.0, 0, 0, 0]] * 5, requires_grad=True)
    scales = torch.full((5, 3), 0.05, requires_grad=True)
    opacities = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.002], requires_grad=True)
    colors = torch.ones(5, 3, requires_grad=True)
    bg = torch.tensor([[0.1, 0.2, 0.3]])
    img, alpha, meta = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=bg)
    assert torch.equal(img, bg.expand(1, H, W, 3)) and (alpha == 0).all() and (meta["radii"] == 0).all()
    (img.sum() + alpha.sum()).backward()
    for t in (means, quats, scales, opacities, colors):
        assert t.grad is not None and torch.equal(t.grad, torch.zeros_like(t))


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"means": torch.zeros(3, 2)}, "means"),
        ({"means": torch.tensor([[float("nan"), 0, 0]] * 3)}, "means"),
        ({"means": torch.zeros(3, 3, dtype=torch.int64)}, "means"),
        ({"quats": torch.zeros(3, 3)}, "quats"),
        ({"scales": torch.zeros(2, 3)}, "scales"),
        ({"opacities": torch.zeros(3, 1)}, "opacities"),
        ({"opacities": torch.ones(3, dtype=torch.float64)}, "opacities"),
        ({"colors": torch.zeros(2, 3)}, "colors"),
        ({"colors": torch.zeros(2, 3, 3)}, "colors"),
        ({"viewmats": torch.eye(3)[None]}, "viewmats"),
        ({"viewmats": torch.eye(4)}, "viewmats"),
        ({"viewmats": torch.zeros(0, 4, 4)}, "viewmats"),
        ({"Ks": torch.eye(4)[None]}, "Ks"),
        ({"Ks": torch.eye(3).expand(2, 3, 3)}, "Ks"),
        ({"width": 0}, "width"),
        ({"height": 8.0}, "height"),
        ({"near_plane": -1.0}, "near_plane"),
        ({"eps2d": -0.1}, "eps2d"),
        ({"render_mode": "RGBD"}, "render_mode"),
        ({"backgrounds": torch.zeros(1, 4)}, "backgrounds"),
        ({"backend": "cuda"}, "backend"),
        ({"backend": "gsplat"}, "CUDA"),
        ({"packed": True}, "packed"),
    ],
)
def test_bad_input_names_the_argument(change, name):
    args = {
        "means": torch.zeros(3, 3),
        "quats": torch.ones(3, 4),
        "scales": torch.ones(3, 3),
        "opacities": torch.ones(3),
        "colors": torch.ones(3, 3),
        "viewmats": torch.eye(4)[None],
        "Ks": torch.eye(3)[None],
        "width": 8,
        "height": 8,
        "backend": "torch",
    }
    args.update(change)
    with pytest.raises(ValueError, match=name):
        rasterize(**args)


@pytest.mark.gpu
@pytest.mark.parametrize(("scene", "mode"), [("sparse", "RGB"), ("sparse", "RGB+ED"), ("saturated", "RGB")])
def test_gsplat_and_torch_backends_agree(scene, mode):
    N, C, D, W, H, opaque = SCENES[scene]
    inputs = [t.cuda() for t in make_scene(N, C, D, W, H, opaque=opaque)]
    weight = torch.rand(C, H, W, D + (mode != "RGB"), generator=torch.Generator().manual_seed(2)).cuda()
    outs = {}
    for backend in ("torch", "gsplat"):
        leaves = [t.clone().requires_grad_() for t in inputs]
        m, q, s, o, c, V, K, bg = leaves
        img, alpha, meta = rasterize(
            m, q, s, o, c, V, K, W, H, backgrounds=bg, render_mode=mode, packed=False, backend=backend
        )
        meta["means2d"].retain_grad()
        ((img * weight).sum() + alpha.sum()).backward()
        outs[backend] = (img.detach(), alpha.detach(), [t.grad for t in (m, q, s, o, c, bg)] + [meta["means2d"].grad])
    (img_t, alpha_t, grads_t), (img_g, alpha_g, grads_g) = outs["torch"], outs["gsplat"]
    assert (img_t - img_g).abs().mean() < 1e-3 and (alpha_t - alpha_g).abs().mean() < 1e-3
    names = ["means", "quats", "scales", "opacities", "colors", "backgrounds", "means2d"]
    for name, gt, gg in zip(names, grads_t, grads_g, strict=True):
        assert (gt - gg).norm() <= 1e-3 * gg.norm() + 1e-8, name


def test_may_draw_keeps_every_gaussian_the_projection_gives_a_footprint_and_culls_the_rest_of_the_view():
    """`may_draw` is a cheaper bound for culling: it must hold every Gaussian `project` draws (thin needles seen
    end-on or side-on, at the image's edges, in cameras turned off the scene's centre), and still cull."""
    from npga.render.projection import may_draw, project

    g = torch.Generator().manual_seed(0)
    n = 4000
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([3.0, 3.0, 1.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 1.2 - 4.0)  # needles and discs, 1 mm to 10 cm
    opacities = torch.rand(n, generator=g)
    eyes, targets = [[0, 0, 2.0], [1.5, 0.3, 1.5], [0, -1.8, 0.9]], [[0, 0, 0], [0.4, 0, 0], [0, 0.2, 0.1]]
    viewmats = torch.stack(
        [torch.tensor(look_at(e, t), dtype=torch.float32) for e, t in zip(eyes, targets, strict=True)]
    )
    W, H = 40, 30
    Ks = torch.tensor([[30.0, 0, 17.0], [0, 33.0, 16.0], [0, 0, 1]]).expand(3, 3, 3)
    drawn = project(means, quats, scales, opacities, viewmats, Ks, W, H, 0.01, 1e10, 0.3).radii.gt(0).any(-1)
    bound = may_draw(means, scales, viewmats, Ks, W, H)
    assert drawn.sum() > 500
    assert not (drawn & ~bound).any()
    assert (~bound).sum() > 0.3 * n  # it culls
