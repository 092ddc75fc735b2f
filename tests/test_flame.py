"""FLAME head model: the model file's checks, skinning against an independent LBS, the inverse, the head pose."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from npga.deform.sampling import sample_surface
from npga.headmodel import FlameHead, HeadModel, load_flame_model, load_head_model
from npga.headmodel.flame import closest_points_on_triangles
from tests.helpers.small_flame import flame_arrays, reference_lbs, write_flame_model

E = 4  # expression components of the test model


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return flame_arrays(seed=3, n_expression=E)


@pytest.fixture(scope="module")
def head(arrays, tmp_path_factory) -> FlameHead:
    path = tmp_path_factory.mktemp("flame") / "flame.npz"
    np.savez(path, **arrays)
    rng = np.random.default_rng(1)
    return FlameHead(load_flame_model(path), rng.normal(size=20), rng.normal(scale=1e-3, size=(162 + 5, 3)), path)


def random_codes(n: int, seed: int = 0) -> torch.Tensor:
    """(n, E + 9): expression ~ N(0, 1), jaw up to ~0.3 rad, eyes up to ~0.15 rad."""
    rng = np.random.default_rng(seed)
    expr = rng.normal(size=(n, E))
    jaw = np.stack([rng.uniform(0, 0.3, n), rng.normal(scale=0.03, size=n), rng.normal(scale=0.03, size=n)], 1)
    eyes = rng.normal(scale=0.08, size=(n, 6))
    return torch.from_numpy(np.concatenate([expr, jaw, eyes], 1))


def test_model_file_loads_and_bad_files_name_the_array(arrays, tmp_path):
    model = load_flame_model(write_flame_model(tmp_path / "ok.npz", seed=3, n_expression=E))
    assert model.n_expression == E and model.faces.shape == arrays["f"].shape
    assert model.parents.tolist() == [-1, 0, 1, 1, 1]
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != "posedirs"})
    with pytest.raises(ValueError, match=r"missing.npz.*posedirs"):
        load_flame_model(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", **{**arrays, "weights": arrays["weights"][:, :4]})
    with pytest.raises(ValueError, match=r"bad.npz: 'weights' has shape \(162, 4\), expected \(162, 5\)"):
        load_flame_model(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", **{**arrays, "J_regressor": arrays["J_regressor"] * np.nan})
    with pytest.raises(ValueError, match=r"nan.npz: 'J_regressor' is not finite"):
        load_flame_model(tmp_path / "nan.npz")
    with pytest.raises(ValueError, match=r"\.pkl.*convert it once to \.npz"):
        load_flame_model(tmp_path / "generic_model.pkl")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_flame_model(tmp_path / "absent.npz")


def test_posed_vertices_match_an_independent_lbs(head, arrays):
    codes = random_codes(3, seed=5)
    for z in codes:
        pose = np.zeros((5, 3))
        pose[2], pose[3], pose[4] = z[E : E + 3], z[E + 3 : E + 6], z[E + 6 :]
        want = reference_lbs(
            {**arrays, "v_template": arrays["v_template"] + head.static_offset}, head.shape, z[:E].numpy(), pose
        )
        np.testing.assert_allclose(head.posed_vertices(z).numpy(), want, atol=1e-12)
        # off the vertices: a point inside a triangle moves with the triangle (barycentric)
        mesh = head.canonical_mesh()
        f = mesh.faces[7]
        x = mesh.vertices[f].double().mean(0, keepdim=True)
        np.testing.assert_allclose(head.forward(x, z)[0].numpy(), want[f.numpy()].mean(0), atol=1e-7)
    rest = head.posed_vertices(torch.zeros(E + 9, dtype=torch.float64))
    np.testing.assert_allclose(rest.numpy(), head.canonical_mesh().vertices.numpy(), atol=1e-6)


def test_backward_inverts_forward_on_the_canonical_surface(head):
    mesh = head.canonical_mesh()
    x, _ = sample_surface(mesh, 2000, torch.Generator().manual_seed(0))
    x = x.double()
    z = random_codes(len(x), seed=2)
    x_posed = head.forward(x, z)
    assert (x_posed - x).norm(dim=-1).max() > 5e-3  # the codes do move the surface
    err = (head.backward(x_posed, z) - x).norm(dim=-1)
    assert err.max() < 1e-5, f"max {err.max():.2e}"


def test_closest_points_match_brute_force_sampling():
    rng = np.random.default_rng(0)
    tri = torch.from_numpy(rng.normal(size=(60, 3, 3)))
    p = torch.from_numpy(rng.normal(size=(60, 3)))
    q, bary = closest_points_on_triangles(p, tri)
    np.testing.assert_allclose((bary[:, :, None] * tri).sum(1).numpy(), q.numpy(), atol=1e-12)
    assert (bary >= -1e-12).all()
    u, w = np.meshgrid(np.linspace(0, 1, 301), np.linspace(0, 1, 301))
    keep = u + w <= 1
    b = torch.from_numpy(np.stack([1 - u[keep] - w[keep], u[keep], w[keep]], -1))  # (S, 3) a dense grid
    samples = torch.einsum("sk,mkc->msc", b, tri)  # (M, S, 3)
    brute = (samples - p[:, None]).norm(dim=-1).min(1).values
    assert ((p - q).norm(dim=-1) <= brute + 1e-12).all()
    np.testing.assert_allclose((p - q).norm(dim=-1).numpy(), brute.numpy(), atol=5e-3)


def test_sdf_is_the_signed_distance_along_the_normals(head):
    mesh = head.canonical_mesh()
    x, n = sample_surface(mesh, 300, torch.Generator().manual_seed(1))
    for d in (0.002, -0.002):
        np.testing.assert_allclose(head.sdf(x + d * n).numpy(), d, atol=3e-4)
    assert head.sdf(torch.zeros(1, 3)) < 0  # the head's centre is inside


def test_description_round_trips_through_the_registry(head, tmp_path):
    (tmp_path / "headmodel.json").write_text(json.dumps(head.description()))
    again = load_head_model(tmp_path)
    assert isinstance(again, FlameHead) and isinstance(again, HeadModel)
    z = random_codes(1, seed=9)[0]
    np.testing.assert_allclose(again.posed_vertices(z).numpy(), head.posed_vertices(z).numpy(), atol=1e-6)
    assert again.expression_dim == E + 9
    c = again.color(torch.zeros(5, 3))
    assert c.shape == (5, 3) and ((c > 0) & (c < 1)).all()
