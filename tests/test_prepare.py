"""`npga prepare` and the frame cache: frames as decoded, resume, staleness, nothing left behind on bad input."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest

from npga import cli
from npga.data import Capture, FrameCache, ParticipantLayout, PrepareConfig, Tracking, open_or_prepare
from npga.data import prepare as prepare_module
from npga.data.color import correct_colors
from npga.data.prepare import prepare
from npga.io.video import read_video
from tests.helpers.small_captures import SERIALS, tracking_for


def _area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def test_cache_holds_the_decoded_frames_downscaled(bench_capture):
    out = prepare(PrepareConfig(capture=bench_capture, height=24))
    assert out == bench_capture / "cache" / "16x24"
    cache = FrameCache.open(out)
    cap = Capture.open(bench_capture)
    assert cache.sequences == ("EXP-1", "FREE") and cache.serials == SERIALS and cache.has_alpha
    assert (cache.width, cache.height) == (16, 24) and cache.n_frames("FREE") == 6
    for s, cam in cap.cameras(height=24).items():
        np.testing.assert_allclose(cache.cameras[s].K, cam.K)
        np.testing.assert_allclose(cache.cameras[s].world_2_cam, cam.world_2_cam)

    paths = ParticipantLayout(bench_capture)
    video = read_video(paths.video("FREE", SERIALS[2]))  # (6, 48, 32, 3)
    alpha = read_video(paths.alpha_video("FREE", SERIALS[2]), grey=True).astype(np.float32) / 255
    for t in (0, 5):
        rgb, a = cache.frame("FREE", SERIALS[2], t)
        assert rgb.shape == (24, 16, 3) and a.shape == (24, 16, 1) and rgb.dtype == np.float32
        np.testing.assert_array_equal(rgb * 255, _area(video[t], (16, 24)))
        # Alpha: cleaned of codec noise, then area-averaged (up to the codec noise the cleaning removes).
        assert np.abs(a[..., 0] - _area(alpha[t], (16, 24))).max() < 0.06
        assert set(np.unique(a[:2, :2])) == {0.0}
    rgbs, alphas = cache.frames("FREE", 3, [SERIALS[0], SERIALS[2]])
    assert rgbs.shape == (2, 24, 16, 3) and alphas.shape == (2, 24, 16, 1)
    np.testing.assert_array_equal(rgbs[1], cache.frame("FREE", SERIALS[2], 3)[0])
    np.testing.assert_array_equal(cache.tracking("FREE").expression, tracking_for(6).expression)
    assert pickle.loads(pickle.dumps(cache)).frame("FREE", SERIALS[0], 1)[0].shape == (24, 16, 3)


def test_tracking_index_selects_the_tracked_frames(bench_capture):
    t = tracking_for(3)
    Tracking(**{**t.__dict__, "timesteps": np.array([1, 3, 4])}).save(ParticipantLayout(bench_capture).tracking("FREE"))
    cache = FrameCache.open(prepare(PrepareConfig(capture=bench_capture, height=None, sequences=("FREE",))))
    assert cache.sequences == ("FREE",) and cache.n_frames("FREE") == 3
    np.testing.assert_array_equal(cache.timesteps("FREE"), [1, 3, 4])
    video = read_video(ParticipantLayout(bench_capture).video("FREE", SERIALS[0]))
    np.testing.assert_array_equal(cache.array("FREE", SERIALS[0])[1, ..., :3], video[3])
    with pytest.raises(IndexError, match="frame index 3 out of range"):
        cache.frame("FREE", SERIALS[0], 3)


def test_interrupted_prepare_resumes_without_redoing_finished_cameras(bench_capture, monkeypatch):
    decoded = []
    real_read = Capture.read_frames

    def counting_read(self, seq, serial, frames=None):
        decoded.append((seq, serial))
        yield from real_read(self, seq, serial, frames)

    monkeypatch.setattr(Capture, "read_frames", counting_read)
    real_frame, calls = prepare_module.cache_frame, []

    def crash_on_the_eighth(*args):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real_frame(*args)

    monkeypatch.setattr(prepare_module, "cache_frame", crash_on_the_eighth)
    cfg = PrepareConfig(capture=bench_capture, height=24)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    out = bench_capture / "cache" / "16x24"
    assert sorted(p.name for p in (out / "EXP-1").iterdir()) == [f"cam_{SERIALS[0]}.npy"]  # no partial file
    with pytest.raises(ValueError, match="no sequence is finished yet"):
        FrameCache.open(out)

    decoded.clear()
    prepare(cfg)
    assert decoded == [("EXP-1", s) for s in SERIALS[1:]] + [("FREE", s) for s in SERIALS]
    decoded.clear()
    assert prepare(cfg) == out and decoded == []  # up to date: nothing decoded, nothing probed
    assert FrameCache.open(out).sequences == ("EXP-1", "FREE")


def test_changed_sources_are_refused_or_rebuilt(bench_capture):
    cfg = PrepareConfig(capture=bench_capture, height=24, sequences=("FREE",))
    out = prepare(cfg)
    video = ParticipantLayout(bench_capture).video("FREE", SERIALS[1])
    os.utime(video, ns=(0, 0))
    with pytest.raises(ValueError, match=rf"cache.json: sequence FREE changed .*cam_{SERIALS[1]}.mp4.*--overwrite"):
        prepare(cfg)
    prepare(PrepareConfig(capture=bench_capture, height=24, sequences=("FREE",), overwrite=True))
    prepare(cfg)  # up to date again
    os.utime(ParticipantLayout(bench_capture).camera_params, ns=(0, 0))  # recalibrated: every sequence is stale
    with pytest.raises(ValueError, match="cache.json: the cache was made with other settings or calibration"):
        prepare(cfg)
    prepare(PrepareConfig(capture=bench_capture, height=24, sequences=("EXP-1",), overwrite=True))
    assert FrameCache.open(out).sequences == ("EXP-1",) and not (out / "FREE").exists()


def test_bad_input_fails_before_anything_is_written(bench_capture):
    t = tracking_for(6)
    arrays = {k: np.asarray(v) for k, v in t.__dict__.items()}
    arrays["scale"][4] = np.inf
    np.savez(ParticipantLayout(bench_capture).tracking("FREE"), **arrays)
    with pytest.raises(ValueError, match="FREE/tracking/nphm_tracking.npz: 'scale' contains NaN or inf"):
        prepare(PrepareConfig(capture=bench_capture, height=24))
    assert not (bench_capture / "cache").exists()
    with pytest.raises(ValueError, match="no sequence.*NOPE"):
        prepare(PrepareConfig(capture=bench_capture, sequences=("NOPE",)))


@pytest.mark.parametrize("factor", [2.0, -1.0], ids=["scaled", "mirrored"])
def test_a_calibration_whose_rotation_is_no_rotation_is_refused(bench_capture, factor):
    """A world_2_cam with a scale or a mirror would put every camera somewhere else than its images show."""
    path = ParticipantLayout(bench_capture).camera_params
    params = json.loads(path.read_text())
    serial = sorted(params["world_2_cam"])[1]
    w2c = np.asarray(params["world_2_cam"][serial])
    w2c[:3, :3] = w2c[:3, :3] @ np.diag([1.0, 1.0, factor] if factor < 0 else [factor] * 3)
    params["world_2_cam"][serial] = w2c.tolist()
    path.write_text(json.dumps(params))
    with pytest.raises(
        ValueError, match=f"camera_params.json: the rotation of world_2_cam of serial {serial} is not a rotation"
    ):
        prepare(PrepareConfig(capture=bench_capture, height=24))
    assert not (bench_capture / "cache").exists()


def test_raw_capture_with_color_correction(raw_capture):
    ccm = np.array([[1.2, 0.0, -0.1, 0.02], [0.0, 0.9, 0.05, 0.0], [0.05, 0.0, 1.0, -0.01]])
    paths = ParticipantLayout(raw_capture)
    paths.color_calibration.write_text(json.dumps({s: (ccm * (1 + 0.1 * k)).tolist() for k, s in enumerate(SERIALS)}))
    cache = FrameCache.open(prepare(PrepareConfig(capture=raw_capture, height=32, color_correction=True)))
    assert not cache.has_alpha and (cache.width, cache.height) == (22, 32)
    rgb, alpha = cache.frame("FREE", SERIALS[1], 2)
    expected = correct_colors(_area(read_video(paths.video("FREE", SERIALS[1]))[2], (22, 32)), ccm * 1.1)
    np.testing.assert_array_equal(rgb * 255, expected)
    assert np.all(alpha == 1.0)
    np.testing.assert_allclose(cache.cameras[SERIALS[0]].K, Capture.open(raw_capture).cameras(22, 32)[SERIALS[0]].K)


def test_color_correction_needs_the_calibration_file(raw_capture):
    with pytest.raises(FileNotFoundError, match="color_calibration.json"):
        prepare(PrepareConfig(capture=raw_capture, height=32, color_correction=True))
    assert not (raw_capture / "cache").exists()


def test_open_or_prepare_never_upsamples(bench_capture):
    cache = open_or_prepare(bench_capture, height=1000, sequences=("EXP-1",))
    assert (cache.width, cache.height) == (32, 48) and cache.root == bench_capture / "cache" / "32x48"


def test_cli_prepare_end_to_end(bench_capture, tmp_path):
    out = tmp_path / "frames"
    cli.main(["prepare", "--capture", str(bench_capture), "--height", "24", "--out", str(out)])
    assert FrameCache.open(out).n_frames("EXP-1") == 6
    shutil.rmtree(ParticipantLayout(bench_capture).camera_params.parent)
    with pytest.raises(SystemExit, match="npga prepare: error: camera calibration not found: .*camera_params.json"):
        cli.main(["prepare", "--capture", str(bench_capture)])
