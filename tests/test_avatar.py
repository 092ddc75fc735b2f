"""Canonical Gaussians, the pure `deform`, the head pose, the kNN graph, the Laplacian terms and the code statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from npga.avatar import (
    AvatarNets,
    CNNConfig,
    DetailConfig,
    DetailMLP,
    InitConfig,
    ScreenCNN,
    apply_head_pose,
    deform,
    init_params,
    knn_graph,
    laplacian,
    render_gaussians,
)
from npga.avatar.model import code_stats
from npga.deform import FieldConfig, ForwardField
from npga.geometry import quat_to_matrix
from npga.headmodel import SyntheticHead


@pytest.fixture(scope="module")
def head() -> SyntheticHead:
    return SyntheticHead.from_seed(0)


@pytest.fixture(scope="module")
def params(head):
    return init_params(head, InitConfig(mesh_resolution=32, latent_dim=8))


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def trained_like_nets(head: SyntheticHead, feature_dim: int) -> AvatarNets:
    """Networks with random (non-zero) last layers, as after some training."""
    torch.manual_seed(0)
    coarse = ForwardField(FieldConfig(width=16, depth=1), head.expression_dim, head.bounds)
    detail = DetailMLP(DetailConfig(width=16, depth=1), feature_dim, head.expression_dim, head.bounds)
    for net in (coarse.net, detail.net):
        torch.nn.init.normal_(net[-1].weight, std=0.1)
    return AvatarNets(coarse, detail, None)


def test_init_on_the_canonical_surface(head, params):
    n = len(params["means"])
    assert {k: tuple(v.shape) for k, v in params.items()} == {
        "means": (n, 3),
        "quats": (n, 4),
        "scales": (n, 3),
        "opacities": (n,),
        "colors": (n, 3),
        "features": (n, 8),
    }
    assert head.sdf(params["means"].detach()).abs().max() < 0.01
    # flat Gaussians: the short (z) axis lies along the outward normal
    z_axis = quat_to_matrix(params["quats"].detach())[:, :, 2]
    normals = head.normals(params["means"].detach())
    assert (z_axis * normals).sum(-1).median() > 0.99
    s = params["scales"].detach().exp()
    assert (s[:, 2] < s[:, 0]).all()
    assert "features" not in init_params(head, InitConfig(mesh_resolution=24, latent_dim=0))


def test_deform_is_pure(head, params):
    nets = trained_like_nets(head, 8)
    pose = torch.eye(4)
    pose[:3, 3] = torch.tensor([0.01, 0.0, -0.02])
    z1, z2 = torch.rand(head.expression_dim), torch.rand(head.expression_dim)
    before = {k: v.detach().clone() for k, v in params.items()}
    a = deform(params, nets, z1, pose)
    deform(params, nets, z2, torch.eye(4))  # another frame in between must not matter
    b = deform(params, nets, z1.clone(), pose.clone())
    for field in ("means", "quats", "scales", "opacities", "colors", "residuals"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert all(torch.equal(before[k], params[k]) for k in before)
    assert not torch.equal(a.means, deform(params, nets, z2, pose).means)  # the code does matter


@pytest.mark.parametrize("with_detail", [True, False])
def test_every_gaussian_parameter_gets_gradients_through_a_frozen_coarse_field(head, params, with_detail):
    nets = trained_like_nets(head, 8)
    nets.coarse.requires_grad_(False)
    if not with_detail:
        nets.detail = None
    leaves = torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach().clone()) for k, v in params.items()})
    g = deform(leaves, nets, torch.rand(head.expression_dim), torch.eye(4))
    (g.means.sum() + g.quats.sum() + g.scales.sum() + g.opacities.sum() + g.colors.sum()).backward()
    for k, v in leaves.items():
        if k == "features" and not with_detail:
            continue  # only the Laplacian (and the CNN) see features without the detail network
        assert v.grad is not None and v.grad.abs().sum() > 0, k
    # x + G(x): the frozen field adds no Jacobian term, so d(sum of means)/d(canonical means) is exactly 1
    if not with_detail:
        assert torch.equal(leaves["means"].grad, torch.ones_like(leaves["means"]))


def test_zero_initialised_detail_starts_from_the_coarse_field(head, params):
    detail = DetailMLP(DetailConfig(), 8, head.expression_dim, head.bounds)
    z, pose = torch.rand(head.expression_dim), torch.eye(4)
    with_detail = deform(params, AvatarNets(None, detail, None), z, pose)
    without = deform(params, AvatarNets(None, None, None), z, pose)
    assert torch.equal(with_detail.residuals, torch.zeros_like(with_detail.residuals))
    for field in ("means", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(with_detail, field), getattr(without, field)), field


def test_head_pose_matches_a_hand_built_similarity():
    gen = torch.Generator().manual_seed(0)
    R, s, t = random_rotation(gen), 1.7, torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3], pose[:3, 3] = s * R, t
    means = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    quats = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    scales = torch.rand(50, 3, generator=gen, dtype=torch.float64) + 0.1
    m, q, sc = apply_head_pose(means, quats, scales, pose)
    assert torch.allclose(m, (s * R @ means.T).T + t)
    # covariances transform as A Sigma A^T with A = s R
    rot = quat_to_matrix(quats)
    cov = rot @ torch.diag_embed(scales**2) @ rot.transpose(1, 2)
    rot_w = quat_to_matrix(q)
    cov_w = rot_w @ torch.diag_embed(sc**2) @ rot_w.transpose(1, 2)
    A = s * R
    assert torch.allclose(cov_w, A @ cov @ A.T, atol=1e-10)


@pytest.mark.parametrize("method", ["torch", "kdtree"])
def test_knn_graph_matches_brute_force(method):
    gen = torch.Generator().manual_seed(2)
    pts = torch.rand(200, 3, generator=gen, dtype=torch.float64)
    nbrs = knn_graph(pts, k=8, method=method)
    d = torch.cdist(pts, pts)
    d.fill_diagonal_(math.inf)
    expected = d.topk(8, largest=False).indices
    assert torch.equal(nbrs, expected)
    # exact duplicates (densification clones) never list themselves
    dup = torch.cat([pts[:10], pts[:10]])
    nbrs = knn_graph(dup, k=3, method=method)
    assert not (nbrs == torch.arange(20)[:, None]).any()
    assert knn_graph(pts[:4], k=8, method=method).shape == (4, 3)


def test_laplacian_of_constant_is_zero_and_of_random_is_positive():
    pts = torch.rand(100, 3, generator=torch.Generator().manual_seed(3))
    nbrs = knn_graph(pts, k=8)
    assert laplacian(torch.full((100, 5), 0.7), nbrs) == 0
    assert laplacian(torch.randn(100, 5), nbrs) > 0


def test_cnn_starts_as_identity_on_rgb():
    cnn = ScreenCNN(CNNConfig(enabled=True, latent_channels=2, hidden=4))
    image = torch.rand(2, 12, 10, 5)
    assert torch.equal(cnn(image), image[..., :3])


def test_code_statistics_match_an_eigendecomposition():
    codes = torch.randn(200, 5, generator=torch.Generator().manual_seed(1)) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1])
    stats = code_stats(codes)
    x = codes.double().numpy()
    cov = np.cov(x, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    assert np.allclose(stats.mean.numpy(), x.mean(0), atol=1e-6)
    assert np.allclose(stats.std.numpy(), np.sqrt(evals[::-1]), rtol=1e-4)
    cos = np.abs((stats.directions.double().numpy() * evecs[:, ::-1].T).sum(1))
    assert np.allclose(cos, 1.0, atol=1e-4)  # the same axes, largest variance first
    proj = (x - x.mean(0)) @ stats.directions.double().numpy().T
    assert np.allclose(stats.low.numpy(), proj.min(0), atol=1e-5) and np.allclose(
        stats.high.numpy(), proj.max(0), atol=1e-5
    )
    assert torch.equal(stats.min, codes.min(0).values) and torch.equal(stats.max, codes.max(0).values)


def test_code_stats_whiten_to_unit_spread_and_still_directions_stay_still():
    """Whitened training codes have zero mean and unit sample spread along each direction the codes move along;
    rounding noise along directions they never moved along is not blown up (the eigendecomposition of the same
    statistics is checked above)."""
    gen = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))[0]
    spread = torch.tensor([3.0, 1.5, 0.5, 0.0, 0.0], dtype=torch.float64)  # two directions never move
    codes = 0.7 + (torch.randn(40, 5, generator=gen, dtype=torch.float64) * spread) @ basis.T  # (T, D)
    stats = code_stats(codes)
    assert stats.n_moving == 3
    a = stats.whiten(codes.float())  # (T, K)
    torch.testing.assert_close(a[:, :3].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(a[:, :3].std(0), torch.ones(3), atol=1e-4, rtol=0)
    assert a[:, 3:].abs().max() < 1.0  # float32 rounding along a still direction is not blown up to many units
    torch.testing.assert_close(stats.unwhiten(a[7]), codes[7].float(), atol=1e-4, rtol=0)
    step = stats.offset(torch.tensor([0.0, 2.0]))  # two standard deviations along the second direction only
    torch.testing.assert_close(step, 2.0 * stats.std[1] * stats.directions[1], atol=1e-6, rtol=0)


# ---- deform against an independent computation; each learned part changes the render -------------------


def rotation_of(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) of wxyz quaternions by Rodrigues' formula (angle 2 atan2(|v|, w) about v)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, v = q[:, 0], q[:, 1:]
    s = v.norm(dim=-1).clamp_min(1e-30)
    angle, axis = 2 * torch.atan2(s, w), v / s[:, None]
    K = torch.zeros(len(q), 3, 3, dtype=q.dtype)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    K = K - K.transpose(1, 2)
    eye = torch.eye(3, dtype=q.dtype).expand_as(K)
    return eye + angle.sin()[:, None, None] * K + (1 - angle.cos())[:, None, None] * (K @ K)


def random_params(n: int, feature_dim: int, gen: torch.Generator) -> torch.nn.ParameterDict:
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)
    return torch.nn.ParameterDict(
        {
            "means": 0.08 * r(n, 3),
            "quats": r(n, 4),
            "scales": -5 + 0.3 * r(n, 3),
            "opacities": r(n),
            "colors": r(n, 3),
            "features": r(n, feature_dim),
        }
    )


def test_deform_matches_an_independent_computation_with_non_zero_residuals(head):
    """Every output of `deform` (rotations up to sign) against the composition written out here, with a detail
    network whose last layer is set by hand: each residual non-zero, the rotation residual a known turn."""
    gen = torch.Generator().manual_seed(5)
    nets = trained_like_nets(head, 8).double()
    params = random_params(40, 8, gen)
    last = nets.detail.net[-1]
    with torch.no_grad():
        last.weight.normal_(0.0, 0.05, generator=gen)
        # position, rotation (wxyz residual: a turn of ~0.8 rad about x), scale, colour, opacity
        last.bias.copy_(torch.tensor([2.0, -1.0, 0.5, 0.0, 0.4, 0.0, 0.0, 0.3, -0.2, 0.1, 0.5, -0.5, 0.25, 0.7]))
    z = torch.rand(head.expression_dim, generator=gen, dtype=torch.float64)
    R, s, t = random_rotation(gen), 1.3, torch.tensor([0.02, -0.05, 0.4], dtype=torch.float64)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3], pose[:3, 3] = s * R, t

    with torch.no_grad():
        g = deform(params, nets, z, pose)
        x_c, f = params["means"], params["features"]
        enc_in = torch.cat([nets.detail.encoding(x_c), f, z.expand(len(x_c), -1)], -1)
        res = nets.detail.net(enc_in)  # (N, 14): position 0:3, rotation 3:7, scale 7:10, colour 10:13, opacity 13
        assert (res[:, 3:7].abs().max(1).values > 0.1).all()  # a real rotation residual everywhere
        x_head = x_c + nets.coarse(x_c, z) + nets.detail.cfg.position_scale * res[:, 0:3]
        dq = res[:, 3:7] + torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
        rot_world = R @ rotation_of(dq) @ rotation_of(params["quats"])  # residual turn after the canonical one
    assert torch.allclose(g.means, x_head @ (s * R).T + t, atol=1e-12)
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(40, dtype=torch.float64))
    assert torch.allclose(rotation_of(g.quats), rot_world, atol=1e-10)  # matrices: quaternions up to sign
    assert torch.allclose(g.scales, s * (params["scales"] + res[:, 7:10]).exp(), rtol=1e-12)
    assert torch.allclose(g.colors, torch.sigmoid(params["colors"] + res[:, 10:13]), atol=1e-14)
    assert torch.allclose(g.opacities, torch.sigmoid(params["opacities"] + res[:, 13]), atol=1e-14)
    assert torch.equal(g.features, params["features"]) and torch.allclose(g.residuals, res, rtol=0, atol=1e-13)


def _one_gaussian_scene(detail_bias: torch.Tensor | None):
    """One Gaussian 1 unit in front of a 32 x 32 pinhole camera (f = 200 px) at the origin (OpenCV axes)."""
    bounds = torch.tensor([[-1.0] * 3, [1.0] * 3])
    params = torch.nn.ParameterDict(
        {
            "means": torch.tensor([[0.0, 0.0, 1.0]]),
            "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
            "scales": torch.full((1, 3), math.log(0.01)),
            "opacities": torch.tensor([2.0]),
            "colors": torch.zeros(1, 3),
            "features": torch.zeros(1, 4),
        }
    )
    detail = None
    if detail_bias is not None:
        detail = DetailMLP(DetailConfig(width=8, depth=1, position_scale=0.01), 4, 3, bounds)
        with torch.no_grad():
            detail.net[-1].bias.copy_(detail_bias)
    K = torch.tensor([[[200.0, 0.0, 16.0], [0.0, 200.0, 16.0], [0.0, 0.0, 1.0]]])
    return params, AvatarNets(None, detail, None), torch.eye(4)[None], K


def _alpha_centroid(alpha: torch.Tensor) -> torch.Tensor:
    """(x, y) pixel centroid of an alpha image (1, H, W, 1); pixel centres at integer + 0.5."""
    a = alpha[0, :, :, 0]
    ys, xs = torch.meshgrid(torch.arange(a.shape[0]) + 0.5, torch.arange(a.shape[1]) + 0.5, indexing="ij")
    return torch.stack([(a * xs).sum(), (a * ys).sum()]) / a.sum()


def test_detail_network_moves_the_rendered_gaussian_by_its_residual():
    """A position residual (1, -0.5, 0) x position_scale 0.01 moves the splat by f dx / z = (2, -1) pixels."""
    bias = torch.zeros(14)
    bias[0:3] = torch.tensor([1.0, -0.5, 0.0])
    z = torch.zeros(3)
    centroids = []
    for detail_bias in (None, bias):
        params, nets, viewmats, Ks = _one_gaussian_scene(detail_bias)
        with torch.no_grad():
            _, alpha, _ = render_gaussians(deform(params, nets, z, torch.eye(4)), viewmats, Ks, 32, 32, torch.ones(3))
        centroids.append(_alpha_centroid(alpha))
    assert torch.allclose(centroids[0], torch.tensor([16.0, 16.0]), atol=0.02)
    assert torch.allclose(centroids[1] - centroids[0], torch.tensor([2.0, -1.0]), atol=0.05)


def test_a_feature_change_changes_the_render_through_the_detail_network():
    """With the network fixed, a Gaussian's feature changes its colour residual, and so its rendered colour."""
    gen = torch.Generator().manual_seed(7)
    params, nets, viewmats, Ks = _one_gaussian_scene(torch.zeros(14))
    with torch.no_grad():
        nets.detail.net[-1].weight[10:13].normal_(0.0, 2.0, generator=gen)  # colour residual rows only
    z = torch.zeros(3)
    renders, colors = [], []
    for feature in (torch.zeros(1, 4), torch.tensor([[3.0, -3.0, 1.5, 6.0]])):
        params["features"] = torch.nn.Parameter(feature)
        with torch.no_grad():
            g = deform(params, nets, z, torch.eye(4))
            rgb, alpha, _ = render_gaussians(g, viewmats, Ks, 32, 32, torch.zeros(3))
            res = nets.detail(params["means"], feature, z)
        assert torch.allclose(g.colors, torch.sigmoid(res[:, 10:13]))
        renders.append(rgb)
        colors.append(g.colors[0])
    # on a black background every pixel is alpha x colour: the render changes by alpha x the colour change
    assert (colors[1] - colors[0]).abs().max() > 0.05
    assert torch.allclose(renders[1] - renders[0], alpha * (colors[1] - colors[0]), atol=1e-6)


def test_the_cnn_sees_the_rendered_latent_features():
    """The CNN's input is the rendered RGB next to the first latent channels of the features (rendered on 0);
    a feature change with everything else fixed changes its output, and the features get its gradient."""
    from npga.render import rasterize

    gen = torch.Generator().manual_seed(8)
    n = 30
    params = random_params(n, 5, gen)
    params["means"] = torch.nn.Parameter(params["means"] * 0.5 + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach().float()) for k, v in params.items()})
    params["scales"] = torch.nn.Parameter(params["scales"].detach() + 2.0)
    cnn = ScreenCNN(CNNConfig(enabled=True, latent_channels=2, hidden=4))
    torch.nn.init.normal_(cnn.net[-1].weight, std=0.3, generator=gen)
    seen = []
    cnn.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    viewmats, Ks = torch.eye(4)[None], torch.tensor([[[40.0, 0.0, 12.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]]])
    bg = torch.tensor([1.0, 0.5, 0.25])
    g = deform(params, AvatarNets(None, None, None), torch.zeros(3), torch.eye(4))
    out, _, _ = render_gaussians(g, viewmats, Ks, 24, 24, bg, cnn)
    with torch.no_grad():
        rgb_ref, _, _ = rasterize(
            g.means, g.quats, g.scales, g.opacities, g.colors, viewmats, Ks, 24, 24, backgrounds=bg[None]
        )
        lat_ref, _, _ = rasterize(
            g.means,
            g.quats,
            g.scales,
            g.opacities,
            params["features"][:, :2],
            viewmats,
            Ks,
            24,
            24,
            backgrounds=torch.zeros(1, 2),
        )
    assert seen[0].shape == (1, 24, 24, 5)
    assert torch.allclose(seen[0][..., :3], rgb_ref, atol=1e-6) and torch.allclose(seen[0][..., 3:], lat_ref, atol=1e-6)
    assert lat_ref.abs().max() > 0.1
    out.sum().backward()
    assert params["features"].grad[:, :2].abs().sum() > 0 and params["features"].grad[:, 2:].abs().sum() == 0
    with torch.no_grad():
        params["features"][:, :2] += 1.0
        changed, _, _ = render_gaussians(
            deform(params, AvatarNets(None, None, None), torch.zeros(3), torch.eye(4)), viewmats, Ks, 24, 24, bg, cnn
        )
    assert (changed - out).abs().max() > 1e-3


def test_knn_graph_on_device_matches_a_kd_tree_oracle():
    """Many chunks, a dense shell with sparse outliers (isolated points get their own box) and clones: the
    torch graph (the method for GPU tensors) lists the same neighbours as scipy's KD-tree in float64, at the
    same distances."""
    from scipy.spatial import cKDTree

    gen = torch.Generator().manual_seed(4)
    shell = torch.nn.functional.normalize(torch.randn(3000, 3, generator=gen), dim=-1) * torch.tensor([0.08, 0.1, 0.09])
    outliers = torch.rand(40, 3, generator=gen) * 0.6 - 0.3
    pts = torch.cat([shell, outliers, shell[:50]])  # (3090, 3) float32; the last 50 clone the first 50
    nbrs = knn_graph(pts, k=8, method="torch")
    p64 = pts.double().numpy()
    dist, idx = cKDTree(p64).query(p64, k=9)
    mine = (pts[nbrs].double() - pts[:, None].double()).norm(dim=-1)  # (N, 8), nearest first
    assert nbrs.shape == (3090, 8) and not (nbrs == torch.arange(3090)[:, None]).any()
    assert torch.allclose(mine, torch.from_numpy(dist[:, 1:]), rtol=0, atol=1e-12)
    clones = torch.arange(3090) % 3040 < 50
    twins = torch.where(torch.arange(3090) < 3000, torch.arange(3090) + 3040, torch.arange(3090) - 3040)
    assert (nbrs[clones, 0] == twins[clones]).all()  # a clone's nearest other point is its twin
    # Elsewhere the same neighbours, a clone and its twin (a tie) counting as one point.
    canon = lambda i: torch.where(i >= 3040, i - 3040, i).sort(-1).values
    plain = ~clones
    assert torch.equal(canon(nbrs[plain]), canon(torch.from_numpy(idx[:, 1:])[plain]))


def test_blendshapes_add_a_per_gaussian_term_linear_in_the_code(head):
    """With the MLP's last layer at zero the residual is the blendshape term alone: for Gaussian i,
    sum_k B[:, k] (P f_i)_k (E z)_k, zero for the neutral code, additive in the code."""
    torch.manual_seed(3)
    detail = DetailMLP(DetailConfig(width=16, depth=1, blendshapes=3), 4, head.expression_dim, head.bounds)
    x = torch.rand(6, 3) * 0.1
    f = torch.randn(6, 4)
    z1, z2 = torch.randn(head.expression_dim), torch.randn(head.expression_dim)
    with torch.no_grad():
        out = detail(x, f, z1)
        E, P, B = detail.code_embed.weight, detail.feature_proj.weight, detail.blend_out.weight  # (3, D) (3, 4) (14, 3)
        by_hand = torch.stack([sum(B[:, k] * (P[k] @ f[i]) * (E[k] @ z1) for k in range(3)) for i in range(6)])
        assert torch.allclose(out, by_hand, atol=1e-6)
        assert torch.equal(detail(x, f, torch.zeros(head.expression_dim)), torch.zeros(6, 14))
        assert torch.allclose(detail(x, f, z1 + z2), out + detail(x, f, z2), atol=1e-6)


def test_blendshapes_let_each_gaussian_s_feature_learn_from_the_first_step(head):
    """Zero features and a zero last layer: without blendshapes no gradient reaches the features; with them each
    feature gets one, scaled by the code (none for the neutral code)."""
    x = torch.rand(5, 3) * 0.1
    z = torch.randn(head.expression_dim)
    grads = {}
    for on in (False, True):
        torch.manual_seed(0)
        detail = DetailMLP(
            DetailConfig(width=16, depth=1, blendshapes=2 if on else 0), 4, head.expression_dim, head.bounds
        )
        for code in (z, 2 * z, torch.zeros_like(z)):
            f = torch.zeros(5, 4, requires_grad=True)
            detail(x, f, code)[:, 10:13].sum().backward()
            grads[on, float(code.abs().sum())] = f.grad
    s = float(z.abs().sum())
    assert torch.equal(grads[False, s], torch.zeros(5, 4))
    assert grads[True, s].abs().min() > 0
    assert torch.allclose(grads[True, 2 * s], 2 * grads[True, s])
    assert torch.equal(grads[True, 0.0], torch.zeros(5, 4))


def test_blendshapes_hold_their_response_beyond_the_training_codes(head):
    """Outside the training codes' range the blendshape term is that of the nearest code inside it; the MLP's
    part still sees the code itself."""
    torch.manual_seed(4)
    nets = {
        on: DetailMLP(DetailConfig(width=16, depth=1, blendshapes=3 if on else 0), 4, head.expression_dim, head.bounds)
        for on in (False, True)
    }
    torch.nn.init.normal_(nets[False].net[-1].weight, std=0.1)
    nets[True].net.load_state_dict(nets[False].net.state_dict())  # the same MLP with and without blendshapes
    codes = torch.rand(7, head.expression_dim) - 0.5  # training codes within (-0.5, 0.5)
    nets[True].set_code_range(codes)
    x, f = torch.rand(6, 3) * 0.1, torch.randn(6, 4)
    far = torch.linspace(-2.0, 2.0, head.expression_dim)
    nearest = torch.minimum(torch.maximum(far, codes.min(0).values), codes.max(0).values)
    blend = lambda z: nets[True].blend_out(nets[True].feature_proj(f) * nets[True].code_embed(z))
    with torch.no_grad():
        assert torch.allclose(nets[True](x, f, far), nets[False](x, f, far) + blend(nearest), atol=1e-6)
        assert not torch.allclose(blend(far), blend(nearest), atol=1e-3)
        inside = codes[3]
        assert torch.allclose(nets[True](x, f, inside), nets[False](x, f, inside) + blend(inside), atol=1e-6)
