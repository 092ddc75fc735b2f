"""VHAP exports and NeRSemble FLAME tracking: read behind the capture API, converted to our head pose, trained on."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from data_tools.mesh_render import rasterize_mesh
from npga.cameras import Camera, look_at
from npga.config import load_config
from npga.data.capture import Capture
from npga.data.flame_tracking import load_nersemble_flame_tracking, write_flame_head
from npga.data.prepare import PrepareConfig, prepare
from npga.data.readers import open_capture
from npga.data.vhap import VhapCapture
from npga.headmodel import FlameHead
from npga.runs import RunLayout
from npga.train import TrainConfig, build_trainer
from tests.helpers.small_flame import flame_arrays, reference_lbs

E = 4
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def opengl_camera_to_world(world_2_cam: np.ndarray) -> np.ndarray:
    """By hand: the camera's centre and its axes in world coordinates, with OpenGL's y up and z backward."""
    R, t = world_2_cam[:3, :3], world_2_cam[:3, 3]
    right, down, forward = R  # rows: OpenCV camera axes in world coordinates
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, -down, -forward, -R.T @ t
    return m


def write_vhap(
    root: Path,
    cameras: dict[str, Camera],
    frames: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]],
    params: list[dict[str, np.ndarray]] | None,
) -> Path:
    """A VHAP export: cameras split over the train/val/test files as VHAP splits them (by camera)."""
    serials = list(cameras)
    split_of = {
        s: "train" if i < len(serials) - 2 else ("val" if i == len(serials) - 2 else "test")
        for i, s in enumerate(serials)
    }
    db: dict[str, list] = {"train": [], "val": [], "test": []}
    for (t, serial), (rgb, alpha) in sorted(frames.items()):
        cam, ci = cameras[serial], serials.index(serial)
        entry = {
            "timestep_index": t,
            "timestep_index_original": t,
            "timestep_id": f"frame_{t:05d}",
            "camera_index": ci,
            "camera_id": serial,
            "fl_x": cam.K[0, 0],
            "fl_y": cam.K[1, 1],
            "cx": cam.K[0, 2],
            "cy": cam.K[1, 2],
            "w": cam.width,
            "h": cam.height,
            "transform_matrix": opengl_camera_to_world(cam.world_2_cam).tolist(),
            "file_path": f"images/{t:05d}_{ci:02d}.png",
            "fg_mask_path": f"fg_masks/{t:05d}_{ci:02d}.png",
        }
        if params is not None:
            entry["flame_param_path"] = f"flame_param/{t:05d}.npz"
        for key, img in (("file_path", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), ("fg_mask_path", alpha)):
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / entry[key]), img)
        db[split_of[serial]].append(entry)
    for name, entries in db.items():
        (root / f"transforms_{name}.json").write_text(json.dumps({"frames": entries}))
    for t, p in enumerate(params or []):
        (root / "flame_param").mkdir(exist_ok=True)
        np.savez(root / "flame_param" / f"{t:05d}.npz", **p)
    return root


def vhap_params(rng: np.random.Generator, n: int, n_vertices: int = 162) -> list[dict[str, np.ndarray]]:
    """VHAP's per-timestep parameters (axis-angle poses), with one identity (shape + static offset)."""
    shape, offset = rng.normal(size=300), rng.normal(scale=1e-3, size=(1, n_vertices + 120, 3))  # + teeth rows
    return [
        {
            "shape": shape,
            "static_offset": offset,
            "expr": rng.normal(size=(1, E)),
            "rotation": rng.normal(scale=0.2, size=(1, 3)),
            "neck_pose": rng.normal(scale=0.1, size=(1, 3)),
            "jaw_pose": np.array([[rng.uniform(0, 0.3), 0.0, 0.0]]),
            "eyes_pose": rng.normal(scale=0.05, size=(1, 6)),
            "translation": rng.normal(scale=0.02, size=(1, 3)),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def _vhap_src(tiny_capture, tmp_path_factory):
    """Our synthetic tiny capture (2 timesteps, 6 cameras) re-written as a VHAP export, and its source."""
    cap = Capture.open(tiny_capture)
    seq, serials = cap.sequences[0], cap.serials[:6]
    cams = {s: c for s, c in cap.cameras().items() if s in serials}
    frames = {}
    for serial in serials:
        for t, rgb, alpha in cap.read_frames(seq, serial, [0, 1]):
            frames[(t, serial)] = (rgb, alpha)
    root = tmp_path_factory.mktemp("vhap_src") / "vhap"
    return write_vhap(root, cams, frames, vhap_params(np.random.default_rng(0), 2)), cap, frames


@pytest.fixture
def vhap_from_synthetic(_vhap_src, tmp_path):
    """The test's own copy of the VHAP export made from the synthetic capture."""
    root, cap, frames = _vhap_src
    return Path(shutil.copytree(root, tmp_path / "vhap")), cap, frames


def test_vhap_export_reads_back_the_same_cameras_and_images(vhap_from_synthetic):
    root, source, frames = vhap_from_synthetic
    cap = open_capture(root)
    assert isinstance(cap, VhapCapture) and cap.sequences == ("vhap",) and cap.has_alpha
    assert set(cap.serials) == set(source.serials[:6]) and cap.native_size == source.native_size
    assert cap.n_frames("vhap") == 2
    centre = source.tracking(source.sequences[0]).translation[:1]  # the head centre at frame 0 (world)
    for size in ((None, None), (None, 24)):
        want, got = source.cameras(*size), cap.cameras(*size)
        for s in cap.serials:
            np.testing.assert_allclose(got[s].project(centre)[0], want[s].project(centre)[0], atol=0.5)
            np.testing.assert_allclose(got[s].world_2_cam, want[s].world_2_cam, atol=1e-9)
    for serial in source.serials[:3]:
        for t, rgb, alpha in cap.read_frames("vhap", serial):
            np.testing.assert_array_equal(rgb, frames[(t, serial)][0])
            np.testing.assert_array_equal(alpha, frames[(t, serial)][1])


def _break(root: Path, split: str, change) -> None:
    path = root / f"transforms_{split}.json"
    db = json.loads(path.read_text())
    change(db["frames"])
    path.write_text(json.dumps(db))


def test_bad_vhap_exports_fail_with_one_line_naming_the_problem(vhap_from_synthetic, tmp_path):
    root = vhap_from_synthetic[0]
    (root / "images" / "00001_03.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/00001_03.png is missing \(listed for timestep 1, camera"):
        VhapCapture.open(root)
    _break(root, "train", lambda f: f.remove(next(x for x in f if x["timestep_index"] == 1 and x["camera_index"] == 3)))
    with pytest.raises(ValueError, match=r"camera \d+ has no frame for timestep 1 \(other cameras do\)"):
        VhapCapture.open(root)
    _break(root, "val", lambda f: f[0]["transform_matrix"][0].__setitem__(3, float("nan")))
    with pytest.raises(ValueError, match=r"transforms_val.json: frame 0: .*NaN"):
        VhapCapture.open(root)
    _break(root, "val", lambda f: f[0].update(transform_matrix=f[1]["transform_matrix"], timestep_index=7))
    with pytest.raises(ValueError, match="timestep_index must run 0..T-1, but 2 is missing"):
        VhapCapture.open(root)


def test_flame_tracking_needs_the_flame_model_and_finite_params(vhap_from_synthetic, bench_capture, tmp_path):
    root = vhap_from_synthetic[0]
    with pytest.raises(FileNotFoundError, match=r"headmodel.json is missing: .* --flame-model FLAME.npz"):
        prepare(PrepareConfig(capture=root, height=None))
    model = tmp_path / "flame.npz"
    np.savez(model, **flame_arrays(seed=1, n_expression=E))
    with pytest.raises(ValueError, match="--flame-model: .* has no FLAME tracking"):
        prepare(PrepareConfig(capture=bench_capture, flame_model=model))
    write_flame_head(root, model, root / "flame_param" / "00000.npz")
    p = dict(np.load(root / "flame_param" / "00001.npz"))
    p["jaw_pose"][0, 0] = np.nan
    np.savez(root / "flame_param" / "00001.npz", **p)
    with pytest.raises(ValueError, match=r"flame_param/00001.npz: 'jaw_pose' contains NaN"):
        VhapCapture.open(root).validate()


def rigid_model(tmp_path: Path) -> tuple[dict[str, np.ndarray], Path]:
    """The test model with one joint per vertex and no pose correctives: a rigid head on a neck, so that FLAME's
    global and neck rotations move every head vertex exactly as our head pose does."""
    a = flame_arrays(seed=2, n_expression=E)
    a["weights"] = np.eye(5)[a["weights"].argmax(1)]
    a["posedirs"] = np.zeros_like(a["posedirs"])
    np.savez(tmp_path / "rigid.npz", **a)
    return a, tmp_path / "rigid.npz"


def test_vhap_tracking_poses_the_head_where_flame_puts_it(tmp_path):
    a, path = rigid_model(tmp_path)
    params = vhap_params(np.random.default_rng(4), 3)
    np.savez(tmp_path / "p.npz", **params[0])
    write_flame_head(tmp_path, path, tmp_path / "p.npz")
    from npga.data.flame_tracking import capture_flame_head, tracking_from_vhap

    head = capture_flame_head(tmp_path)
    tracking = tracking_from_vhap(head, params, np.arange(3), "test")
    head_vertices = a["weights"][:, 0] == 0  # everything but the neck's base
    arrays = {**a, "v_template": a["v_template"] + params[0]["static_offset"][0, :162]}
    for t, p in enumerate(params):
        pose = np.concatenate([p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"].reshape(2, 3)])
        want = reference_lbs(arrays, p["shape"], p["expr"][0], pose) + p["translation"]  # VHAP's forward
        ours = head.posed_vertices(torch.from_numpy(tracking.expression[t]).double()).numpy()
        got = tracking.scale[t] * ours @ tracking.rotation[t].T + tracking.translation[t]
        np.testing.assert_allclose(got[head_vertices], want[head_vertices], atol=1e-6)
    np.testing.assert_allclose(tracking.expression[:, E : E + 3], [p["jaw_pose"][0] for p in params], atol=1e-7)


def test_nersemble_flame_tracking_is_read_as_our_tracking(tmp_path):
    a, path = rigid_model(tmp_path)
    rng = np.random.default_rng(5)
    T = 3
    euler = rng.normal(scale=0.3, size=(T, 3))
    npz = {
        "shape": rng.normal(size=(1, 300)),
        "expression": rng.normal(size=(T, E)),
        "rotation": euler,
        "rotation_matrices": Rotation.from_euler("XYZ", euler).as_matrix(),
        "translation": rng.normal(size=(T, 3)),
        "jaw": rng.normal(scale=0.1, size=(T, 3)),
        "frames": np.array([0, 3, 6]),
        "scale": np.array([[1.3]]),
        "neck": rng.normal(scale=0.1, size=(T, 3)),
        "eyes": rng.normal(scale=0.05, size=(T, 6)),
    }
    np.savez(tmp_path / "flame2023_tracking.npz", **npz)
    write_flame_head(tmp_path, path, tmp_path / "flame2023_tracking.npz")
    head = FlameHead.from_description(json.loads((tmp_path / "headmodel.json").read_text()))
    tracking = load_nersemble_flame_tracking(tmp_path / "flame2023_tracking.npz", head)
    assert tracking.timesteps.tolist() == [0, 3, 6] and tracking.expression.shape == (T, E + 9)
    head_vertices = a["weights"][:, 0] == 0
    for t in range(T):
        pose = np.concatenate([np.zeros((1, 3)), npz["neck"][[t]], npz["jaw"][[t]], npz["eyes"][t].reshape(2, 3)])
        model = reference_lbs(a, npz["shape"][0], npz["expression"][t], pose)  # global rotation applied after
        want = 1.3 * model @ npz["rotation_matrices"][t].T + npz["translation"][t]
        ours = head.posed_vertices(torch.from_numpy(tracking.expression[t]).double()).numpy()
        got = tracking.scale[t] * ours @ tracking.rotation[t].T + tracking.translation[t]
        np.testing.assert_allclose(got[head_vertices], want[head_vertices], atol=1e-6)


def render_flame_capture(
    root: Path, arrays: dict[str, np.ndarray], n_timesteps: int = 3, size: tuple[int, int] = (32, 40)
) -> Path:
    """A VHAP export of the test's FLAME head, rendered with its own forward (reference_lbs) by the mesh
    rasterizer: 8 cameras on an arc, a surface pattern that moves with the skin, composited onto white."""
    W, H = size
    rng = np.random.default_rng(7)
    params = vhap_params(rng, n_timesteps, len(arrays["v_template"]))
    for p in params:
        p["static_offset"] = np.zeros_like(p["static_offset"])
    cams = {}
    for k in range(8):
        angle = np.deg2rad(-70 + 20 * k)
        eye = 0.7 * np.array([np.sin(angle), 0.15, np.cos(angle)])
        cams[f"{k:02d}"] = Camera(
            np.array([[1.6 * W, 0, W / 2], [0, 1.6 * W, H / 2], [0, 0, 1]]), look_at(eye, np.zeros(3)), W, H, f"{k:02d}"
        )
    v = arrays["v_template"]
    colour = torch.from_numpy(0.55 + 0.35 * np.sin(60 * v + [0.0, 1.0, 2.0]))  # (V, 3)
    faces = torch.from_numpy(arrays["f"])
    frames = {}
    for t, p in enumerate(params):
        pose = np.concatenate([p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"].reshape(2, 3)])
        world = reference_lbs(arrays, p["shape"], p["expr"][0], pose) + p["translation"]
        for serial, cam in cams.items():
            pix, depth = cam.project(world)
            rgb, mask = rasterize_mesh(torch.from_numpy(np.concatenate([pix, depth[:, None]], 1)), faces, colour, W, H)
            m = mask.numpy()[..., None]
            img = np.where(m, rgb.numpy(), 1.0)
            frames[(t, serial)] = (np.round(img * 255).astype(np.uint8), (m[..., 0] * 255).astype(np.uint8))
    return write_vhap(root, cams, frames, params)


@pytest.mark.slow
def test_tiny_preset_trains_on_a_vhap_export_of_a_flame_head(tmp_path):
    arrays = flame_arrays(seed=0, n_expression=E)
    model = tmp_path / "flame.npz"
    np.savez(model, **arrays)
    root = render_flame_capture(tmp_path / "vhap", arrays)
    prepare(PrepareConfig(capture=root, height=None, flame_model=model))
    base = load_config(TrainConfig, TINY)
    cfg = dataclasses.replace(
        base,
        capture=root,
        out=tmp_path / "run",
        steps=40,
        val_every=1000,
        checkpoint_every=1000,
        heldout_serials=("07",),
        heldout_sequences=(),
        distill=dataclasses.replace(base.distill, pool_size=1024, steps=60, eval_points=256),
        densify=dataclasses.replace(base.densify, refine_start=15, refine_every=15, refine_stop=35),
    )
    trainer = build_trainer(cfg)
    assert trainer.head_model["type"] == "flame"
    trainer.fit()
    records = [json.loads(line) for line in RunLayout(cfg.out).log.read_text().splitlines()]
    assert np.mean([r["loss"] for r in records[-3:]]) < 0.7 * np.mean([r["loss"] for r in records[:2]])
    assert RunLayout(cfg.out).avatar.is_file()
