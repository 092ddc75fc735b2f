"""Camera paths (keyframes interpolated into cameras) and `npga render --camera-path`."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from npga.avatar.file import save_avatar
from npga.camera_path import CameraPath, Keyframe, load_camera_path, path_cameras, save_camera_path
from npga.cli import main
from tests.helpers.small_avatars import random_avatar


def _path(**kw) -> CameraPath:
    keyframes = (
        Keyframe(time=0.0, position=(0.0, 0.0, 3.0), look_at=(0.0, 0.0, 0.0), fov=30.0),
        Keyframe(time=1.0, position=(1.0, 0.5, 3.0), look_at=(0.0, 0.0, 0.0), fov=40.0),
        Keyframe(time=3.0, position=(3.0, 1.5, 3.0), look_at=(0.0, 0.2, 0.0), up=(0.0, 1.0, 0.1), fov=60.0),
    )
    return CameraPath(keyframes=keyframes, **({"width": 40, "height": 60, "fps": 4.0} | kw))


def test_cameras_pass_through_every_keyframe_and_follow_a_straight_track_exactly():
    path = _path()
    cams = path_cameras(path)
    assert len(cams) == 3 * 4 + 1 and (cams[0].width, cams[0].height) == (40, 60)
    for k in path.keyframes:
        cam = cams[round(k.time * path.fps)]
        assert np.allclose(cam.center, k.position, atol=1e-9)
        px, depth = cam.project(np.array([k.look_at]))
        assert np.allclose(px[0], [20.0, 30.0], atol=1e-6) and depth[0] > 0  # looks at it, centred
        fy = 30.0 / np.tan(np.radians(k.fov) / 2)  # vertical field of view over 60 px
        assert np.isclose(cam.K[1, 1], fy) and np.isclose(cam.K[0, 0], fy)
        up_in_image = cam.world_2_cam[:3, :3] @ np.asarray(k.up)
        assert up_in_image[1] < 0  # world up points up the image (OpenCV y is down)
    # The three positions lie on one line at constant speed: the spline must keep every frame on it.
    for i, cam in enumerate(cams):
        assert np.allclose(cam.center, [i / 4, i / 8, 3.0], atol=1e-9), i


def test_path_file_round_trips_and_bad_files_name_the_problem(tmp_path):
    path = _path()
    assert load_camera_path(save_camera_path(path, tmp_path / "p.json")) == path
    good = json.loads((tmp_path / "p.json").read_text())
    cases = {
        "extra.json": (good | {"speed": 2}, r"extra.json: unknown key\(s\) \['speed'\]"),
        "kf.json": (good | {"keyframes": [good["keyframes"][0] | {"roll": 1}]}, r"kf.json: keyframe 0: unknown key"),
        "order.json": (good | {"keyframes": good["keyframes"][::-1]}, "order.json: keyframe times must increase"),
        "newer.json": (good | {"version": 2}, "newer.json: camera path version 2"),
        "foreign.json": ({"frames": []}, "foreign.json: not a camera path"),
        "short.json": (good | {"keyframes": [good["keyframes"][0] | {"position": [1, 2]}]}, "short.json: keyframe 0"),
        "long.json": (  # 1e8 s at 4 fps: 4e8 frames
            good | {"keyframes": [good["keyframes"][0], good["keyframes"][1] | {"time": 1e8}]},
            r"long.json: 1e\+08 s at 4 fps is 400000001 frames, more than 30000 \(are the keyframe times in seconds",
        ),
        "nan.json": (good | {"keyframes": [good["keyframes"][0] | {"time": float("nan")}]}, "nan.json: .* finite"),
    }
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        with pytest.raises(ValueError, match=pattern):
            load_camera_path(tmp_path / name)


@pytest.fixture
def avatar_file(tmp_path):
    avatar = random_avatar(torch.Generator().manual_seed(5), cnn=False)
    avatar.params["opacities"] = avatar.params["opacities"] + 2.0
    return avatar, save_avatar(avatar, tmp_path / "a.npga")


def test_render_along_orbit_capture_and_json_paths(avatar_file, tmp_path):
    avatar, file = avatar_file
    main(
        [
            "render",
            str(file),
            "--camera-path",
            "orbit",
            "--frames",
            "6",
            "--size",
            "40x60",
            "--out",
            str(tmp_path / "orbit.mp4"),
            "--device",
            "cpu",
        ]
    )
    video = imageio.mimread(tmp_path / "orbit.mp4")
    assert len(video) == 6 and video[0].shape == (60, 40, 3)
    assert not np.array_equal(video[0], video[1])  # the camera moves

    main(
        [
            "render",
            str(file),
            "--camera-path",
            "capture:c1",
            "--sequence",
            "B",
            "--png-alpha",
            "--background",
            "black",
            "--out",
            str(tmp_path / "pngs"),
            "--device",
            "cpu",
            "--precision",
            "float32",
        ]
    )
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{t:05d}.png" for t in range(3)]  # sequence B has 3 frames
    frame = imageio.imread(pngs[1])
    rgb, alpha = avatar.render("B", 1, [avatar.cameras["c1"]])  # rendered on the avatar's own background
    assert frame.shape == (48, 32, 4)
    assert np.abs(frame[..., 3] / 255.0 - alpha[0, ..., 0].numpy()).max() <= 0.5 / 255 + 1e-6
    on_black = rgb[0].numpy() - (1 - alpha[0].numpy()) * np.array(avatar.config.background)  # same splats on black
    assert np.abs(frame[..., :3] / 255.0 - on_black).max() <= 0.5 / 255 + 1e-5

    save_camera_path(_path(width=40, height=60, fps=2.0), tmp_path / "p.json")
    main(
        [
            "render",
            str(file),
            "--camera-path",
            str(tmp_path / "p.json"),
            "--out",
            str(tmp_path / "p.mp4"),
            "--device",
            "cpu",
        ]
    )
    assert len(imageio.mimread(tmp_path / "p.mp4")) == 3 * 2 + 1

    with pytest.raises(SystemExit, match="no camera 'nope'"):
        main(["render", str(file), "--camera-path", "capture:nope", "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(SystemExit, match="expected orbit, turntable"):
        main(["render", str(file), "--camera-path", "spiral", "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(SystemExit, match="--size '40by60'"):
        main(["render", str(file), "--camera-path", "orbit", "--size", "40by60", "--out", str(tmp_path / "x.mp4")])
    assert not (tmp_path / "x.mp4").exists()
