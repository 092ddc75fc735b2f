"""`npga track` (npga/drive/fit.py, npga/drive/video.py): the pose and code algebra against closed forms,
tracking against the codes and poses a driver video was rendered with, resuming, and bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest
import torch

import npga.drive.video as track_video
from npga.avatar.deform import deform
from npga.avatar.file import save_avatar
from npga.cli import main
from npga.data.tracking import Tracking
from npga.drive.fit import (
    FrameObjective,
    FrameState,
    HeadFrame,
    Rig,
    TrackConfig,
    TrackLog,
    code_penalties,
    head_frame,
    head_to_camera,
    moved_centroid,
    reference_view,
    robust_l1,
    smooth_distance,
    track_frames,
)
from npga.drive.foreground import border_color, foreground_mask
from npga.geometry import axis_angle_to_matrix, centred_intrinsics
from npga.io.video import write_video
from tests.helpers.head_avatars import filmed, head_avatar
from tests.helpers.small_avatars import random_avatar

W, H = 66, 96  # driver video size: small, and large enough for the head's features
FAST = TrackConfig()


def test_head_to_camera_puts_the_centroid_where_asked():
    head = dataclasses.replace(head_frame(random_avatar(torch.Generator().manual_seed(0))), scale=1.3)
    R = torch.from_numpy(cv2.Rodrigues(np.array([0.2, -0.5, 0.1]))[0]).float()
    target = torch.tensor([0.05, -0.02, 1.4])
    pose = head_to_camera(R, target, head)
    c = torch.cat([head.centroid, torch.ones(1)])
    torch.testing.assert_close((pose @ c)[:3], target)
    torch.testing.assert_close(pose[:3, :3], 1.3 * R)
    torch.testing.assert_close(pose[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_moved_centroid_depth_keeps_the_image_point_and_sideways_moves_by_radii():
    start = torch.tensor([0.1, -0.05, 2.0])
    further = moved_centroid(start, torch.tensor([0.0, 0.0, math.log(1.5)]), radius=0.1)
    torch.testing.assert_close(further, start * 1.5)  # same ray, 1.5x as far
    aside = moved_centroid(start, torch.tensor([2.0, -1.0, 0.0]), radius=0.1)
    torch.testing.assert_close(aside, start + torch.tensor([0.2, -0.1, 0.0]))
    both = moved_centroid(start, torch.tensor([2.0, -1.0, math.log(1.5)]), radius=0.1)
    torch.testing.assert_close(both, 1.5 * (start + torch.tensor([0.2, -0.1, 0.0])))  # the shifted ray, further


def test_pose_offsets_move_the_start_onto_another_pose_with_one_view_or_several():
    """The variables that reach the previous frame's pose (what smoothness measures change from when a frame
    starts elsewhere, e.g. at a capture's tracking) invert the parametrisation, for the depth along one view's
    ray and for depth in head radii with several views whose first camera is not the world's origin."""
    avatar = random_avatar(torch.Generator().manual_seed(0))
    head = head_frame(avatar)
    cams = list(avatar.cameras.values())  # two cameras looking at the origin from 3 units
    views = Rig(
        world_2_cam=torch.tensor(np.stack([c.world_2_cam for c in cams]), dtype=torch.float32),
        K=torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32),
    )
    K = views.K[0]
    turn = lambda v: axis_angle_to_matrix(torch.tensor(v))
    a = avatar.codes.whiten(avatar.codes.mean)
    for rig, depth in ((Rig.monocular(K), 2.0), (views, 0.0)):  # the head in front of the (first) camera
        ahead = torch.tensor([0.0, 0.0, depth])
        start = FrameState(avatar.codes.mean, turn([0.1, -0.3, 0.05]), torch.tensor([0.02, -0.01, 0.1]) + ahead, K)
        other = FrameState(avatar.codes.mean, turn([0.15, -0.2, 0.0]), torch.tensor([0.05, 0.01, -0.05]) + ahead, K)
        objective = FrameObjective(avatar, head, FAST, rig, start, other)
        omega, delta = objective.pose_offsets(other)
        reached = objective.state(a, omega, delta, torch.zeros(()))
        torch.testing.assert_close(reached.rotation, other.rotation, atol=1e-5, rtol=0)
        torch.testing.assert_close(reached.centroid, other.centroid, atol=1e-5, rtol=0)
        assert all((v == 0).all() for v in objective.pose_offsets(start))  # the start itself: no change
        unmoved = objective.state(a, torch.zeros(3), torch.zeros(3), torch.zeros(()))
        torch.testing.assert_close(unmoved.centroid, start.centroid, atol=1e-6, rtol=0)
        torch.testing.assert_close(unmoved.rotation, start.rotation, atol=1e-6, rtol=0)


def test_whitened_codes_round_trip_and_the_range_penalty_counts_standard_deviations():
    avatar = random_avatar(torch.Generator().manual_seed(1))
    c = avatar.codes
    train = avatar.motions["A"].expression  # its codes are the training codes
    a = avatar.codes.whiten(train[2])
    torch.testing.assert_close(avatar.codes.unwhiten(a), train[2], atol=1e-5, rtol=0)
    prior, excess = code_penalties(avatar, a)
    assert excess.item() == pytest.approx(0.0, abs=1e-9)  # a training code is inside the range
    assert prior.item() == pytest.approx(a.square().mean().item())
    beyond = c.high / c.std.clamp_min(1e-6)
    beyond[0] += 2.0  # two standard deviations past the largest projection on the first direction
    _, excess = code_penalties(avatar, beyond)
    assert excess.item() == pytest.approx(4.0 / len(beyond), rel=1e-4)
    below = c.low / c.std.clamp_min(1e-6)
    below[1] -= 3.0  # three below the smallest on the second
    _, excess = code_penalties(avatar, below)
    assert excess.item() == pytest.approx(9.0 / len(below), rel=1e-4)


def test_distance_smoothing_removes_depth_jitter_and_keeps_each_head_on_its_ray():
    rng = np.random.default_rng(0)
    t = np.arange(100)
    depth = 1.0 + 0.02 * np.sin(t / 20)  # a slow lean towards the camera and back
    rays = np.stack([0.05 * np.sin(t / 5), -0.02 + 0.01 * np.cos(t / 7), np.ones_like(t)], 1)  # (T, 3) x/z, y/z, 1
    truth = rays * depth[:, None]
    noisy = rays * (depth + rng.normal(0, 0.002, len(t)))[:, None]  # 2 mm of jitter in depth
    smoothed = smooth_distance(noisy, 3.0)
    np.testing.assert_allclose(smoothed[:, :2] / smoothed[:, 2:], rays[:, :2], atol=1e-12)  # image positions
    rms = lambda c: np.sqrt(((c - truth) ** 2).sum(1).mean())
    assert rms(smoothed) < 0.5 * rms(noisy)
    approach = rays * (1.2 - 0.004 * t)[:, None]  # a steady approach stays as it is, away from the ends
    np.testing.assert_allclose(smooth_distance(approach, 3.0)[12:-12], approach[12:-12], atol=1e-9)
    np.testing.assert_array_equal(smooth_distance(noisy, 0.0), noisy)

    head = HeadFrame(centroid=torch.tensor([0.01, 0.02, -0.03], dtype=torch.float64), radius=0.1, scale=1.2)
    rotations = np.stack([axis_angle_to_matrix(torch.tensor([0.1, 0.02 * k, 0.0])).double().numpy() for k in t])
    poses = np.stack(
        [
            head_to_camera(torch.from_numpy(r), torch.from_numpy(c), head).numpy()
            for r, c in zip(rotations, noisy, strict=True)
        ]
    )
    n = len(t)
    log_ = TrackLog(
        np.zeros((n, 2)), rotations, noisy, np.zeros((n, 3, 3)), poses, np.zeros(n), np.ones(n), np.full(n, "")
    )
    moved = log_.with_smoothed_distance(3.0, head)
    np.testing.assert_allclose(moved.centroid, smoothed, atol=1e-12)
    centre = moved.head_to_camera[:, :3, :3] @ head.centroid.numpy() + moved.head_to_camera[:, :3, 3]
    np.testing.assert_allclose(centre, smoothed, atol=1e-9)  # the poses put the head's centroid there
    np.testing.assert_allclose(moved.head_to_camera[:, :3, :3], poses[:, :3, :3])  # and keep its rotation


def _driver(avatar, n: int, principal_shift: tuple[float, float] = (0.0, 0.0)):
    """Codes, (rotation, centroid) and head -> camera poses, K and frames of a short driver video: the head turns
    about a degree per frame and the jaw opens, seen from the avatar's usual view a little further away."""
    head = head_frame(avatar)
    rotation0, distance, focal = reference_view(avatar, head)
    codes = avatar.codes.mean.repeat(n, 1)  # (n, D)
    codes[:, 0] = torch.linspace(0.2, 0.9, n)  # jaw_open
    codes[:, 1] = torch.linspace(0.6, 0.3, n)  # smile
    poses, truths = [], []
    for t in range(n):
        R = axis_angle_to_matrix(torch.tensor([0.015 * t, 0.3 - 0.02 * t, 0.02])) @ rotation0
        centroid = torch.tensor([0.01 + 0.002 * t, -0.004, 1.08 * distance])
        poses.append(head_to_camera(R, centroid, head))
        truths.append((R, centroid))
    K = torch.from_numpy(centred_intrinsics(focal * H, W, H)).float()
    K[:2, 2] += torch.tensor(principal_shift)  # a calibrated camera's principal point is rarely the centre
    frames, alphas = filmed(avatar, codes, torch.stack(poses), K, W, H)
    return codes, truths, K, frames, alphas


def _angle_degrees(A: torch.Tensor, B: torch.Tensor) -> float:
    return math.degrees(math.acos(float(np.clip((torch.trace(A.T @ B) - 1) / 2, -1, 1))))


@pytest.mark.slow
def test_tracking_recovers_the_pose_and_jaw_a_video_was_rendered_with():
    avatar = head_avatar(0)
    codes, truths, K, frames, alphas = _driver(avatar, 3, principal_shift=(5.0, -4.0))
    background = border_color(frames[:1])
    masks = [foreground_mask(f, background) for f in frames]
    assert all(
        (m > 0.5).sum() / (a > 0.5).sum() == pytest.approx(1.0, abs=0.05) for m, a in zip(masks, alphas, strict=True)
    )
    for tracked in track_frames(avatar, iter(zip(frames, masks, strict=True)), K.numpy(), FAST):
        R, centroid = truths[tracked.index]
        s = tracked.fit.state
        assert _angle_degrees(s.rotation, R) < 2.0
        assert (s.centroid - centroid).norm() < 0.015 * centroid[2]
        assert abs(s.code[0] - codes[tracked.index, 0]) < 0.3  # jaw_open, the code's largest visible effect
        assert tracked.fit.iou > 0.9 and not tracked.fit.problem


@pytest.mark.slow
def test_tracking_recovers_every_expression_component_that_moves_not_only_the_jaw():
    """A driver whose face starts neutral (the training mean) and passes through two training codes (inside the
    training range), seen close up: each of the 10 components moves, most of them changing the 96 x 96 image by
    a few grey levels only. Each must follow the truth (correlation) with some of its amplitude (slope of fit on
    truth): a prior or a code step that pins the weak components at rest fails here (a prior 10x as strong or a
    code step 3x as small does)."""
    avatar = head_avatar(0)
    head = head_frame(avatar)
    rotation0, distance, focal = reference_view(avatar, head)
    train = avatar.motions["EXP"].expression
    keys = torch.stack([avatar.codes.mean, train[9], train[11]])  # (3, D)
    n = 7
    s = torch.linspace(0, len(keys) - 1, n)
    i = s.long().clamp(max=len(keys) - 2)
    codes = keys[i] + (s - i)[:, None] * (keys[i + 1] - keys[i])  # (n, D) along the keys
    assert (codes.max(0).values - codes.min(0).values).min() > 0.25  # every component moves
    poses = torch.stack(
        [
            head_to_camera(
                axis_angle_to_matrix(torch.tensor([0.01 * t, 0.2 - 0.01 * t, 0.02])) @ rotation0,
                torch.tensor([0.01, -0.004, 1.08 * distance]),
                head,
            )
            for t in range(n)
        ]
    )
    K = torch.from_numpy(centred_intrinsics(2 * focal * 96, 96, 96)).float()  # the face fills the image
    frames, alphas = filmed(avatar, codes, poses, K, 96, 96)
    fitted = np.stack(
        [tr.fit.state.code.numpy() for tr in track_frames(avatar, zip(frames, alphas, strict=True), K.numpy(), FAST)]
    )
    truth = codes.numpy()
    correlation = [np.corrcoef(fitted[:, k], truth[:, k])[0, 1] for k in range(truth.shape[1])]
    slope = [np.polyfit(truth[:, k], fitted[:, k], 1)[0] for k in range(truth.shape[1])]
    print("correlation", np.round(correlation, 2), "slope", np.round(slope, 2))
    assert min(correlation) > 0.5 and min(slope) > 0.15


@pytest.mark.slow
def test_tracking_without_intrinsics_fits_focal_and_distance_together():
    avatar = head_avatar(0)
    _, truths, K, frames, _ = _driver(avatar, 1)
    masks = [foreground_mask(f, border_color(frames)) for f in frames]
    (tracked,) = track_frames(avatar, iter(zip(frames, masks, strict=True)), None, FAST)
    s = tracked.fit.state
    # Focal length and distance trade off; what the image fixes is their ratio (the head's size in pixels).
    assert s.K[1, 1] / s.centroid[2].item() == pytest.approx(float(K[1, 1]) / truths[0][1][2].item(), rel=0.03)
    torch.testing.assert_close(s.K[0, 0], s.K[1, 1])  # square pixels, principal point at the centre
    torch.testing.assert_close(s.K[:2, 2], torch.tensor([W / 2, H / 2]))
    assert tracked.fit.iou > 0.9


@pytest.fixture
def saved_head(tmp_path):
    return save_avatar(head_avatar(0), tmp_path / "a.npga")


def _write_driver(tmp_path, frames, alphas=None):
    video = write_video(tmp_path / "driver.mp4", frames, fps=25, quality=10) and tmp_path / "driver.mp4"
    if alphas is not None:
        write_video(
            tmp_path / "mask.mp4",
            [np.repeat((a[..., None] * 255).astype(np.uint8), 3, -1) for a in alphas],
            fps=25,
            quality=10,
        )
    return video


@pytest.mark.slow
def test_track_command_resumes_where_it_was_interrupted(saved_head, tmp_path, monkeypatch):
    _, _, K, frames, alphas = _driver(head_avatar(0), 3)
    video = _write_driver(tmp_path, frames, alphas)
    (tmp_path / "K.json").write_text(json.dumps({"K": K.tolist(), "width": W, "height": H}))
    args = [
        "track",
        "--avatar",
        str(saved_head),
        "--video",
        str(video),
        "--intrinsics",
        str(tmp_path / "K.json"),
        "--mask",
        str(tmp_path / "mask.mp4"),
        "--out",
        str(tmp_path / "codes.npz"),
        "--track.first-iterations",
        "40",
        "15",
        "--track.iterations",
        "6",
        "3",
    ]
    save = track_video._save_fits

    def interrupted_after_two(path, track_log, fingerprint):
        save(path, track_log, fingerprint)
        if len(track_log) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(track_video, "_save_fits", interrupted_after_two)
    with pytest.raises(SystemExit):
        main(args)
    assert not (tmp_path / "codes.npz").exists()
    with np.load(tmp_path / ".codes.resume.npz") as npz:
        first_two = npz["code"]
    monkeypatch.setattr(track_video, "_save_fits", save)
    fitted = []
    fit_frame = track_video.track_frames.__globals__["fit_frame"]
    monkeypatch.setitem(
        track_video.track_frames.__globals__, "fit_frame", lambda *a, **k: fitted.append(1) or fit_frame(*a, **k)
    )
    main(args)
    assert len(fitted) == 1  # only the third frame was fitted again
    tracking = Tracking.load(tmp_path / "codes.npz")
    assert tracking.n_frames == 3
    np.testing.assert_array_equal(tracking.expression[:2], first_two)
    with np.load(tmp_path / "codes.npz") as npz:
        np.testing.assert_allclose(npz["intrinsics"], K.numpy(), rtol=1e-6)
        assert npz["converged"].all() and str(npz["head_model"]) == "synthetic"
    assert not (tmp_path / ".codes.resume.npz").exists()


def test_track_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    avatar = save_avatar(random_avatar(torch.Generator().manual_seed(0)), tmp_path / "a.npga")
    out = tmp_path / "codes.npz"
    face = np.full((48, 32, 3), 230, np.uint8)
    cv2.ellipse(face, (16, 24), (9, 13), 0, 0, 360, (170, 120, 100), -1)
    write_video(tmp_path / "face.mp4", [face] * 3, fps=25)
    write_video(tmp_path / "wall.mp4", [np.full((48, 32, 3), 230, np.uint8)] * 3, fps=25)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "K.json").write_text(json.dumps({"K": np.eye(3).tolist(), "width": 64, "height": 48}))
    cases = {
        "broken.mp4": ([], "not a readable video"),
        "missing.mp4": ([], "video not found"),
        "wall.mp4": ([], "no face-sized foreground in frame 0"),
        "face.mp4": (["--intrinsics", str(tmp_path / "K.json")], "is for 64x48 images, the video is 32x48"),
    }
    for video, (extra, message) in cases.items():
        with pytest.raises(SystemExit) as e:
            main(["track", "--avatar", str(avatar), "--video", str(tmp_path / video), "--out", str(out), *extra])
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "track",
                "--avatar",
                str(avatar),
                "--video",
                str(tmp_path / "face.mp4"),
                "--fov",
                "30",
                "--intrinsics",
                str(tmp_path / "K.json"),
            ]
        )
    assert "not both" in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".codes*"))


def test_the_code_gradient_passes_a_frozen_coarse_field_like_finite_differences():
    avatar = random_avatar(torch.Generator().manual_seed(2))  # loaded avatars' networks are frozen
    avatar.nets.requires_grad_(False)
    z = avatar.codes.mean.double().clone().requires_grad_(True)
    avatar.nets.double()
    params = {k: v.double() for k, v in avatar.params.items()}
    weights = torch.randn(len(params["means"]), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def f(code: torch.Tensor) -> torch.Tensor:
        return (deform(params, avatar.nets, code, torch.eye(4, dtype=torch.float64)).means * weights).sum()

    f(z).backward()
    eps = 1e-6
    numeric = torch.stack([(f(z.detach() + eps * e) - f(z.detach() - eps * e)) / (2 * eps) for e in torch.eye(len(z))])
    torch.testing.assert_close(z.grad, numeric, rtol=1e-5, atol=1e-8)


def test_the_robust_colour_error_is_the_l1_for_small_errors_and_logarithmic_for_large_ones():
    gt = torch.zeros(4)
    small = torch.full((4,), 1e-4, requires_grad=True)
    assert robust_l1(small, gt, 0.05).item() == pytest.approx(1e-4, rel=1e-2)
    large = torch.tensor([0.45, -0.45, 0.45, -0.45], requires_grad=True)  # 9 c
    value = robust_l1(large, gt, 0.05)
    assert value.item() == pytest.approx(0.05 * math.log(10.0), rel=1e-6)
    (grad,) = torch.autograd.grad(value, large)
    torch.testing.assert_close(grad, torch.tensor([1.0, -1.0, 1.0, -1.0]) / 10 / 4)  # 1 / (1 + 9) per element
