"""The PyTorch rasterizer against an independent brute-force reference, finite differences and gsplat.

The reference below is written from the formulas (EWA splatting as gsplat 1.5 "classic" forms images),
in float64, every Gaussian against every pixel; it shares no code with npga.render.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from npga.cameras import look_at
from npga.render import rasterize


def reference_render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, bg, eps2d=0.3, near=0.01):
    """Brute force, float64 numpy: returns colours (C, H, W, D) and alphas (C, H, W)."""
    means, quats, scales, opacities, colors, viewmats, Ks, bg = (
        np.asarray(t.detach().cpu(), dtype=np.float64)
        for t in (means, quats, scales, opacities, colors, viewmats, Ks, bg)
    )
    C, N = viewmats.shape[0], means.shape[0]
    if colors.ndim == 2:
        colors = np.broadcast_to(colors, (C, *colors.shape))
    out = np.zeros((C, H, W, colors.shape[-1]))
    alphas = np.zeros((C, H, W))
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    for ci in range(C):
        R, t = viewmats[ci, :3, :3], viewmats[ci, :3, 3]
        fx, fy, cx, cy = Ks[ci, 0, 0], Ks[ci, 1, 1], Ks[ci, 0, 2], Ks[ci, 1, 2]
        splats = []
        for i in range(N):
            w, x, y, z = quats[i] / np.linalg.norm(quats[i])
            rot = np.array([
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ])  # fmt: skip
            cov = rot @ np.diag(scales[i] ** 2) @ rot.T
            p = R @ means[i] + t
            if p[2] < near:
                continue
            limx = (W - cx) / fx + 0.3 * 0.5 * W / fx, cx / fx + 0.3 * 0.5 * W / fx
            limy = (H - cy) / fy + 0.3 * 0.5 * H / fy, cy / fy + 0.3 * 0.5 * H / fy
            tx = p[2] * min(limx[0], max(-limx[1], p[0] / p[2]))
            ty = p[2] * min(limy[0], max(-limy[1], p[1] / p[2]))
            J = np.array([[fx / p[2], 0, -fx * tx / p[2] ** 2], [0, fy / p[2], -fy * ty / p[2] ** 2]])
            cov2 = J @ R @ cov @ R.T @ J.T + eps2d * np.eye(2)
            if np.linalg.det(cov2) <= 0:
                continue
            mu = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
            splats.append((p[2], mu, np.linalg.inv(cov2), opacities[i], colors[ci, i], cov2))
        splats.sort(key=lambda s: s[0])
        T = np.ones((H, W))
        done = np.zeros((H, W), bool)
        acc = np.zeros((H, W, colors.shape[-1]))
        for _depth, mu, conic, op, col, cov2 in splats:
            # gsplat's screen-space bounding box: fragments outside it are never visited.
            extend = min(3.33, math.sqrt(2 * math.log(max(op * 255.0, 1.0))))
            rx, ry = math.ceil(extend * math.sqrt(cov2[0, 0])), math.ceil(extend * math.sqrt(cov2[1, 1]))
            if op < 1 / 255 or mu[0] + rx <= 0 or mu[0] - rx >= W or mu[1] + ry <= 0 or mu[1] - ry >= H:
                continue
            dx, dy = mu[0] - xs, mu[1] - ys
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            a = np.minimum(0.999, op * np.exp(-sigma))
            use = (sigma >= 0) & (a >= 1 / 255) & ~done
            stop = use & (T * (1 - a) <= 1e-4)
            done |= stop
            use &= ~stop
            acc += np.where(use, a * T, 0)[..., None] * col
            T = np.where(use, T * (1 - a), T)
        out[ci] = acc + T[..., None] * bg[ci]
        alphas[ci] = 1 - T
    return out, alphas


def make_scene(N: int, C: int, D: int, W: int, H: int, seed: int = 0, dtype=torch.float32):
    """Overlapping Gaussians around the origin, some behind a camera, off screen, huge and tiny."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g) * 0.08
    means[0] = torch.tensor([0.0, 0.0, 1.5])  # behind camera 0 (which sits at z = 1)
    means[1] = torch.tensor([0.9, 0.0, 0.0])  # off screen
    scales = torch.exp(torch.empty(N, 3).uniform_(-5.5, -3.0, generator=g))
    scales[2] = torch.tensor([0.2, 0.15, 0.1])  # huge
    scales[3] = torch.tensor([1e-4, 1e-4, 1e-4])  # tiny
    quats = torch.randn(N, 4, generator=g)
    opacities = torch.rand(N, generator=g) * 0.95 + 0.02
    colors = torch.rand(N, D, generator=g)
    eyes = [[0.0, 0.0, 1.0], [0.5, 0.2, 0.8], [-0.6, -0.1, 0.7]][:C]
    viewmats = torch.tensor(np.stack([look_at(e, [0, 0, 0]) for e in eyes]))
    f = 1.2 * max(W, H)
    Ks = torch.tensor([[f, 0, W / 2 + 3], [0, f * 1.05, H / 2 - 2], [0, 0, 1]]).expand(C, 3, 3).clone()
    backgrounds = torch.rand(C, D, generator=g)
    cast = lambda t: t.to(dtype)  # noqa: E731
    return tuple(map(cast, (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds)))


@pytest.mark.parametrize(
    ("N", "C", "D", "W", "H"),
    [(60, 1, 3, 32, 32), (80, 3, 3, 40, 27), (50, 2, 35, 33, 48)],
)
def test_matches_brute_force_reference(N, C, D, W, H):
    means, quats, scales, opacities, colors, viewmats, Ks, bg = make_scene(N, C, D, W, H)
    img, alpha, meta = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=bg)
    ref, ref_alpha = reference_render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, bg)
    assert img.shape == (C, H, W, D) and alpha.shape == (C, H, W, 1)
    assert np.abs(img.double().numpy() - ref).max() < 1e-4
    assert np.abs(alpha[..., 0].double().numpy() - ref_alpha).max() < 1e-4
    assert ref_alpha.max() > 0.9 and ref_alpha.min() < 0.1  # the scene has opaque and empty regions
    assert meta["means2d"].shape == (C, N, 2) and meta["radii"].shape == (C, N, 2)
    assert (meta["radii"][0, 0] == 0).all() and (meta["radii"][:, 1] == 0).all()  # behind / off screen culled


def test_per_camera_colors_and_depth_modes():
    N, C, W, H = 40, 2, 24, 20
    means, quats, scales, opacities, _, viewmats, Ks, _ = make_scene(N, C, 3, W, H, seed=3)
    colors = torch.rand(C, N, 3, generator=torch.Generator().manual_seed(1))
    bg = torch.ones(C, 3)
    img, alpha, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=bg)
    ref, ref_alpha = reference_render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, bg)
    assert np.abs(img.double().numpy() - ref).max() < 1e-4

    depths = torch.stack([(means @ viewmats[c, :3, :3].T + viewmats[c, :3, 3])[:, 2] for c in range(C)])
    ref_d, _ = reference_render(means, quats, scales, opacities, depths[..., None], viewmats, Ks, W, H,
                                torch.zeros(C, 1))  # fmt: skip
    d, _, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, render_mode="D")
    assert np.abs(d.double().numpy() - ref_d).max() < 1e-4
    ed, a, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, render_mode="ED")
    ref_ed = ref_d / np.clip(ref_alpha[..., None], 1e-10, None)
    opaque = ref_alpha > 0.5
    assert np.abs(ed.double().numpy() - ref_ed)[opaque].max() < 1e-3
    rgbd, _, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=bg,
                           render_mode="RGB+D")  # fmt: skip
    assert rgbd.shape == (C, H, W, 4)
    assert torch.allclose(rgbd[..., :3], img, atol=1e-6) and torch.allclose(rgbd[..., 3:], d, atol=1e-6)
    rgbed, _, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, W, H, render_mode="RGB+ED")
    assert torch.allclose(rgbed[..., 3:], ed, atol=1e-5)


def test_gradients_match_finite_differences():
    """float64, a tiny scene whose fragments stay clear of the 1/255, 0.999 and 1e-4 thresholds."""
    torch.manual_seed(0)
    N, W, H = 4, 12, 10
    means = (torch.randn(N, 3) * 0.02).double().requires_grad_()
    quats = torch.randn(N, 4).double().requires_grad_()
    scales = torch.full((N, 3), 0.02).double().add(torch.rand(N, 3).double() * 0.01).requires_grad_()
    opacities = torch.tensor([0.5, 0.6, 0.4, 0.7]).double().requires_grad_()
    colors = torch.rand(N, 3).double().requires_grad_()
    bg = torch.rand(1, 3).double().requires_grad_()
    viewmats = torch.tensor(look_at([0.05, 0.02, 0.4], [0, 0, 0]))[None]
    Ks = torch.tensor([[30.0, 0, 6.2], [0, 31.0, 4.9], [0, 0, 1]]).double()[None]
    weight = torch.rand(1, H, W, 3).double()

    def loss(m, q, s, o, c, b):
        img, alpha, _ = rasterize(m, q, s, o, c, viewmats, Ks, W, H, backgrounds=b, eps2d=0.3)
        return (img * weight).sum() + (alpha * weight[..., :1]).sum()

    # Guard: the scene must not sit on a threshold, or finite differences jump.
    assert torch.autograd.gradcheck(loss, (means, quats, scales, opacities, colors, bg), eps=1e-6, atol=1e-5)


def test_edge_cases_render_background():
    W, H = 17, 9  # not multiples of the 16-pixel tile, not square
    viewmats = torch.tensor(look_at([0, 0, 1.0], [0, 0, 0]), dtype=torch.float32)[None]
    Ks = torch.tensor([[20.0, 0, 8.5], [0, 20.0, 4.5], [0, 0, 1]])[None]
    bg = torch.tensor([[0.2, 0.4, 0.6]], requires_grad=True)
    empty = [torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3)]
    img, alpha, meta = rasterize(*empty, viewmats, Ks, W, H, backgrounds=bg)
    assert img.shape == (1, H, W, 3) and torch.allclose(img, bg.detach().expand(1, H, W, 3))
    assert (alpha == 0).all() and meta["means2d"].shape == (1, 0, 2)
    img.sum().backward()
    assert torch.allclose(bg.grad, torch.full((1, 3), float(W * H)))

    behind = torch.tensor([[0.0, 0.0, 2.0], [5.0, 0.0, 0.0]], requires_grad=True)  # all culled
    quats, scales = torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.05)
    img, alpha, meta = rasterize(behind, quats, scales, torch.ones(2), torch.ones(2, 3), viewmats, Ks, W, H)
    assert (img == 0).all() and (alpha == 0).all() and (meta["radii"] == 0).all()
    img.sum().backward()
    assert behind.grad is None or (behind.grad == 0).all()


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"means": torch.zeros(3, 2)}, "means"),
        ({"means": torch.tensor([[float("nan"), 0, 0]] * 3)}, "means"),
        ({"quats": torch.zeros(3, 3)}, "quats"),
        ({"opacities": torch.zeros(3, 1)}, "opacities"),
        ({"colors": torch.zeros(2, 3)}, "colors"),
        ({"viewmats": torch.eye(3)[None]}, "viewmats"),
        ({"Ks": torch.eye(4)[None]}, "Ks"),
        ({"width": 0}, "width"),
        ({"render_mode": "RGBD"}, "render_mode"),
        ({"backgrounds": torch.zeros(1, 4)}, "backgrounds"),
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
    }
    args.update(change)
    with pytest.raises(ValueError, match=name):
        rasterize(**args)


def test_default_strategy_densifies_on_cpu_and_keeps_features_aligned():
    """gsplat's DefaultStrategy, unchanged, on CPU tensors: split, clone and prune, features and Adam in step."""
    from gsplat.strategy import DefaultStrategy

    torch.manual_seed(0)
    N, W, H = 200, 48, 48
    params = torch.nn.ParameterDict(
        {
            "means": torch.randn(N, 3) * 0.05,
            "quats": torch.randn(N, 4),
            "scales": torch.log(torch.full((N, 3), 0.004)),
            "opacities": torch.logit(torch.full((N,), 0.5)),
            "colors": torch.rand(N, 3),
            "features": torch.randn(N, 32),
        }
    )
    params["scales"].data[:20] = math.log(0.05)  # large: these split
    params["opacities"].data[-10:] = torch.logit(torch.tensor(0.001))  # transparent: these are pruned
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=2, grow_grad2d=1e-9, prune_opa=0.005,
                               reset_every=10_000, verbose=False)  # fmt: skip
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=0.2)
    viewmats = torch.tensor(look_at([0, 0, 0.6], [0, 0, 0]), dtype=torch.float32)[None]
    Ks = torch.tensor([[60.0, 0, 24], [0, 60.0, 24], [0, 0, 1]])[None]
    target = torch.rand(1, H, W, 3)
    n_before = N
    for step in range(3):
        feats = params["features"]
        img, _, info = rasterize(params["means"], params["quats"], torch.exp(params["scales"]),
                                 torch.sigmoid(params["opacities"]), params["colors"], viewmats, Ks, W, H,
                                 packed=False)  # fmt: skip
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = (img - target).abs().mean() + 1e-3 * feats.square().mean()
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
    n_after = len(params["means"])
    assert n_after != n_before
    assert all(len(v) == n_after for v in params.values())
    for k, opt in optimizers.items():
        st = opt.state[opt.param_groups[0]["params"][0]]
        assert st["exp_avg"].shape == params[k].shape and st["exp_avg_sq"].shape == params[k].shape
    assert (torch.sigmoid(params["opacities"]) > 0.005).all()  # transparent ones pruned
    assert n_after > n_before - 10  # grew (clone/split) more than it pruned


@pytest.mark.gpu
def test_gsplat_and_torch_backends_agree():
    N, C, D, W, H = 300, 2, 3, 64, 48
    scene = [t.cuda() for t in make_scene(N, C, D, W, H)]
    means, quats, scales, opacities, colors, viewmats, Ks, bg = scene
    outs = {}
    for backend in ("torch", "gsplat"):
        inputs = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors)]
        img, alpha, _ = rasterize(*inputs, viewmats, Ks, W, H, backgrounds=bg, packed=False, backend=backend)
        (img.square().sum() + alpha.sum()).backward()
        outs[backend] = (img.detach(), [t.grad for t in inputs])
    img_t, grads_t = outs["torch"]
    img_g, grads_g = outs["gsplat"]
    assert (img_t - img_g).abs().mean() < 1e-3
    for gt, gg in zip(grads_t, grads_g, strict=True):
        assert (gt - gg).norm() <= 1e-3 * gg.norm() + 1e-6
