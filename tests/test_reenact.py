"""`npga reenact`: cross-reenactment between two synthetic people end to end (the driven mouth opens when the
driver's does, measured on the written video), driving from a tracking file without a camera, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from npga.avatar.file import save_avatar
from npga.cli import main
from npga.data.tracking import Tracking, TrackingExtras
from npga.drive.fit import head_frame, head_to_camera, reference_view
from npga.geometry import centred_intrinsics
from npga.io.video import probe_video, read_video, write_video
from tests.helpers.head_avatars import filmed, head_avatar
from tests.helpers.small_avatars import random_avatar

W, H = 66, 96
MOUTH = np.array([0.0, -0.047, 0.078])  # the synthetic head's lips (npga/headmodel/synthetic.py), head units


def lip_row(image: np.ndarray, center: tuple[float, float], half: int = 8) -> float:
    """Row (pixels, within the box) of the redness-weighted centre of the lips in a box around `center` (x, y)
    of an RGB image (H, W, 3): it moves down as the jaw drops the lower lip. (The synthetic head has no mouth
    cavity: an open jaw stretches the lips down rather than showing a dark inside.)"""
    x, y = (int(round(v)) for v in center)
    box = image[y - half : y + half + 1, x - half : x + half + 1].astype(np.float64)
    redness = box[..., 0] - box[..., 1]
    weight = np.clip(redness - np.median(redness), 0, None)
    rows = np.arange(len(box))[:, None]
    return float((weight * rows).sum() / weight.sum())


@pytest.mark.slow
def test_cross_reenactment_opens_the_driven_mouth_when_the_drivers_opens(tmp_path):
    a, b = head_avatar(0), head_avatar(1)  # two people, as `npga synth --seed 0` and `--seed 1` make them
    files = [save_avatar(a, tmp_path / "a.npga"), save_avatar(b, tmp_path / "b.npga")]
    head = head_frame(a)
    rotation, distance, focal = reference_view(a, head)
    jaw = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    codes = a.codes.mean.repeat(len(jaw), 1)
    codes[:, 0] = jaw  # the driver opens the mouth steadily; nothing else moves
    pose = head_to_camera(rotation, torch.tensor([0.0, 0.005, 1.05 * distance]), head)
    K = torch.from_numpy(centred_intrinsics(focal * H, W, H)).float()
    frames, _ = filmed(a, codes, pose.expand(len(jaw), 4, 4), K, W, H)
    write_video(tmp_path / "driver.mp4", frames, fps=25, quality=10)
    (tmp_path / "K.json").write_text(json.dumps({"K": K.tolist(), "width": W, "height": H}))
    out = tmp_path / "out"
    main(
        [
            "reenact",
            "--avatar",
            str(files[1]),
            "--video",
            str(tmp_path / "driver.mp4"),
            "--track-with",
            str(files[0]),
            "--intrinsics",
            str(tmp_path / "K.json"),
            "--out",
            str(out),
        ]
    )

    tracked = Tracking.load(out / "tracking.npz")
    assert np.corrcoef(tracked.expression[:, 0], jaw.numpy())[0, 1] > 0.9  # the tracker saw the jaw open
    p = pose.double().numpy()
    cam = p[:3, :3] @ MOUTH + p[:3, 3]
    mouth = (float(K[0, 0]) * cam[0] / cam[2] + W / 2, float(K[1, 1]) * cam[1] / cam[2] + H / 2)
    driver_rows = [lip_row(f, mouth) for f in frames]
    driven_rows = [lip_row(f, mouth) for f in read_video(out / "reenact.mp4")]
    assert driver_rows[-1] - driver_rows[0] > 0.5  # the measure sees the driver's mouth open
    assert driven_rows[-1] - driven_rows[0] > 0.5  # ... and the driven person's
    assert np.corrcoef(driver_rows, driven_rows)[0, 1] > 0.8
    for name, width in (("reenact", W), ("novel_views", W), ("side_by_side", 3 * W)):
        info = probe_video(out / f"{name}.mp4")
        assert (info.n_frames, info.width, info.height) == (len(jaw), width, H)


def _tracking(n: int, dim: int) -> Tracking:
    rng = np.random.default_rng(0)
    poses = np.repeat(np.eye(3)[None], n, 0)
    return Tracking(
        expression=rng.normal(size=(n, dim)) * 0.1,
        identity=np.zeros(0),
        rotation=poses,
        translation=np.zeros((n, 3)),
        scale=np.ones(n),
        timesteps=np.arange(n),
    )


def test_reenact_from_a_tracking_file_without_a_camera_films_with_the_avatars_frontal_camera(tmp_path):
    avatar = random_avatar(torch.Generator().manual_seed(0))
    file = save_avatar(avatar, tmp_path / "b.npga")
    _tracking(4, avatar.config.expression_dim).save(tmp_path / "codes.npz")
    out = tmp_path / "out"
    main(
        [
            "reenact",
            "--avatar",
            str(file),
            "--tracking",
            str(tmp_path / "codes.npz"),
            "--out",
            str(out),
            "--head-motion",
            "none",
        ]
    )
    cam = avatar.cameras["c0"]  # both rig cameras share one size, the frontal one among them
    for name, width in (("reenact", cam.width), ("novel_views", cam.width), ("side_by_side", 2 * cam.width)):
        info = probe_video(out / f"{name}.mp4")
        assert (info.n_frames, info.width, info.height) == (4, width, cam.height)
    assert not (out / "tracking.npz").exists()


def test_head_motion_none_holds_the_head_where_the_driver_moves_it(tmp_path):
    avatar = random_avatar(torch.Generator().manual_seed(0))
    file = str(save_avatar(avatar, tmp_path / "b.npga"))
    tracking = _tracking(4, avatar.config.expression_dim)
    tracking.expression[:] = 0.0  # one expression: only the head pose changes from frame to frame
    tracking.translation[:, 0] = np.linspace(0.0, 0.3, 4)  # the driver's head slides sideways
    tracking.save(tmp_path / "codes.npz")
    change = {}
    for motion in ("driver", "none"):
        out = tmp_path / motion
        main(
            [
                "reenact",
                "--avatar",
                file,
                "--tracking",
                str(tmp_path / "codes.npz"),
                "--out",
                str(out),
                "--head-motion",
                motion,
            ]
        )
        frames = read_video(out / "reenact.mp4").astype(np.float32)
        change[motion] = np.abs(frames[-1] - frames[0]).mean()
    assert change["driver"] > 5.0, "the driver's head motion does not show"
    assert change["none"] < 1.0, "--head-motion none still moves the head"


def test_reenact_refuses_codes_of_another_head_model_dimension_or_length(tmp_path):
    avatar = random_avatar(torch.Generator().manual_seed(0))  # a 4-d "synthetic" avatar
    file = str(save_avatar(avatar, tmp_path / "b.npga"))
    _tracking(3, 10).save(tmp_path / "dim10.npz")
    _tracking(3, 4).save(tmp_path / "flame.npz", TrackingExtras(head_model="flame"))
    _tracking(3, 4).save(tmp_path / "three.npz")
    write_video(tmp_path / "five.mp4", [np.zeros((48, 32, 3), np.uint8)] * 5, fps=25)
    out = tmp_path / "out"
    cases = [
        (
            ["--tracking", str(tmp_path / "dim10.npz")],
            "dim10.npz: 10-d codes; ",
        ),
        (["--tracking", str(tmp_path / "flame.npz")], "flame.npz: 4-d codes of the 'flame' head model; "),
        (
            ["--tracking", str(tmp_path / "three.npz"), "--video", str(tmp_path / "five.mp4")],
            "3 frames of codes, the video",
        ),
        ([], "give --tracking FILE, or --video VIDEO with --track-with AVATAR"),
        (["--track-with", file], "--track-with needs the --video"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            main(["reenact", "--avatar", file, "--out", str(out), *extra])
        assert message in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()
