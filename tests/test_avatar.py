"""Canonical Gaussians, the pure `deform`, the head pose, the kNN graph and the Laplacian terms."""

from __future__ import annotations

import math

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
)
from npga.avatar.rotation import matrix_to_quat, quat_from_z_to, quat_multiply, quat_to_matrix
from npga.deform import FieldConfig, ForwardField
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
        "means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "colors": (n, 3), "features": (n, 8),
    }  # fmt: skip
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


def test_quaternion_helpers():
    gen = torch.Generator().manual_seed(1)
    Rs = torch.stack([random_rotation(gen) for _ in range(20)] + [torch.diag(torch.tensor([1.0, -1, -1]).double())])
    assert torch.allclose(quat_to_matrix(matrix_to_quat(Rs)), Rs, atol=1e-12)
    a, b = torch.randn(2, 10, 4, generator=gen, dtype=torch.float64)
    assert torch.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)
    n = torch.nn.functional.normalize(torch.randn(30, 3, generator=gen, dtype=torch.float64), dim=-1)
    n = torch.cat([n, torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)])
    assert torch.allclose(quat_to_matrix(quat_from_z_to(n))[:, :, 2], n, atol=1e-12)


def test_knn_graph_matches_brute_force():
    gen = torch.Generator().manual_seed(2)
    pts = torch.rand(200, 3, generator=gen, dtype=torch.float64)
    nbrs = knn_graph(pts, k=8)
    d = torch.cdist(pts, pts)
    d.fill_diagonal_(math.inf)
    expected = d.topk(8, largest=False).indices
    assert torch.equal(nbrs, expected)
    # exact duplicates (densification clones) never list themselves
    dup = torch.cat([pts[:10], pts[:10]])
    nbrs = knn_graph(dup, k=3)
    assert not (nbrs == torch.arange(20)[:, None]).any()
    assert knn_graph(pts[:4], k=8).shape == (4, 3)


def test_laplacian_of_constant_is_zero_and_of_random_is_positive():
    pts = torch.rand(100, 3, generator=torch.Generator().manual_seed(3))
    nbrs = knn_graph(pts, k=8)
    assert laplacian(torch.full((100, 5), 0.7), nbrs) == 0
    assert laplacian(torch.randn(100, 5), nbrs) > 0


def test_cnn_starts_as_identity_on_rgb():
    cnn = ScreenCNN(CNNConfig(enabled=True, latent_channels=2, hidden=4))
    image = torch.rand(2, 12, 10, 5)
    assert torch.equal(cnn(image), image[..., :3])
