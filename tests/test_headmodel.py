"""The synthetic head: protocol, inverse deformation, geometry and appearance sanity."""

import numpy as np
import pytest
import torch

from npga.headmodel import EXPRESSIONS, HeadModel, SyntheticHead, load_head_model, save_description
from npga.headmodel.surface import zero_level_mesh


@pytest.fixture(scope="module")
def head() -> SyntheticHead:
    return SyntheticHead.from_seed(3)


@pytest.fixture(scope="module")
def mesh(head):
    return head.canonical_mesh(64)


def test_implements_the_head_model_protocol(head):
    assert isinstance(head, HeadModel)
    assert head.expression_dim == len(EXPRESSIONS) >= 8


def test_backward_inverts_forward(head, mesh):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([mesh.vertices, mesh.vertices[:500] + 0.01 * torch.randn(500, 3, generator=g)])  # surface + off it
    x = x.double()
    for z in (torch.rand(head.expression_dim, generator=g) * 2 - 1, torch.rand(len(x), head.expression_dim) * 2 - 1):
        x_posed = head.forward(x, z)
        assert (head.backward(x_posed, z) - x).abs().max() < 1e-5


def test_displacements_are_realistic_and_local(head, mesh):
    x = mesh.vertices
    jaw = torch.zeros(head.expression_dim)
    jaw[EXPRESSIONS.index("jaw_open")] = 1.0
    d = head.forward_displacement(x, jaw).norm(dim=-1)
    assert 0.01 < d.max() < 0.02  # jaw opens by about 1.5 cm
    assert d[x[:, 1] > 0.03].max() < 1e-4  # ... and leaves the forehead alone
    assert head.forward_displacement(x, torch.zeros(head.expression_dim)).abs().max() == 0


def test_sdf_and_mesh_are_consistent(head, mesh):
    assert head.sdf(torch.zeros(1, 3)) < 0 and head.sdf(torch.tensor([[0.5, 0.5, 0.5]])) > 0
    assert head.sdf(mesh.vertices.double()).abs().max() < 2e-3
    height = mesh.vertices[:, 1].max() - mesh.vertices[:, 1].min()
    assert 0.2 < height < 0.3  # head and neck
    outward = (mesh.normals * (mesh.vertices - mesh.vertices.mean(0))).sum(-1)
    assert (outward > 0).float().mean() > 0.9


def test_color_has_detail_at_several_scales(head, mesh):
    c = head.color(mesh.vertices)
    assert c.shape == (len(mesh.vertices), 3) and c.min() >= 0 and c.max() <= 1
    assert c.std(0).mean() > 0.05  # hair, skin, lips, eyes differ


def test_identity_round_trips_through_json_and_seeds_differ(tmp_path, head):
    save_description(head, tmp_path / "headmodel.json")
    again = load_head_model(tmp_path)
    x = torch.randn(100, 3) * 0.05
    assert torch.equal(again.sdf(x), head.sdf(x)) and torch.equal(again.color(x), head.color(x))
    other = SyntheticHead.from_seed(4)
    assert not np.allclose(other.identity_vector, head.identity_vector)
    (tmp_path / "bad.json").write_text('{"type": "nphm"}')
    with pytest.raises(ValueError, match="bad.json"):
        load_head_model(tmp_path / "bad.json")


def test_zero_level_mesh_of_a_sphere_lies_on_it_with_faces_wound_outward():
    """Against the analytic sphere: vertices on the radius, every face's winding normal pointing away from the
    centre (the orientation step, checked independently of the normals it is given), no zero crossing refused."""
    centre, radius = torch.tensor([0.1, -0.05, 0.02]), 0.3
    sdf = lambda x: (x - centre.to(x)).norm(dim=-1) - radius
    normals = lambda x: torch.nn.functional.normalize(x - centre.to(x), dim=-1)
    bounds = torch.stack([centre - 0.4, centre + 0.4])
    mesh = zero_level_mesh(sdf, normals, bounds, 40, dtype=torch.float64)
    r = (mesh.vertices.double() - centre.double()).norm(dim=-1)
    assert (r - radius).abs().max() < 0.8 / 39 * 0.1  # well within a tenth of a grid cell
    v0, v1, v2 = (mesh.vertices[mesh.faces[:, i]].double() for i in range(3))
    winding = torch.cross(v1 - v0, v2 - v0, dim=-1)  # (F, 3)
    outward = (v0 + v1 + v2) / 3 - centre.double()
    assert ((winding * outward).sum(-1) > 0).all()
    with pytest.raises(ValueError, match="no zero crossing"):
        zero_level_mesh(lambda x: sdf(x) + 1.0, normals, bounds, 16)
