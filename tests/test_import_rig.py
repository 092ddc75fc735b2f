"""`npga import-rig`: calibrations in OpenCV FileStorage, JSON and COLMAP text, written here by hand, imported
into captures that the capture reader opens with the same cameras and frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from npga import cli
from npga.cameras import Camera, look_at
from npga.data.cache import FrameCache
from npga.data.capture import Capture
from npga.data.prepare import PrepareConfig, prepare
from npga.data.rig import import_rig, read_calibration
from npga.io.video import read_video, write_video
from tests.helpers.small_captures import rgb_frame

W, H, T = 64, 48, 3
NAMES = ("cam_a", "camb", "left3")
CENTRE = np.array([0.02, -0.01, 0.03])  # the scene centre the cameras look at


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def rig() -> dict[str, Camera]:
    """Ground truth: three cameras about CENTRE, intrinsics in npga's convention (pixel centres at +0.5)."""
    cams = {}
    for k, name in enumerate(NAMES):
        a = np.deg2rad(-25 + 25 * k)
        eye = CENTRE + np.array([np.sin(a), 0.1 * k - 0.1, np.cos(a)])
        K = np.array([[70.0 + k, 0, W / 2 + 1.5 * k], [0, 71.0 - k, H / 2 - k], [0, 0, 1]])
        cams[name] = Camera(K=K, world_2_cam=look_at(eye, CENTRE), width=W, height=H, serial=name)
    return cams


def frames_of(k: int) -> list[np.ndarray]:
    return [rgb_frame(k, t, (W, H)) for t in range(T)]


def write_videos(folder: Path, n_frames: int = T, size: tuple[int, int] = (W, H), names=NAMES) -> Path:
    for k, name in enumerate(names):
        write_video(folder / f"{name}.mp4", (rgb_frame(k, t, size) for t in range(n_frames)), fps=30, quality=10)
    return folder


def write_opencv_yaml(path: Path, cams: dict[str, Camera], dist: dict[str, np.ndarray] | None = None, **edit) -> Path:
    """EasyMocap-style flat keys; K in OpenCV's convention (top-left pixel centre at 0, 0), R as Rodrigues
    for the first camera and as a matrix for the others."""
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("names", list(cams))
    for i, (name, c) in enumerate(cams.items()):
        K = c.K.copy()
        K[:2, 2] -= 0.5
        R, t = c.world_2_cam[:3, :3], c.world_2_cam[:3, 3]
        fs.write(f"K_{name}", edit.get(f"K_{name}", K))
        if i == 0:
            fs.write(f"rvec_{name}", cv2.Rodrigues(R)[0])
        else:
            fs.write(f"R_{name}", edit.get(f"R_{name}", R))
        fs.write(f"T_{name}", t.reshape(3, 1))
        fs.write(f"dist_{name}", (dist or {}).get(name, np.zeros((1, 5))))
        if f"width_{name}" in edit:
            fs.write(f"width_{name}", edit[f"width_{name}"])
            fs.write(f"height_{name}", H)
    fs.release()
    return path


def quaternion(R: np.ndarray) -> np.ndarray:
    """Hamilton (w, x, y, z) of a rotation matrix (Shepperd's method; w >= 0)."""
    tr = np.trace(R)
    if tr > 0:
        s = 2 * np.sqrt(1 + tr)
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(1 + R[i, i] - R[j, j] - R[k, k])
        q = np.zeros(4)
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = s / 4
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def write_colmap(folder: Path, cams: dict[str, Camera]) -> Path:
    """cameras.txt (PINHOLE, K as it is: COLMAP also puts pixel centres at +0.5) and images.txt with NAME
    `<camera>/000000.png` (the camera name is the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = ["# Image list with two lines of data per image:"]
    for i, (name, c) in enumerate(cams.items(), start=1):
        fx, fy, cx, cy = c.K[0, 0], c.K[1, 1], c.K[0, 2], c.K[1, 2]
        cam_lines.append(f"{i} PINHOLE {W} {H} {float(fx)!r} {float(fy)!r} {float(cx)!r} {float(cy)!r}")
        q, t = quaternion(c.world_2_cam[:3, :3]), c.world_2_cam[:3, 3]
        img_lines.append(
            f"{i} {' '.join(repr(float(v)) for v in q)} {' '.join(repr(float(v)) for v in t)} {i} {name}/000000.png"
        )
        img_lines.append("1.0 2.0 -1" if i == 1 else "")
    (folder / "cameras.txt").write_text("\n".join(cam_lines) + "\n")
    (folder / "images.txt").write_text("\n".join(img_lines) + "\n")
    return folder


def check_projections(out: Path, truth: dict[str, Camera]) -> None:
    cams = Capture.open(out).cameras()
    assert set(cams) == set(truth)
    points = np.concatenate([CENTRE[None], CENTRE + np.random.default_rng(0).normal(scale=0.05, size=(5, 3))])
    for name, c in truth.items():
        uv, _ = c.project(points)
        uv2, _ = cams[name].project(points)
        assert np.abs(uv2 - uv).max() < 1e-3, name  # well under the 0.5 px of a pixel-convention slip


def check_frames(out: Path, seq: str = "IMPORTED") -> None:
    capture = Capture.open(out)
    for k, name in enumerate(NAMES):
        got = [rgb for _, rgb, _ in capture.read_frames(seq, name)]
        assert len(got) == T
        for t, rgb in enumerate(got):
            assert psnr(rgb, rgb_frame(k, t, (W, H))) > 35


def test_opencv_yaml_colmap_and_json_import_to_the_same_cameras(tmp_path):
    truth = rig()
    videos = write_videos(tmp_path / "videos")
    yml = write_opencv_yaml(tmp_path / "calib.yml", truth)
    colmap = write_colmap(tmp_path / "sparse", truth)
    cams = {}
    for name, c in truth.items():
        K = c.K.copy()
        K[:2, 2] -= 0.5
        R, t = c.world_2_cam[:3, :3], c.world_2_cam[:3, 3]
        cams[name] = {
            "K": K.tolist(),
            "dist": None,
            "rvec": cv2.Rodrigues(R)[0].ravel().tolist(),
            "tvec": t.tolist(),
            "width": W,
            "height": H,
        }
    js = tmp_path / "calib.json"
    js.write_text(json.dumps({"cameras": cams}))

    res = import_rig(videos, yml, tmp_path / "from_yml")
    assert res.alpha == "none" and res.undistorted == () and (res.width, res.height, res.n_frames) == (W, H, T)
    check_projections(tmp_path / "from_yml", truth)
    check_frames(tmp_path / "from_yml")
    assert not Capture.open(tmp_path / "from_yml").has_alpha

    for calib in (colmap, colmap / "images.txt", js):
        out = tmp_path / f"from_{calib.name}"
        import_rig(videos, calib, out)
        check_projections(out, truth)
    check_frames(tmp_path / "from_sparse")


def test_undistortion_recovers_the_ideal_frames(tmp_path):
    truth = rig()
    dist = np.array([[-0.25, 0.08, 0.002, -0.001, 0.0]])
    videos = tmp_path / "videos"
    for k, (name, c) in enumerate(truth.items()):
        K = c.K.copy()
        K[:2, 2] -= 0.5  # OpenCV pixel convention, as cv2 works in
        # Distort: each pixel of the distorted image shows the ideal image at its undistorted position.
        grid = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 1, 2).astype(np.float64)
        ideal_xy = cv2.undistortPoints(grid, K, dist, P=K).reshape(H, W, 2).astype(np.float32)
        distorted = [cv2.remap(f, ideal_xy[..., 0], ideal_xy[..., 1], cv2.INTER_CUBIC) for f in frames_of(k)]
        write_video(videos / f"{name}.mp4", distorted, fps=30, quality=10)
        assert psnr(distorted[0], frames_of(k)[0]) < 30  # the distortion is visible
    yml = write_opencv_yaml(tmp_path / "calib.yaml", truth, dist={n: dist for n in NAMES})
    res = import_rig(videos, yml, tmp_path / "out")
    assert res.undistorted == NAMES
    capture = Capture.open(tmp_path / "out")
    b = 6  # pixels near the border map outside the distorted sensor
    for k, name in enumerate(NAMES):
        for t, rgb, _ in capture.read_frames("IMPORTED", name):
            assert psnr(rgb[b:-b, b:-b], frames_of(k)[t][b:-b, b:-b]) > 35
    check_projections(tmp_path / "out", truth)


def test_image_folders_and_masks_become_frames_and_alpha_maps(tmp_path):
    truth = rig()
    y, x = np.mgrid[0:H, 0:W]
    for k, name in enumerate(NAMES):
        for t, f in enumerate(frames_of(k)):
            (tmp_path / "frames" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "masks" / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "frames" / name / f"{t:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            mask = (((x - W / 2 - 2 * t - k) ** 2 + (y - H / 2) ** 2) < 12**2).astype(np.uint8) * 255
            cv2.imwrite(str(tmp_path / "masks" / name / f"{t:05d}.png"), mask)
    yml = write_opencv_yaml(tmp_path / "calib.yml", truth)
    res = import_rig(tmp_path / "frames", yml, tmp_path / "out", masks=tmp_path / "masks", sequence="EXP-1", fps=24)
    assert res.alpha == "masks"
    capture = Capture.open(tmp_path / "out")
    assert capture.has_alpha and capture.sequences == ("EXP-1",)
    check_frames(tmp_path / "out", "EXP-1")
    for name in NAMES:
        for t, _, alpha in capture.read_frames("EXP-1", name):
            mask = cv2.imread(str(tmp_path / "masks" / name / f"{t:05d}.png"), cv2.IMREAD_GRAYSCALE)
            assert np.mean((alpha > 127) != (mask > 127)) < 0.01
    # `npga prepare` reads the imported capture unchanged (no tracking: all frames are cached without it).
    cache = FrameCache.open(prepare(PrepareConfig(capture=tmp_path / "out", height=None)))
    assert cache.sequences == ("EXP-1",) and (cache.width, cache.height) == (W, H)


def test_background_plates_give_alpha_by_differencing(tmp_path):
    truth = rig()
    y, x = np.mgrid[0:H, 0:W]
    disc = ((x - W / 2) ** 2 + (y - H / 2) ** 2) < 10**2
    for k, name in enumerate(NAMES):
        plate = rgb_frame(k, 0, (W, H))
        (tmp_path / "plates").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "plates" / f"{name}.png"), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR))
        frames = []
        for _ in range(T):
            f = plate.copy()
            f[disc] = 255 - f[disc]  # a "head" far from the plate's colours
            f[disc, 1] = 20
            frames.append(f)
        write_video(tmp_path / "videos" / f"{name}.mp4", frames, fps=30, quality=10)
    yml = write_opencv_yaml(tmp_path / "calib.yml", truth)
    res = import_rig(tmp_path / "videos", yml, tmp_path / "out", background_plates=tmp_path / "plates")
    assert res.alpha == "background plates"
    capture = Capture.open(tmp_path / "out")
    for name in NAMES:
        for _, _, alpha in capture.read_frames("IMPORTED", name):
            assert np.mean((alpha > 127) != disc) < 0.02


def test_cli_import_rig(tmp_path, capsys):
    truth = rig()
    videos = write_videos(tmp_path / "videos")
    yml = write_opencv_yaml(tmp_path / "calib.yml", truth)
    cli.main(
        [
            "import-rig",
            "--videos",
            str(videos),
            "--calibration",
            str(yml),
            "--out",
            str(tmp_path / "out"),
            "--sequence",
            "FREE",
        ]
    )
    printed = capsys.readouterr().out
    assert "silhouette" in printed and "3 cameras x 3 frames" in printed
    assert Capture.open(tmp_path / "out").sequences == ("FREE",)
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "x").write_text("keep")
    with pytest.raises(SystemExit, match="out2 exists and is not empty"):
        cli.main(["import-rig", "--videos", str(videos), "--calibration", str(yml), "--out", str(tmp_path / "out2")])
    assert (tmp_path / "out2" / "x").read_text() == "keep"


# ---- bad input: one ValueError naming the file and the problem, nothing written ----------------------------


def _bad_rotation(kind: str) -> np.ndarray:
    R = rig()["camb"].world_2_cam[:3, :3]
    return {"singular": R * np.array([1, 1, 0]), "scaled": 1.1 * R, "mirrored": R * np.array([1, 1, -1])}[kind]


def _yml_edit(**edit):
    def make(tmp: Path) -> tuple[Path, Path]:
        return write_videos(tmp / "videos"), write_opencv_yaml(tmp / "calib.yml", rig(), **edit)

    return make


def _missing_video(tmp):
    videos = write_videos(tmp / "videos")
    (videos / "camb.mp4").unlink()
    return videos, write_opencv_yaml(tmp / "calib.yml", rig())


def _extra_video(tmp):
    videos = write_videos(tmp / "videos", names=(*NAMES, "stray"))
    return videos, write_opencv_yaml(tmp / "calib.yml", rig())


def _short_video(tmp):
    videos = write_videos(tmp / "videos")
    write_video(videos / "left3.mp4", frames_of(2)[:2], fps=30, quality=10)
    return videos, write_opencv_yaml(tmp / "calib.yml", rig())


def _other_size(tmp):
    videos = write_videos(tmp / "videos")
    write_video(videos / "left3.mp4", [rgb_frame(2, t, (W, H + 2)) for t in range(T)], fps=30, quality=10)
    return videos, write_opencv_yaml(tmp / "calib.yml", rig())


def _half_resolution_intrinsics(tmp):
    cams = {n: c.resized(2 * W, 2 * H) for n, c in rig().items()}  # calibrated at twice the size
    return write_videos(tmp / "videos"), write_opencv_yaml(tmp / "calib.yml", cams)


def _colmap_nan(tmp):
    folder = write_colmap(tmp / "sparse", rig())
    text = (folder / "images.txt").read_text().splitlines()
    parts = text[3].split()  # camera 'camb'
    parts[5] = "nan"
    text[3] = " ".join(parts)
    (folder / "images.txt").write_text("\n".join(text) + "\n")
    return write_videos(tmp / "videos"), folder


def _yml_nan(tmp):
    K = rig()["left3"].K.copy()
    K[0, 0] = np.nan
    return _yml_edit(K_left3=K)(tmp)


BAD = {
    "missing video": (_missing_video, ["calib.yml", "camb"]),
    "video without calibration": (_extra_video, ["stray.mp4", "not in the calibration"]),
    "frame counts differ": (_short_video, ["left3.mp4", "2 frames"]),
    "sizes differ": (_other_size, ["left3.mp4", "64x50"]),
    "singular rotation": (_yml_edit(R_camb=_bad_rotation("singular")), ["calib.yml", "camb", "not a rotation"]),
    "scaled rotation": (_yml_edit(R_camb=_bad_rotation("scaled")), ["calib.yml", "camb", "not a rotation"]),
    "mirrored rotation": (_yml_edit(R_camb=_bad_rotation("mirrored")), ["calib.yml", "camb", "not a rotation"]),
    "intrinsics of another resolution": (_half_resolution_intrinsics, ["calib.yml", "principal point", "cam_a"]),
    "width differs from the video": (_yml_edit(width_camb=2 * W), ["calib.yml", "camb", "128x48"]),
    "NaN in K": (_yml_nan, ["calib.yml", "left3", "NaN"]),
    "NaN in COLMAP translation": (_colmap_nan, ["images.txt:4", "NaN"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_one_line_naming_the_file_and_writes_nothing(tmp_path, case):
    make, expected = BAD[case]
    videos, calib = make(tmp_path)
    out = tmp_path / "capture"
    with pytest.raises(ValueError) as err:
        import_rig(videos, calib, out)
    message = str(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, (part, message)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".capture")]  # no temporary folder left


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import npga.data.rig as rig_module

    calls = []

    def failing_write(path, frames, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise ValueError(f"{path}: disk full")
        return write_video(path, frames, **kw)

    monkeypatch.setattr(rig_module, "write_video", failing_write)
    videos = write_videos(tmp_path / "videos")
    with pytest.raises(ValueError, match="disk full"):
        import_rig(videos, write_opencv_yaml(tmp_path / "c.yml", rig()), tmp_path / "capture")
    assert len(calls) == 2 and calls[0].is_relative_to(tmp_path)
    assert not (tmp_path / "capture").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".capture")]


def test_calibration_readers_agree(tmp_path):
    truth = rig()
    a = read_calibration(write_opencv_yaml(tmp_path / "c.yml", truth))
    b = read_calibration(write_colmap(tmp_path / "sparse", truth))
    for name in NAMES:
        np.testing.assert_allclose(a[name].K, truth[name].K, atol=1e-9)
        np.testing.assert_allclose(b[name].K, truth[name].K, atol=1e-9)
        np.testing.assert_allclose(a[name].world_2_cam, truth[name].world_2_cam, atol=1e-9)
        np.testing.assert_allclose(b[name].world_2_cam, truth[name].world_2_cam, atol=1e-9)
        assert b[name].size == (W, H) and a[name].size is None and a[name].dist is not None


def test_filestorage_node_per_camera_and_colmap_opencv_model(tmp_path):
    """The other documented spellings: a map node per camera in FileStorage; COLMAP's OPENCV model."""
    c = rig()["camb"]
    K = c.K.copy()
    K[:2, 2] -= 0.5
    fs = cv2.FileStorage(str(tmp_path / "c.yaml"), cv2.FILE_STORAGE_WRITE)
    fs.write("cameras", ["camb"])
    fs.startWriteStruct("camb", cv2.FileNode_MAP)
    fs.write("camera_matrix", K)
    fs.write("distortion_coefficients", np.array([0.1, -0.02, 0.0, 0.0]))
    fs.write("Rot", c.world_2_cam[:3, :3])
    fs.write("tvec", c.world_2_cam[:3, 3])
    fs.write("width", W)
    fs.write("height", H)
    fs.endWriteStruct()
    fs.release()
    cam = read_calibration(tmp_path / "c.yaml")["camb"]
    np.testing.assert_allclose(cam.K, c.K)
    np.testing.assert_allclose(cam.world_2_cam, c.world_2_cam, atol=1e-12)
    assert cam.size == (W, H) and cam.distorted and cam.dist.tolist() == [0.1, -0.02, 0.0, 0.0]

    sparse = tmp_path / "sparse"
    sparse.mkdir()
    (sparse / "cameras.txt").write_text(f"7 OPENCV {W} {H} 70 71 32.5 24.5 0.1 -0.02 0.001 0.002\n")
    q = quaternion(c.world_2_cam[:3, :3])
    t = c.world_2_cam[:3, 3]
    line = f"3 {' '.join(map(str, q))} {' '.join(map(str, t))} 7 camb.jpg"
    (sparse / "images.txt").write_text(f"# comment\n{line}\n\n{line.replace('3 ', '4 ', 1)}\n\n")
    cam = read_calibration(sparse / "cameras.txt")["camb"]
    np.testing.assert_allclose(cam.K, [[70, 0, 32.5], [0, 71, 24.5], [0, 0, 1]])
    np.testing.assert_allclose(cam.dist, [0.1, -0.02, 0.001, 0.002])
    np.testing.assert_allclose(cam.world_2_cam, c.world_2_cam, atol=1e-9)


def test_odd_frame_sizes_are_cropped_to_even(tmp_path):
    """Odd-sized frames lose their last column (H.264); K stays, so projections still agree."""
    truth = rig()
    videos = tmp_path / "videos"
    for k, name in enumerate(NAMES):
        (videos / name).mkdir(parents=True)
        for t in range(T):
            f = np.pad(rgb_frame(k, t, (W, H)), ((0, 0), (0, 1), (0, 0)), mode="edge")  # W + 1 wide
            cv2.imwrite(str(videos / name / f"{t}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    res = import_rig(videos, write_opencv_yaml(tmp_path / "c.yml", truth), tmp_path / "out")
    assert (res.width, res.height) == (W, H)
    assert read_video(tmp_path / "out" / "sequences" / "IMPORTED" / "images" / "cam_camb.mp4").shape == (T, H, W, 3)
    check_projections(tmp_path / "out", truth)
