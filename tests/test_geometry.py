"""The shared geometric conventions against independent references: OpenCV, scipy, hand-built matrices."""

import math

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from npga.geometry import (
    axis_angle_to_matrix,
    centred_intrinsics,
    even_side,
    fov_from_intrinsics,
    intrinsics_from_fov,
    matrix_to_axis_angle,
    matrix_to_quat,
    quat_from_z_to,
    quat_multiply,
    quat_to_matrix,
)


def xyzw(q: torch.Tensor) -> np.ndarray:
    """scipy's quaternion order (x, y, z, w) of ours (w, x, y, z)."""
    return q.numpy()[..., [1, 2, 3, 0]]


# ---- intrinsics -------------------------------------------------------------------------------------------------


def test_intrinsics_of_a_60_degree_vertical_field_of_view():
    # tan 30 deg = 1 / sqrt(3): half the height, 240 px, spans it at f = 240 sqrt(3).
    f = 240.0 * math.sqrt(3.0)
    expected = np.array([[f, 0.0, 320.0], [0.0, f, 240.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(intrinsics_from_fov(math.radians(60.0), 640, 480), expected, rtol=1e-12)
    np.testing.assert_array_equal(centred_intrinsics(f, 640, 480), expected)
    assert fov_from_intrinsics(expected, 480) == pytest.approx(math.pi / 3, rel=1e-12)


def test_field_of_view_edges_project_to_the_image_edges():
    """OpenCV axes: a ray at half the field of view above the axis (y down) lands on the top row's edge."""
    fov, W, H = 0.9, 64, 36
    K = intrinsics_from_fov(fov, W, H)
    top = np.array([[0.0, -math.tan(fov / 2), 1.0]])
    uv, _ = cv2.projectPoints(top, np.zeros(3), np.zeros(3), K, None)
    np.testing.assert_allclose(uv.reshape(2), [W / 2, 0.0], atol=1e-9)
    assert fov_from_intrinsics(K, H) == pytest.approx(fov, rel=1e-12)


# ---- even frame sizes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "even"), [(0, 2), (1, 2), (2, 2), (3, 2), (4, 4), (5, 4), (1101, 1100), (1604, 1604)])
def test_even_side_rounds_down_to_an_even_number_of_at_least_two(n, even):
    assert even_side(n) == even


# ---- axis-angle ---------------------------------------------------------------------------------------------------


def test_axis_angle_matches_opencv_rodrigues():
    rng = np.random.default_rng(0)
    small = [np.zeros(3), np.array([1e-5, 0.0, 0.0]), np.array([0.0, 3e-4, -2e-4])]
    large = [np.array([math.pi, 0.0, 0.0]), np.array([0.0, -2.5, 2.5]), *rng.normal(size=(6, 3))]
    omegas = np.stack(small + large)  # (N, 3)
    expected = np.stack([cv2.Rodrigues(w)[0] for w in omegas])  # (N, 3, 3)
    ours = axis_angle_to_matrix(torch.from_numpy(omegas)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    one = axis_angle_to_matrix(torch.from_numpy(omegas[-1])).numpy()
    np.testing.assert_allclose(one, expected[-1], atol=1e-12)
    batched = axis_angle_to_matrix(torch.from_numpy(omegas).float().reshape(1, -1, 3))
    assert batched.shape == (1, len(omegas), 3, 3)
    np.testing.assert_allclose(batched[0].numpy(), expected, atol=1e-6)


def test_matrix_to_axis_angle_matches_opencv_rodrigues_and_inverts_axis_angle():
    rng = np.random.default_rng(1)
    omegas = np.stack([np.zeros(3), np.array([1e-7, 0.0, -2e-7]), np.array([0.0, 3.0, 0.0]), *rng.normal(size=(8, 3))])
    assert (np.linalg.norm(omegas, axis=1) < math.pi).all()  # angles in [0, pi): one axis-angle vector each
    matrices = np.stack([cv2.Rodrigues(w)[0] for w in omegas])  # (N, 3, 3)
    ours = matrix_to_axis_angle(torch.from_numpy(matrices)).numpy()
    opencv = np.stack([cv2.Rodrigues(m)[0][:, 0] for m in matrices])  # (it rounds angles below 1e-6 rad to 0)
    np.testing.assert_allclose(ours, opencv, atol=1e-6)
    np.testing.assert_allclose(ours, omegas, atol=1e-9)
    np.testing.assert_allclose(
        matrix_to_axis_angle(axis_angle_to_matrix(torch.from_numpy(omegas))).numpy(), omegas, atol=1e-9
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_axis_angle_keeps_the_second_order_term_of_small_angles(dtype):
    """Below |v| = 1e-4, 1 - cos |v| cancels to nothing; the half-angle form 2 sin^2(t / 2) does not. With
    v_z = 0, R01 = v_x v_y (1 - cos t) / t^2 is that term alone."""
    for t in (1e-6, 1e-5, 4e-5):  # |v|^2 = 5 t^2 < 1e-8
        v = np.array([t, 2 * t, 0.0])
        theta = np.linalg.norm(v)
        k = np.cross(np.eye(3), v)  # (3, 3) [v]_x
        expected = np.eye(3) + np.sin(theta) / theta * k + 2 * np.sin(theta / 2) ** 2 / theta**2 * (k @ k)
        ours = axis_angle_to_matrix(torch.tensor(v, dtype=dtype)).double().numpy()
        np.testing.assert_allclose(ours, expected, rtol=1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("scale", [0.0, 1e-6, 1e-4, 1e-2, 1.0])
def test_axis_angle_gradient_matches_finite_differences_at_and_near_zero(scale):
    """Both sides of the Taylor switch (|v|^2 = 1e-8, |v| = 1e-4) and the identity itself."""
    direction = torch.tensor([[0.6, -0.8, 0.0], [0.2, 0.3, -0.93]], dtype=torch.float64)
    v = (scale * direction).requires_grad_()
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (v,), eps=1e-7, atol=1e-7)


def test_axis_angle_gradient_at_the_identity_is_the_cross_product_matrix():
    w = torch.zeros(3, requires_grad=True)
    axis_angle_to_matrix(w)[0, 1].backward()
    np.testing.assert_allclose(w.grad.numpy(), [0, 0, -1], atol=1e-6)  # d R01 / d w_z = -1 at the identity


# ---- quaternions (w, x, y, z) -------------------------------------------------------------------------------------


def random_quats(n: int, seed: int) -> torch.Tensor:
    """(n, 4) quaternions of random norm, with the half turns (w = 0) and the identity among them."""
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    special = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.6, 0.8], [2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    return torch.cat([q, special])


def test_quat_to_matrix_matches_scipy():
    q = random_quats(30, 1)
    np.testing.assert_allclose(quat_to_matrix(q).numpy(), Rotation.from_quat(xyzw(q)).as_matrix(), atol=1e-12)
    assert quat_to_matrix(q.reshape(3, 11, 4)).shape == (3, 11, 3, 3)


def test_matrix_to_quat_matches_scipy_with_w_not_negative():
    R = Rotation.from_quat(xyzw(random_quats(30, 2))).as_matrix()  # (N, 3, 3)
    ours = matrix_to_quat(torch.from_numpy(R))  # (N, 4)
    theirs = Rotation.from_matrix(R).as_quat(canonical=True)  # (N, 4) x, y, z, w; w >= 0
    assert (ours[:, 0] >= 0).all()
    same_sign = np.where(ours[:, :1].numpy() > 1e-9, 1.0, np.sign((xyzw(ours) * theirs).sum(-1, keepdims=True)))
    np.testing.assert_allclose(xyzw(ours) * same_sign, theirs, atol=1e-12)  # half turns: q and -q both w = 0
    assert matrix_to_quat(torch.from_numpy(R).reshape(3, 11, 3, 3)).shape == (3, 11, 4)


def test_quat_multiply_composes_like_scipy():
    a, b = random_quats(30, 3), random_quats(30, 4).flip(0)
    ours = quat_multiply(a, b)
    theirs = Rotation.from_quat(xyzw(a)) * Rotation.from_quat(xyzw(b))  # b first, then a
    np.testing.assert_allclose(quat_to_matrix(ours).numpy(), theirs.as_matrix(), atol=1e-12)
    unit = lambda q: torch.nn.functional.normalize(q, dim=-1)
    np.testing.assert_allclose(xyzw(quat_multiply(unit(a), unit(b))), theirs.as_quat(), atol=1e-12)


def test_quat_from_z_to_turns_the_z_axis_onto_each_normal():
    n = torch.randn(30, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    n = torch.cat([torch.nn.functional.normalize(n, dim=-1), torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])])
    q = quat_from_z_to(n)
    np.testing.assert_allclose(q.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(Rotation.from_quat(xyzw(q)).apply([0.0, 0.0, 1.0]), n.numpy(), atol=1e-12)
