"""The capture reader: layouts, cameras, frames and tracking as written, and a clear error per bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from npga.data.capture import Capture
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.io.video import write_video
from tests.helpers.small_captures import RAW_K, SERIALS, alpha_frame, rgb_frame, tracking_for


def test_benchmark_layout_reads_back_as_written(bench_capture):
    cap = Capture.open(bench_capture)
    assert cap.layout == "benchmark" and cap.has_alpha
    assert cap.serials == SERIALS and cap.sequences == ("EXP-1", "FREE")
    assert cap.native_size == (32, 48) and cap.n_frames("FREE") == 6

    params = json.loads(ParticipantLayout(bench_capture).camera_params.read_text())
    cams = cap.cameras()
    for s in SERIALS:
        np.testing.assert_array_equal(cams[s].world_2_cam, params["world_2_cam"][s])
        np.testing.assert_array_equal(cams[s].K, params["intrinsics"][s])
        assert (cams[s].width, cams[s].height) == (32, 48)
    half = cap.cameras(height=24)[SERIALS[1]]
    assert (half.width, half.height) == (16, 24)
    np.testing.assert_allclose(half.K[:2], np.array(params["intrinsics"][SERIALS[1]])[:2] / 2)

    frames = list(cap.read_frames("FREE", SERIALS[1], frames=[1, 4]))
    assert [t for t, _, _ in frames] == [1, 4]
    for t, rgb, alpha in frames:
        assert rgb.shape == (48, 32, 3) and rgb.dtype == np.uint8 and alpha.shape == (48, 32)
        errors = [np.abs(rgb.astype(float) - rgb_frame(1, u, (32, 48))).mean() for u in range(6)]
        assert np.argmin(errors) == t and errors[t] < 5  # lossy, but this frame of this camera
        assert np.abs(alpha.astype(float) - alpha_frame(t, (32, 48))).mean() < 3

    tracking = cap.tracking("EXP-1")
    np.testing.assert_array_equal(tracking.expression, tracking_for(6).expression)


def test_raw_layout_rescales_the_shared_full_resolution_intrinsics(raw_capture):
    cap = Capture.open(raw_capture)
    assert cap.layout == "raw" and not cap.has_alpha
    assert cap.sequences == ("FREE",)  # BACKGROUND is not a sequence
    assert cap.native_size == (44, 64)
    for size, cams in (((44, 64), cap.cameras()), ((22, 32), cap.cameras(width=22))):
        sx, sy = size[0] / 2200, size[1] / 3208
        expected = RAW_K * np.array([[sx], [sy], [1.0]])  # rows: fx, cx scale with x; fy, cy with y
        for cam in cams.values():
            np.testing.assert_allclose(cam.K, expected)
            assert (cam.width, cam.height) == size
    (t, rgb, alpha), *_ = cap.read_frames("FREE", SERIALS[0])
    assert t == 0 and rgb.shape == (64, 44, 3) and alpha is None


def test_hold_out_cameras_may_come_without_videos(bench_capture):
    # The NeRSemble benchmark ships calibration but no videos for its three hold-out cameras.
    paths = ParticipantLayout(bench_capture)
    for seq in ("EXP-1", "FREE"):
        paths.video(seq, "222200046").unlink()
        paths.alpha_video(seq, "222200046").unlink()
    cap = Capture.open(bench_capture)
    assert "222200046" not in cap.serials and "222200046" in cap.cameras()


# ---- bad input: each case names the file and the problem --------------------------------------------------


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "camera calibration not found"),
        ("{not json", "not valid JSON"),
        (json.dumps({"world_2_cam": {}}), "expected"),
        (
            json.dumps({"world_2_cam": {s: np.eye(3).tolist() for s in SERIALS}, "intrinsics": np.eye(3).tolist()}),
            r"world_2_cam of serial \d+ has shape \(3, 3\)",
        ),
        (
            json.dumps({"world_2_cam": {s: np.eye(4).tolist() for s in SERIALS}, "intrinsics": [[1, 2], [3, 4]]}),
            "shared 'intrinsics' has shape",
        ),
    ],
)
def test_missing_or_malformed_camera_params(bench_capture, content, problem):
    path = ParticipantLayout(bench_capture).camera_params
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    names_file = f"camera_params.json.*{problem}|{problem}.*camera_params.json"
    with pytest.raises((ValueError, FileNotFoundError), match=names_file):
        Capture.open(bench_capture)


def test_serial_with_no_video(bench_capture):
    paths = ParticipantLayout(bench_capture)
    paths.video("FREE", SERIALS[0]).unlink()
    with pytest.raises(ValueError, match=rf"FREE/images/cam_{SERIALS[0]}.mp4 is missing"):
        Capture.open(bench_capture)
    paths.video("EXP-1", SERIALS[0]).unlink()  # now no sequence has it, and it is no hold-out camera
    with pytest.raises(ValueError, match=rf"camera_params.json calibrates camera {SERIALS[0]}, but .*cam_{SERIALS[0]}"):
        Capture.open(bench_capture)


def test_video_with_no_calibration(bench_capture):
    paths = ParticipantLayout(bench_capture)
    shutil.copy(paths.video("FREE", SERIALS[0]), paths.video("FREE", "123456789"))
    with pytest.raises(ValueError, match="cam_123456789.mp4: camera 123456789 has no calibration in .*camera_params"):
        Capture.open(bench_capture)


def test_video_with_no_alpha_map(bench_capture):
    ParticipantLayout(bench_capture).alpha_video("EXP-1", SERIALS[2]).unlink()
    with pytest.raises(ValueError, match=rf"alpha_maps/cam_{SERIALS[2]}.mp4 is missing"):
        Capture.open(bench_capture)


@pytest.mark.parametrize("alpha", [False, True])
def test_videos_of_different_lengths(bench_capture, alpha):
    paths = ParticipantLayout(bench_capture)
    short = paths.alpha_video("FREE", SERIALS[1]) if alpha else paths.video("FREE", SERIALS[1])
    write_video(short, [np.zeros((48, 32, 3), np.uint8)] * 4, fps=73)
    cap = Capture.open(bench_capture)
    with pytest.raises(ValueError, match=rf"{short.parent.name}/cam_{SERIALS[1]}.mp4: 4 frames, but .* has 6"):
        cap.validate()
    cap.n_frames("EXP-1")  # the other sequence is fine


def test_videos_of_different_sizes(bench_capture):
    path = ParticipantLayout(bench_capture).video("EXP-1", SERIALS[2])
    write_video(path, [np.zeros((40, 32, 3), np.uint8)] * 6, fps=73)
    with pytest.raises(ValueError, match=rf"cam_{SERIALS[2]}.mp4: 32x40 frames, but .* has 32x48"):
        Capture.open(bench_capture).validate()


def test_unreadable_video(bench_capture):
    path = ParticipantLayout(bench_capture).video("FREE", SERIALS[2])
    path.write_bytes(path.read_bytes()[:300])  # truncated download
    with pytest.raises(ValueError, match=rf"FREE/images/cam_{SERIALS[2]}.mp4: not a readable video"):
        Capture.open(bench_capture).validate()


def test_tracking_with_the_wrong_number_of_frames(bench_capture):
    path = ParticipantLayout(bench_capture).tracking("FREE")
    tracking_for(7).save(path)
    cap = Capture.open(bench_capture)
    with pytest.raises(ValueError, match="nphm_tracking.npz: 7 tracked frames, but the videos of FREE have 6"):
        cap.validate()
    t = tracking_for(3)
    Tracking(**{**t.__dict__, "timesteps": np.array([0, 3, 6])}).save(path)
    with pytest.raises(ValueError, match=r"nphm_tracking.npz: 'timesteps' must lie in \[0, 6\)"):
        cap.tracking("FREE")
    Tracking(**{**t.__dict__, "timesteps": np.array([0, 2, 2])}).save(path)
    with pytest.raises(ValueError, match="nphm_tracking.npz: 'timesteps' must be strictly increasing"):
        cap.tracking("FREE")


def test_tracking_with_nans(bench_capture):
    path = ParticipantLayout(bench_capture).tracking("EXP-1")
    t = tracking_for(6)
    arrays = {k: np.asarray(v) for k, v in t.__dict__.items()}
    arrays["expression"][2, 1] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="nphm_tracking.npz: 'expression' contains NaN"):
        Capture.open(bench_capture).validate()
