"""`npga export`: PLY and .splat files that other tools read back into the avatar's own render."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from npga.avatar.deform import Gaussians
from npga.avatar.file import save_avatar
from npga.avatar.render import render_gaussians
from npga.cameras import stack_cameras
from npga.cli import main
from npga.data.tracking import Tracking
from tests.helpers.small_avatars import random_avatar

# The original 3D Gaussian Splatting layout, written out here rather than taken from the code under test.
STANDARD_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(45)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)
C0 = 0.28209479177387814


def _read_ply(path) -> np.ndarray:
    """The vertex records of a PLY as trimesh's parser reads them (not our writer's code)."""
    cloud = trimesh.load(path, process=False)
    assert isinstance(cloud, trimesh.PointCloud)
    return cloud.metadata["_ply_raw"]["vertex"]["data"]


@pytest.fixture
def avatar_file(tmp_path):
    avatar = random_avatar(torch.Generator().manual_seed(3), cnn=False)
    avatar.params["opacities"] = avatar.params["opacities"] + 2.0  # mostly opaque: a visible head of splats
    return avatar, save_avatar(avatar, tmp_path / "a.npga")


def test_ply_read_back_by_an_independent_parser_renders_like_the_avatar(avatar_file, tmp_path):
    avatar, path = avatar_file
    main(["export", str(path), "--ply", str(tmp_path / "f.ply"), "--sequence", "A", "--frame", "3", "--device", "cpu"])
    v = _read_ply(tmp_path / "f.ply")
    assert list(v.dtype.names) == STANDARD_PROPERTIES
    assert all(v.dtype[n] == np.dtype("<f4") for n in v.dtype.names) and len(v) == avatar.n_gaussians
    col = lambda *names: torch.tensor(np.stack([v[n] for n in names], -1), dtype=torch.float32)
    assert col("nx", "ny", "nz").abs().max() == 0 and col(*(f"f_rest_{i}" for i in range(45))).abs().max() == 0
    g = Gaussians(
        means=col("x", "y", "z"),
        quats=col("rot_0", "rot_1", "rot_2", "rot_3"),
        scales=col("scale_0", "scale_1", "scale_2").exp(),
        opacities=torch.sigmoid(col("opacity")[:, 0]),
        colors=0.5 + C0 * col("f_dc_0", "f_dc_1", "f_dc_2"),
        features=None,
        residuals=None,
    )
    cam = avatar.cameras["c0"]
    viewmats, Ks = stack_cameras([cam])
    from_file, _, _ = render_gaussians(g, viewmats, Ks, cam.width, cam.height, avatar.background)
    expected, _ = avatar.render("A", 3, [cam])
    assert expected.std() > 0.02  # the splats are in view
    assert (from_file.clamp(0, 1) - expected).abs().max() < 1e-3
    # another frame is another pose: the file really is frame 3
    other, _ = avatar.render("A", 0, [cam])
    assert (other - expected).abs().max() > 1e-2


def test_splat_records_and_all_frames(avatar_file, tmp_path):
    avatar, path = avatar_file
    main(
        [
            "export",
            str(path),
            "--ply",
            str(tmp_path / "frames"),
            "--format",
            "splat",
            "--all-frames",
            "--sequence",
            "B",
            "--device",
            "cpu",
        ]
    )
    files = sorted((tmp_path / "frames").glob("*.splat"))
    assert [f.name for f in files] == [f"frame_{t:05d}.splat" for t in range(3)]
    raw = np.frombuffer(files[2].read_bytes(), dtype=np.uint8).reshape(-1, 32)  # 32 bytes per Gaussian
    position = raw[:, :12].copy().view("<f4")  # (N, 3)
    scale = raw[:, 12:24].copy().view("<f4")
    rgba = raw[:, 24:28].astype(np.float64) / 255
    rot = (raw[:, 28:32].astype(np.float64) - 128) / 128
    g = avatar.gaussians(*avatar.tracked("B", 2))
    order = [int(np.argmin(np.abs(g.means.numpy() - p).sum(1))) for p in position]
    assert sorted(order) == list(range(avatar.n_gaussians))  # every Gaussian once
    assert np.allclose(position, g.means.numpy()[order], atol=1e-6)
    assert np.allclose(scale, g.scales.numpy()[order], rtol=1e-5)
    assert np.abs(rgba[:, :3] - g.colors.numpy()[order]).max() <= 0.5 / 255 + 1e-6
    assert np.abs(rgba[:, 3] - g.opacities.numpy()[order]).max() <= 0.5 / 255 + 1e-6
    q = g.quats.numpy()[order]
    assert np.abs(rot - q / np.linalg.norm(q, axis=1, keepdims=True)).max() <= 1 / 128  # w x y z
    importance = g.opacities.numpy()[order] * g.scales.numpy()[order].prod(1)
    assert (np.diff(importance) <= 1e-12).all()  # most visible first


def test_canonical_and_tracking_sources_and_bad_input(avatar_file, tmp_path):
    avatar, path = avatar_file
    main(["export", str(path), "--ply", str(tmp_path / "c.ply"), "--canonical", "--device", "cpu"])
    v = _read_ply(tmp_path / "c.ply")
    means = np.stack([v["x"], v["y"], v["z"]], -1)
    assert np.allclose(means, avatar.params["means"].numpy(), atol=1e-7)  # stored canonical positions

    T = 4
    good = Tracking(
        expression=np.zeros((T, 4), np.float32),
        identity=np.zeros(3, np.float32),
        rotation=np.repeat(np.eye(3)[None], T, 0),
        translation=np.zeros((T, 3)),
        scale=np.ones(T),
        timesteps=np.arange(T),
    )
    good.save(tmp_path / "codes.npz")
    main(
        [
            "export",
            str(path),
            "--ply",
            str(tmp_path / "t.ply"),
            "--tracking",
            str(tmp_path / "codes.npz"),
            "--frame",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert (tmp_path / "t.ply").is_file()
    Tracking(**{**good.__dict__, "expression": np.zeros((T, 7), np.float32)}).save(tmp_path / "wide.npz")
    with pytest.raises(SystemExit, match="wide.npz: 7-d codes; .* takes 4-d codes of the 'synthetic' head model"):
        main(["export", str(path), "--ply", str(tmp_path / "w.ply"), "--tracking", str(tmp_path / "wide.npz")])
    with pytest.raises(SystemExit, match="frame 9 out of range for A .5 frames."):
        main(["export", str(path), "--ply", str(tmp_path / "x.ply"), "--sequence", "A", "--frame", "9"])
    with pytest.raises(SystemExit, match="no sequence 'NOPE'"):
        main(["export", str(path), "--ply", str(tmp_path / "x.ply"), "--sequence", "NOPE"])
    assert not (tmp_path / "w.ply").exists() and not (tmp_path / "x.ply").exists()


def test_a_disk_that_fills_during_all_frames_leaves_no_truncated_file(avatar_file, tmp_path, monkeypatch):
    """Frame 1's write fails half way: frame 0 stays whole, frame 1 has no file under its name (nor a temporary
    one), and the command ends with one line naming it."""
    _, path = avatar_file
    write_bytes, calls = Path.write_bytes, []

    def fill_up(self, data):
        calls.append(self)
        if len(calls) == 2:
            write_bytes(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", fill_up)
    out = tmp_path / "frames"
    with pytest.raises(SystemExit, match=rf"npga export: error: {out / 'frame_00001.ply'}: No space left on device"):
        main(["export", str(path), "--ply", str(out), "--all-frames", "--sequence", "B", "--device", "cpu"])
    assert sorted(p.name for p in out.iterdir()) == ["frame_00000.ply"]
    assert len(_read_ply(out / "frame_00000.ply")) == random_avatar(torch.Generator().manual_seed(3)).n_gaussians
