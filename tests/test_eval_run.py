"""`npga eval`, `npga render` and `npga submit` on a run trained briefly on the synthetic tiny capture."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from npga import nersemble
from npga.avatar.file import load_avatar, save_avatar
from npga.cli import main
from npga.commands.eval import AS_TRAINED, REFINED
from npga.commands.eval import Config as EvalConfig
from npga.commands.eval import main as run_eval
from npga.commands.render import Config as RenderConfig
from npga.commands.render import main as render_videos
from npga.commands.submit import Config as SubmitConfig
from npga.commands.submit import main as submit
from npga.config import load_config
from npga.data.cache import FrameCache, frames_path
from npga.drive.fit import TrackConfig
from npga.evaluate import METRICS
from npga.io.submission import check_submission, submission_entry
from npga.runs import RunLayout
from npga.train import TrainConfig, build_trainer

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_capture) -> tuple[Path, Path]:
    """(run, capture): a short tiny run on a copy of the tiny capture named like benchmark participant 443."""
    root = tmp_path_factory.mktemp("eval")
    capture = Path(shutil.copytree(tiny_capture, root / "443"))  # copies keep mtimes: the cache stays valid
    cfg = dataclasses.replace(load_config(TrainConfig, TINY), capture=capture, out=root / "run", steps=60)
    build_trainer(cfg).fit()
    return cfg.out, capture


def _copy_run(run: Path, dst: Path) -> Path:
    return Path(shutil.copytree(run, dst))


def test_eval_writes_every_field(trained, tmp_path):
    run, _ = trained
    out = tmp_path / "eval"
    metrics = run_eval(EvalConfig(run, split=("heldout_cameras", "heldout_sequences", "train"), out=out))
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # tiny: 16 cameras, 3 held out; sequences EXP-1-jaw (train) and FREE (held out), 4 frames each
    expected_frames = {"heldout_cameras": 3 * 4, "heldout_sequences": 16 * 4, "train": 13 * 4}
    for split, n in expected_frames.items():
        m = metrics[split]
        assert set(m) == {*METRICS, "n_frames", "per_camera"}
        assert m["n_frames"] == n
        assert 15.0 < m["psnr"] < 60.0 and 0.5 < m["ssim"] <= 1.0
        assert m["lpips"] is None or 0.0 <= m["lpips"] < 1.0
        cams = m["per_camera"]
        assert sum(c["n_frames"] for c in cams.values()) == n
        assert np.isclose(np.mean([c["psnr"] for c in cams.values()]), m["psnr"])
    assert set(metrics["heldout_cameras"]["per_camera"]) == {"222200046", "222200037", "222200039"}
    with open(out / "per_frame.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(expected_frames.values())
    for serial in ("222200046", "222200037", "222200039"):
        grid = imageio.imread(out / f"heldout_cameras_cam_{serial}.png")
        assert grid.shape == (48, 3 * 32, 3)
    assert (out / "heldout_sequences.mp4").stat().st_size > 0
    assert (out / "training_curves.png").stat().st_size > 0
    assert json.loads((out / "eval_info.json").read_text())["step"] == 60


def test_eval_bad_input_exits_with_a_clear_message(trained, tmp_path, capsys):
    run, capture = trained
    no_avatar = _copy_run(run, tmp_path / "no_avatar")
    RunLayout(no_avatar).avatar.unlink()
    with pytest.raises(SystemExit, match="no avatar.npga in this folder"):
        main(["eval", str(no_avatar)])

    moved_capture = Path(shutil.copytree(capture, tmp_path / "moved_capture"))
    hidden = Path(shutil.move(capture, tmp_path / "hidden"))  # the capture the avatar recorded is gone
    try:
        with pytest.raises(SystemExit, match="do not exist.*--capture"):
            main(["eval", str(run)])
        metrics = run_eval(EvalConfig(run, capture=moved_capture, every=2, out=tmp_path / "moved_eval"))
    finally:
        shutil.move(hidden, capture)
    assert metrics["heldout_cameras"]["n_frames"] == 3 * 2 and metrics["heldout_sequences"]["n_frames"] == 16 * 2

    empty = _copy_run(run, tmp_path / "empty")
    avatar = load_avatar(RunLayout(empty).avatar)
    avatar.split = dataclasses.replace(avatar.split, heldout_sequences=())
    save_avatar(avatar, RunLayout(empty).avatar)
    with pytest.raises(SystemExit, match="'heldout_sequences' has no frames"):
        main(["eval", str(empty), "--split", "heldout_cameras", "heldout_sequences"])
    assert not (empty / "eval").exists()  # nothing was rendered before the empty split was found
    # By default, a protocol split without frames (benchmark data has none of its hold-out cameras) is skipped.
    metrics = run_eval(EvalConfig(empty, every=4))
    assert set(metrics) == {"heldout_cameras", "tracking"} and metrics["tracking"] == {"heldout_cameras": AS_TRAINED}


def test_render_writes_orbit_and_expression_videos(trained, tmp_path):
    run, _ = trained
    paths = render_videos(RenderConfig(run, out=tmp_path, orbit_frames=6))
    orbit = imageio.mimread(paths[0])
    expressions = imageio.mimread(paths[1])
    assert len(orbit) == 6 and orbit[0].shape == (48, 32, 3)
    assert len(expressions) == 2 * 4 and expressions[0].shape == (48, 2 * 32, 3)  # truth | render
    assert np.std(orbit[0]) > 5  # the head is there, not a blank frame


def test_submission_passes_the_benchmark_checks(trained, tmp_path):
    run, _ = trained
    zip_path = submit(SubmitConfig(run, out=tmp_path / "submission.zip"))
    expected = {submission_entry(443, "FREE", s): 4 for s in ("222200046", "222200037", "222200039")}
    assert check_submission(zip_path, expected) == []
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == sorted(expected)
        (tmp_path / "v.mp4").write_bytes(zf.read(submission_entry(443, "FREE", "222200037")))
    frame = imageio.mimread(tmp_path / "v.mp4", memtest=False)[0]
    assert frame.shape == (nersemble.BENCHMARK_HEIGHT, nersemble.BENCHMARK_WIDTH, 3) and frame.dtype == np.uint8


def test_submission_refuses_a_non_benchmark_capture(trained, tiny_capture, tmp_path):
    run, _ = trained
    with pytest.raises(SystemExit, match="not a participant id"):
        main(["submit", str(run), "--capture", str(tiny_capture), "--out", str(tmp_path / "s.zip")])
    other = Path(shutil.copytree(tiny_capture, tmp_path / "999"))
    with pytest.raises(SystemExit, match="participant 999 is not in the NeRSemble NVS benchmark"):
        main(["submit", str(run), "--capture", str(other), "--out", str(tmp_path / "s.zip")])
    assert not (tmp_path / "s.zip").exists()


@pytest.mark.slow
def test_refine_tracking_fits_the_heldout_sequences_without_reading_the_heldout_cameras(trained, tmp_path):
    """The same fitted tracking whether the held-out cameras' frames of the held-out sequence are the capture's or
    noise: the fit never reads them (they are ground truth only), while the scores see the noise."""
    run, capture = trained
    avatar = load_avatar(RunLayout(run).avatar)
    (seq,) = avatar.split.heldout_sequences
    rng = np.random.default_rng(0)
    copies = {name: Path(shutil.copytree(capture, tmp_path / name / capture.name)) for name in ("capture", "noise")}
    cache = FrameCache.open(copies["noise"] / "cache" / Path(avatar.provenance["cache"]).name)
    for serial in avatar.split.heldout_serials:
        frames = cache.array(seq, serial)
        np.save(frames_path(cache.root, seq, serial), rng.integers(0, 256, frames.shape, dtype=np.uint8))
    fit = TrackConfig(capture_iterations=(0, 5))
    metrics = {
        name: run_eval(EvalConfig(run, capture=copy, out=tmp_path / name / "eval", refine_tracking=True, track=fit))
        for name, copy in copies.items()
    }
    fitted = {name: np.load(tmp_path / name / "eval" / "refined_tracking" / f"{seq}.npz") for name in copies}
    for key in ("expression", "rotation", "translation", "scale", "timesteps", "residual", "iou"):
        np.testing.assert_array_equal(fitted["capture"][key], fitted["noise"][key])
    assert np.abs(fitted["capture"]["expression"] - FrameCache.open(cache.root).tracking(seq).expression).max() > 1e-3
    for name in copies:
        assert metrics[name]["tracking"] == {"heldout_cameras": AS_TRAINED, "heldout_sequences": REFINED}
        assert json.loads((tmp_path / name / "eval" / "metrics.json").read_text()) == metrics[name]
    scores = {name: m["heldout_sequences"]["per_camera"] for name, m in metrics.items()}
    for serial in avatar.split.train_serials:  # the same renders (one fitted tracking) against the same frames
        assert scores["capture"][serial]["psnr"] == scores["noise"][serial]["psnr"]
    for serial in avatar.split.heldout_serials:  # ... and against noise: these frames were read, for scoring only
        assert scores["noise"][serial]["psnr"] < scores["capture"][serial]["psnr"] - 5

    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--split", "heldout_cameras", "train", "--refine-tracking"])
    assert "--refine-tracking refits the held-out sequences ['FREE'], which none of the splits" in str(e.value)
    assert "\n" not in str(e.value)
