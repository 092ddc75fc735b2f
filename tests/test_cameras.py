"""Camera conventions checked against hand-built geometry."""

import numpy as np
import pytest
import torch

from npga.cameras import Camera, look_at, orbit_cameras, stack_cameras


def test_look_at_puts_target_on_the_optical_axis_with_up_pointing_up_in_the_image():
    eye, target = np.array([0.3, 0.1, 1.0]), np.array([0.0, 0.0, 0.0])
    cam = Camera(K=[[100, 0, 50], [0, 100, 40], [0, 0, 1]], world_2_cam=look_at(eye, target), width=100, height=80)
    uv, z = cam.project(np.array([target, target + [0, 0.05, 0]]))
    assert np.allclose(uv[0], [50, 40]) and np.isclose(z[0], np.linalg.norm(eye - target))
    assert uv[1, 1] < uv[0, 1]  # world up -> smaller image row (OpenCV y points down)
    assert np.allclose(cam.center, eye)
    R = cam.world_2_cam[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)


def test_resized_camera_projects_to_scaled_pixels():
    cam = Camera(
        K=[[300, 0, 110], [0, 310, 160], [0, 0, 1]], world_2_cam=look_at([0, 0, 1], [0, 0, 0]), width=220, height=320
    )
    pts = np.random.default_rng(0).normal(scale=0.05, size=(20, 3))
    small = cam.resized(110, 160)
    # Pixel centres sit at +0.5: a point seen at pixel coordinate u maps to u * scale.
    assert np.allclose(small.project(pts)[0], cam.project(pts)[0] * 0.5)


def test_stack_and_validation():
    a = Camera(K=np.eye(3), world_2_cam=np.eye(4), width=4, height=4, serial="a")
    viewmats, Ks = stack_cameras([a, a], dtype=torch.float64)
    assert viewmats.shape == (2, 4, 4) and Ks.shape == (2, 3, 3)
    with pytest.raises(ValueError, match="different image sizes"):
        stack_cameras([a, a.resized(2, 2)])
    with pytest.raises(ValueError, match="world_2_cam"):
        Camera(K=np.eye(3), world_2_cam=np.eye(3), width=4, height=4)
    with pytest.raises(ValueError, match="NaN"):
        Camera(K=np.full((3, 3), np.nan), world_2_cam=np.eye(4), width=4, height=4)


def test_orbit_cameras_circle_the_target_and_look_at_it():
    K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 48.0], [0.0, 0.0, 1.0]])
    target = np.array([0.1, 1.6, -0.2])
    eye = target + np.array([0.0, 0.2, 1.0])
    ref = Camera(K=K, world_2_cam=look_at(eye, target), width=64, height=96, serial="ref")
    up = np.array([0.0, 1.0, 0.0])
    cams = orbit_cameras(ref, target, up, n=8, degrees=60.0)
    assert np.allclose(cams[0].world_2_cam, ref.world_2_cam)
    for cam in cams:
        px, depth = cam.project(target[None])
        assert np.allclose(px[0], [32.0, 48.0], atol=1e-6) and depth[0] > 0
        assert np.isclose(np.linalg.norm(cam.center - target), np.linalg.norm(eye - target))
        assert np.isclose((cam.center - target) @ up, (eye - target) @ up)  # stays at the same height
    # quarter period: +60 degrees about up
    off0, off2 = ref.center - target, cams[2].center - target
    horiz = lambda v: v - (v @ up) * up
    cos = horiz(off0) @ horiz(off2) / (np.linalg.norm(horiz(off0)) * np.linalg.norm(horiz(off2)))
    assert np.isclose(cos, 0.5)
