"""`npga import-tracking`: MonoNPHM tracking folders written here, in both stage layouts, become our tracking."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from npga.cli import main as cli
from npga.data.capture import Capture
from npga.data.mononphm_tracking import import_mononphm_tracking
from npga.data.tracking import Tracking
from npga.headmodel import MonoNPHM, load_head_model
from tests.helpers.small_mononphm import SMALL, random_codes, write_experiment, write_tracking

N_FRAMES = 6  # bench_capture: 6 frames per sequence, sequences EXP-1 and FREE


def mononphm_track(n: int, seed: int = 0, dim: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    z_geo, z_app = random_codes(SMALL, seed)
    return {
        "z_exp": rng.normal(size=(n, dim)).astype(np.float32),
        "rot": Rotation.random(n, random_state=seed).as_matrix(),
        "trans": rng.normal(scale=0.3, size=(n, 3)),
        "scale": rng.uniform(3.0, 5.0, size=n),
        "z_geo": z_geo,
        "z_app": z_app,
    }


@pytest.fixture
def experiment(tmp_path):
    return write_experiment(tmp_path / "mononphm_exp", SMALL)


@pytest.mark.parametrize("stage", [1, 2])
def test_both_stage_layouts_round_trip(bench_capture, tmp_path, experiment, stage):
    exp, anchors = experiment
    track = mononphm_track(N_FRAMES, seed=stage)
    write_tracking(tmp_path / "out", "FREE", **track, stage=stage)
    path = import_mononphm_tracking(tmp_path / "out", bench_capture, "FREE", exp, anchors)
    tr = Capture.open(bench_capture).tracking("FREE")
    assert path == bench_capture / "sequences" / "FREE" / "tracking" / "nphm_tracking.npz"
    np.testing.assert_allclose(tr.expression, track["z_exp"])
    np.testing.assert_array_equal(tr.timesteps, np.arange(N_FRAMES))
    # MonoNPHM's tracker maps model points to the world as ((p - trans) / scale) @ rot (tracking.py); ours as
    # x_world = scale * rotation @ x_head + translation.
    p = np.random.default_rng(9).normal(size=(20, 3))
    for t in range(N_FRAMES):
        official = ((p - track["trans"][t]) / track["scale"][t]) @ track["rot"][t]
        ours = (tr.head_to_world(t) @ np.c_[p, np.ones(20)].T).T[:, :3]
        np.testing.assert_allclose(ours, official, atol=1e-5)
    head = load_head_model(bench_capture)
    assert isinstance(head, MonoNPHM) and head.expression_dim == 100
    np.testing.assert_array_equal(head.z_geo.numpy(), track["z_geo"])
    np.testing.assert_array_equal(head.z_app.numpy(), track["z_app"])
    assert json.loads((bench_capture / "headmodel.json").read_text())["checkpoint"].endswith("checkpoint_epoch_7.tar")


def test_a_second_sequence_keeps_the_captures_identity(bench_capture, tmp_path, experiment):
    exp, anchors = experiment
    first, second = mononphm_track(N_FRAMES, seed=1), mononphm_track(N_FRAMES, seed=2)
    write_tracking(tmp_path / "out", "FREE", **first, stage=2)
    write_tracking(tmp_path / "out", "EXP-1", **second, stage=2)
    import_mononphm_tracking(tmp_path / "out", bench_capture, "FREE", exp, anchors)
    import_mononphm_tracking(tmp_path / "out", bench_capture, "EXP-1", exp, anchors)
    np.testing.assert_array_equal(load_head_model(bench_capture).z_geo.numpy(), first["z_geo"])
    np.testing.assert_allclose(Capture.open(bench_capture).tracking("EXP-1").expression, second["z_exp"])


def test_head_poses_move_into_the_rig_through_the_metrical_trackers_cameras(bench_capture, tmp_path, experiment):
    exp, anchors = experiment
    track = mononphm_track(N_FRAMES, seed=4)
    write_tracking(tmp_path / "out", "FREE", **track, stage=2)
    rng = np.random.default_rng(5)
    cams = tmp_path / "metrical_tracker" / "FREE" / "checkpoint"
    cams.mkdir(parents=True)
    mica = [(Rotation.random(random_state=k).as_matrix(), rng.normal(size=3)) for k in range(N_FRAMES)]
    for k, (R, t) in enumerate(mica):  # the tracker's files are numbered one behind the frames (data_loading.py)
        np.savez(cams / f"{k:05d}_cam_params_opencv.npz", R=R[None], t=t[None], K=np.eye(3)[None])
    serial = Capture.open(bench_capture).serials[1]
    w2c = np.array(
        json.loads((bench_capture / "calibration" / "camera_params.json").read_text())["world_2_cam"][serial]
    )
    import_mononphm_tracking(
        tmp_path / "out", bench_capture, "FREE", exp, anchors, metrical_tracker=cams, camera=serial
    )
    tr = Capture.open(bench_capture).tracking("FREE")
    p = np.random.default_rng(6).normal(size=(20, 3))
    for t in range(N_FRAMES):
        mononphm_world = ((p - track["trans"][t]) / track["scale"][t]) @ track["rot"][t]
        R, tv = mica[max(t - 1, 0)]
        in_camera = mononphm_world / 4 @ R.T + tv  # FLAME space (metres) -> camera, OpenCV
        in_rig = (in_camera - w2c[:3, 3]) @ w2c[:3, :3]  # inverse of the rig's world -> camera
        ours = (tr.head_to_world(t) @ np.c_[p, np.ones(20)].T).T[:, :3]
        np.testing.assert_allclose(ours, in_rig, atol=1e-5)
    with pytest.raises(ValueError, match="no camera 'nope'"):
        import_mononphm_tracking(
            tmp_path / "out", bench_capture, "FREE", exp, anchors, metrical_tracker=cams, camera="nope"
        )


def _break_nan(folder):
    trans = np.load(folder / "00003" / "trans.npy")
    trans[0, 1] = np.nan
    np.save(folder / "00003" / "trans.npy", trans)
    return folder / "00003" / "trans.npy", "NaN"


def _break_missing(folder):
    for f in (folder / "00002").iterdir():
        f.unlink()
    (folder / "00002").rmdir()
    return folder / "00002", "is missing"


def _break_rotation(folder):
    np.save(folder / "00001" / "rot.npy", 2 * np.load(folder / "00001" / "rot.npy"))
    return folder / "00001" / "rot.npy", "not a rotation"


@pytest.mark.parametrize("breaker", [_break_nan, _break_missing, _break_rotation])
@pytest.mark.parametrize("stage", [1, 2])
def test_broken_tracking_is_refused_naming_the_file_and_nothing_is_written(
    bench_capture, tmp_path, experiment, stage, breaker
):
    exp, anchors = experiment
    folder = write_tracking(tmp_path / "out", "FREE", **mononphm_track(N_FRAMES), stage=stage)
    bad, message = breaker(folder)
    before = Tracking.load(bench_capture / "sequences" / "FREE" / "tracking" / "nphm_tracking.npz")
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        import_mononphm_tracking(tmp_path / "out", bench_capture, "FREE", exp, anchors)
    assert str(bad) in str(err.value)
    after = Tracking.load(bench_capture / "sequences" / "FREE" / "tracking" / "nphm_tracking.npz")
    np.testing.assert_array_equal(before.expression, after.expression)
    assert not (bench_capture / "headmodel.json").exists()


def test_frame_counts_and_expression_dimension_must_match(bench_capture, tmp_path, experiment):
    exp, anchors = experiment
    write_tracking(tmp_path / "short", "FREE", **mononphm_track(N_FRAMES - 1), stage=2)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'short' / 'stage2' / 'FREE' / '00005'} is missing"):
        import_mononphm_tracking(tmp_path / "short", bench_capture, "FREE", exp, anchors)
    write_tracking(tmp_path / "long", "FREE", **mononphm_track(N_FRAMES + 1), stage=1)
    with pytest.raises(ValueError, match="7 tracked frames .* but the videos have 6"):
        import_mononphm_tracking(tmp_path / "long", bench_capture, "FREE", exp, anchors)
    write_tracking(tmp_path / "dim", "FREE", **mononphm_track(N_FRAMES, dim=50), stage=2)
    with pytest.raises(ValueError, match="00000/z_exp.npy: 50-d expression codes, the MonoNPHM model has 100"):
        import_mononphm_tracking(tmp_path / "dim", bench_capture, "FREE", exp, anchors)
    with pytest.raises(FileNotFoundError, match="no MonoNPHM tracking of sequence EXP-1"):
        import_mononphm_tracking(tmp_path / "dim", bench_capture, "EXP-1", exp, anchors)


def test_the_command_imports_and_names_missing_anchors(bench_capture, tmp_path, experiment, capsys):
    exp, anchors = experiment
    write_tracking(tmp_path / "out", "FREE", **mononphm_track(N_FRAMES), stage=2)
    args = [
        "import-tracking",
        "--mononphm",
        str(tmp_path / "out"),
        "--capture",
        str(bench_capture),
        "--sequence",
        "FREE",
        "--model",
        str(exp),
    ]
    with pytest.raises(SystemExit, match="anchors_65.npy"):
        cli(args)
    cli([*args, "--anchors", str(anchors)])
    assert "6 frames of 100-d MonoNPHM expression codes" in capsys.readouterr().out
    assert isinstance(load_head_model(bench_capture), MonoNPHM)
