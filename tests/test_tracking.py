"""The tracking file's helpers (npga/data/tracking.py) against constructions with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from npga.data.tracking import Tracking, TrackingExtras, pose_errors


def _tracking(n: int, rng: np.random.Generator) -> Tracking:
    return Tracking(
        expression=rng.normal(size=(n, 3)),
        identity=np.zeros(0),
        rotation=Rotation.random(n, random_state=1).as_matrix(),
        translation=rng.normal(size=(n, 3)),
        scale=np.full(n, 1.3),
        timesteps=np.arange(n),
    )


def test_pose_errors_are_each_frames_deviation_up_to_one_shared_offset():
    rng = np.random.default_rng(0)
    truth = _tracking(6, rng)
    # Known head-frame errors: a rotation by w_t about a fixed axis (so they compose additively) and a shift s_t,
    # on top of one offset every frame shares (which the gauge removes).
    axis = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])
    angles = np.array([0.01, -0.02, 0.0, 0.03, -0.01, -0.01])  # radians, mean 0
    shifts = rng.normal(0.0, 0.01, (6, 3))
    shared = np.eye(4)
    shared[:3, :3], shared[:3, 3] = Rotation.from_rotvec(0.02 * axis).as_matrix(), [0.05, 0.0, -0.02]
    poses = []
    for t in range(6):
        e = np.eye(4)
        e[:3, :3], e[:3, 3] = Rotation.from_rotvec(angles[t] * axis).as_matrix(), shifts[t]
        poses.append(truth.head_to_world(t) @ shared @ e)
    rot, pos = pose_errors(truth.head_poses, np.stack(poses))
    np.testing.assert_allclose(rot, np.abs(angles - angles.mean()), atol=1e-9)
    # the shared rotation turns the shifts; their spread about the mean keeps its length
    turned = shifts @ shared[:3, :3].T
    np.testing.assert_allclose(pos, np.linalg.norm(turned - turned.mean(0), axis=1), atol=1e-9)
    exact, _ = pose_errors(truth.head_poses, truth.head_poses @ shared)
    assert exact.max() == pytest.approx(0.0, abs=1e-9)


def test_tracking_extras_round_trip_and_absent_keys_read_as_none(tmp_path):
    rng = np.random.default_rng(1)
    truth = _tracking(3, rng)
    extras = TrackingExtras(
        intrinsics=np.eye(3) * 50,
        image_size=(64, 48),
        world_2_cam=np.eye(4),
        head_model="synthetic",
        residual=np.array([0.1, 0.2, 0.3]),
        iou=np.array([0.9, 0.8, 0.95]),
        problem=np.array(["", "lost", ""]),
    )
    truth.save(tmp_path / "full.npz", extras)
    again = TrackingExtras.load(tmp_path / "full.npz")
    assert again.image_size == (64, 48) and again.head_model == "synthetic"
    for name in ("intrinsics", "world_2_cam", "residual", "iou", "problem"):
        np.testing.assert_array_equal(getattr(again, name), getattr(extras, name))
    with np.load(tmp_path / "full.npz") as npz:  # readers outside Python get the convergence flag
        np.testing.assert_array_equal(npz["converged"], [True, False, True])
    truth.save(tmp_path / "plain.npz")
    assert TrackingExtras.load(tmp_path / "plain.npz") == TrackingExtras()
