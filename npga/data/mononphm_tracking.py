"""MonoNPHM's photometric tracking of a sequence, converted to our tracking (`tracking/nphm_tracking.npz`).

MonoNPHM maps world to model space and its "world" is its metrical tracker's FLAME space, so poses are inverted
and, given that tracker's cameras, chained into the capture's world (`align_to_rig`). The tracker's output
layout and the pose algebra: docs/real-data.md.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from npga.data.capture import Capture
from npga.data.tracking import Tracking
from npga.headmodel.mononphm import MonoNPHM, checkpoint_path, read_dims
from npga.headmodel.registry import load_head_model, save_description
from npga.io.untrusted import load_npy, load_npz

log = logging.getLogger(__name__)

Stage = Literal["auto", "1", "2"]
_FRAME_DIR = re.compile(r"^\d{5}$")


@dataclass(frozen=True)
class MonoNPHMTracking:
    """One sequence's MonoNPHM tracking in our layout, with the identity codes it was tracked with."""

    tracking: Tracking
    z_geo: np.ndarray  # (C,)
    z_app: np.ndarray  # (C,)
    folder: Path  # the stage{1,2}/{seq} folder it came from


def pose_to_head_to_world(rot: np.ndarray, trans: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(rotation (3, 3), translation (3,), scale) of our head -> world similarity from MonoNPHM's world -> model
    pose x_model = scale x_world rot^T + trans (rot (3, 3), trans (3,), row vectors)."""
    return rot.T, -(rot.T @ trans) / scale, 1.0 / scale


def _similarity_parts(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(rotation, translation, scale) of a 4x4 similarity transform."""
    scale = float(np.cbrt(np.linalg.det(m[:3, :3])))
    return m[:3, :3] / scale, m[:3, 3], scale


def align_to_rig(tracking: Tracking, metrical_tracker: Path, cam_to_world: np.ndarray) -> Tracking:
    """Head poses in the capture's world: MonoNPHM's world (4 x FLAME space of its metrical tracker) mapped through
    the tracker's per-frame camera (module docstring) and the tracked rig camera's cam_to_world (4, 4)."""
    flame_from_mononphm = np.diag([0.25, 0.25, 0.25, 1.0])
    rotation, translation, scale = (np.empty_like(a) for a in (tracking.rotation, tracking.translation, tracking.scale))
    for i in range(tracking.n_frames):
        file = Path(metrical_tracker) / f"{max(int(tracking.timesteps[i]) - 1, 0):05d}_cam_params_opencv.npz"
        if not file.is_file():
            raise FileNotFoundError(f"metrical tracker camera missing: {file}")
        npz = load_npz(file, "a metrical tracker camera (.npz)")
        if "R" not in npz or "t" not in npz or npz["R"].size != 9 or npz["t"].size != 3:
            raise ValueError(f"{file}: expected arrays 'R' (1, 3, 3) and 't' (1, 3), found {sorted(npz)}")
        if not all(np.issubdtype(npz[k].dtype, np.number) and not np.iscomplexobj(npz[k]) for k in "Rt"):
            raise ValueError(f"{file}: 'R' and 't' must be real numbers")
        cam_from_flame = np.eye(4)
        cam_from_flame[:3, :3], cam_from_flame[:3, 3] = np.reshape(npz["R"], (3, 3)), np.reshape(npz["t"], 3)
        if not np.isfinite(cam_from_flame).all():
            raise ValueError(f"{file}: contains NaN or inf")
        m = cam_to_world @ cam_from_flame @ flame_from_mononphm @ tracking.head_to_world(i)
        rotation[i], translation[i], scale[i] = _similarity_parts(m)
    return dataclasses.replace(tracking, rotation=rotation, translation=translation, scale=scale)


def _load(path: Path, shape: tuple[int | None, ...]) -> np.ndarray:
    """An .npy array of `shape` (None: any length) with finite values; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"MonoNPHM tracking file missing: {path}")
    arr = load_npy(path, "a MonoNPHM tracking array (.npy)")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{path}: dtype {arr.dtype}, expected real numbers")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{path}: shape {arr.shape}, expected {want}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: contains NaN or inf")
    return arr.astype(np.float64)


def _sequence_folder(root: Path, seq: str, stage: Stage) -> Path:
    candidates = {"2": root / "stage2" / seq, "1": root / "stage1" / seq}
    order = ["2", "1"] if stage == "auto" else [stage]
    for s in order:
        if candidates[s].is_dir():
            return candidates[s]
    where = " or ".join(str(candidates[s]) for s in order)
    raise FileNotFoundError(f"no MonoNPHM tracking of sequence {seq}: {where} does not exist")


def _frame_folders(folder: Path, n_frames: int | None) -> list[Path]:
    frames = sorted(p for p in folder.iterdir() if p.is_dir() and _FRAME_DIR.match(p.name))
    if not frames:
        raise FileNotFoundError(f"{folder}: no per-frame folders (00000, 00001, ...)")
    numbers = [int(p.name) for p in frames]
    expected = n_frames if n_frames is not None else numbers[-1] + 1
    missing = sorted(set(range(expected)) - set(numbers))
    if missing:
        raise FileNotFoundError(
            f"{folder / f'{missing[0]:05d}'} is missing ({len(missing)} of {expected} frames "
            "untracked); MonoNPHM must track every frame of the videos"
        )
    if len(numbers) != expected:
        raise ValueError(
            f"{folder}: {len(numbers)} tracked frames (up to {frames[-1].name}), but the videos have {expected}"
        )
    return frames


def read_mononphm_tracking(
    root: Path, seq: str, expression_dim: int, n_frames: int | None = None, stage: Stage = "auto"
) -> MonoNPHMTracking:
    """Read MonoNPHM's tracking of `seq` under its tracking output folder `root` (stage 2 when present, else
    stage 1) and convert it. `n_frames`: the videos' frame count, which the tracked frames must equal."""
    folder = _sequence_folder(Path(root), seq, stage)
    frames = _frame_folders(folder, n_frames)
    T = len(frames)
    is_stage2 = folder.parent.name == "stage2"
    ident = folder if is_stage2 else frames[0]
    z_geo = _load(ident / "z_geo.npy", (1, 1, None)).reshape(-1)
    z_app = _load(ident / "z_app.npy", (1, 1, None)).reshape(-1)
    if is_stage2:
        expression = _load(frames[0] / "z_exp.npy", (T, None))
    else:
        expression = np.concatenate([_load(f / "z_exp.npy", (1, None)) for f in frames])
    if expression.shape[1] != expression_dim:
        source = frames[0] / "z_exp.npy"
        raise ValueError(f"{source}: {expression.shape[1]}-d expression codes, the MonoNPHM model has {expression_dim}")
    rotation, translation, scale = np.empty((T, 3, 3)), np.empty((T, 3)), np.empty(T)
    for i, f in enumerate(frames):
        rot = _load(f / "rot.npy", (1, 3, 3))[0]
        if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4) or np.linalg.det(rot) < 0:
            raise ValueError(f"{f / 'rot.npy'}: not a rotation matrix")
        s = float(_load(f / "scale.npy", (1,))[0])
        if s <= 0:
            raise ValueError(f"{f / 'scale.npy'}: scale must be positive, got {s}")
        rotation[i], translation[i], scale[i] = pose_to_head_to_world(rot, _load(f / "trans.npy", (1, 3))[0], s)
    tracking = Tracking(
        expression=expression.astype(np.float32),
        identity=z_geo.astype(np.float32),
        rotation=rotation,
        translation=translation,
        scale=scale,
        timesteps=np.arange(T),
    )
    log.info("%s: %d frames of MonoNPHM tracking (stage %s)", folder, T, "2" if is_stage2 else "1")
    return MonoNPHMTracking(tracking, z_geo.astype(np.float32), z_app.astype(np.float32), folder)


def import_mononphm_tracking(
    tracking_root: Path,
    capture: Path,
    seq: str,
    experiment: Path,
    anchors: Path | None,
    epoch: int | None = None,
    stage: Stage = "auto",
    metrical_tracker: Path | None = None,
    camera: str | None = None,
) -> Path:
    """Write the capture's `sequences/{seq}/tracking/nphm_tracking.npz` from MonoNPHM's tracking, and its
    `headmodel.json` naming the checkpoint, config, anchors and identity codes (a capture whose head model is
    already MonoNPHM keeps its identity: every sequence of an avatar shares one canonical head). With
    `metrical_tracker` and `camera` (the rig serial whose video was tracked), head poses are moved into the
    capture's world (`align_to_rig`); without, MonoNPHM's world is taken as the capture's. Returns the tracking
    file. Everything is checked, the checkpoint loaded once, before anything is written."""
    cap = Capture.open(capture)
    if seq not in cap.sequences:
        raise ValueError(f"{cap.root}: no sequence {seq!r} (sequences: {list(cap.sequences)})")
    experiment = Path(experiment)
    config = experiment / "configs.yaml"
    dims = read_dims(config)
    converted = read_mononphm_tracking(Path(tracking_root), seq, dims.lat_dim_ex, cap.n_frames(seq), stage)
    if (metrical_tracker is None) != (camera is None):
        raise ValueError("aligning MonoNPHM's world to the rig needs both the metrical tracker folder and the camera")
    if metrical_tracker is None:
        hint = "pass the metrical tracker's cameras and the tracked camera to move them into the rig's"
        log.warning(
            "%s: head poses stay in MonoNPHM's world (its tracker's FLAME space x 4); %s", converted.folder, hint
        )
    else:
        cams = cap.cameras()
        if camera not in cams:
            raise ValueError(f"{cap.paths.camera_params}: no camera {camera!r} (cameras: {sorted(cams)})")
        aligned = align_to_rig(converted.tracking, metrical_tracker, cams[camera].cam_2_world)
        converted = dataclasses.replace(converted, tracking=aligned)
    ckpt = checkpoint_path(experiment, epoch).resolve()
    head = MonoNPHM.load(
        ckpt, config.resolve(), Path(anchors).resolve() if anchors else None, converted.z_geo, converted.z_app
    )
    description_file = cap.paths.headmodel
    current = _current_mononphm(description_file)
    if current is not None:
        change = float(np.abs(current.z_geo.numpy() - converted.z_geo).max())
        if change > 0:
            log.warning(
                "%s keeps its MonoNPHM identity; %s was tracked with z_geo differing by up to %.3g",
                description_file,
                converted.folder,
                change,
            )
    else:
        save_description(head, description_file)
    out = cap.paths.tracking(seq)
    converted.tracking.save(out)
    return out


def _current_mononphm(description_file: Path) -> MonoNPHM | None:
    """The capture's head model when it already is a MonoNPHM, else None (none yet, or another type)."""
    if not description_file.is_file():
        return None
    head = load_head_model(description_file)
    if isinstance(head, MonoNPHM):
        return head
    log.info("%s: replacing the %s head model by MonoNPHM", description_file, type(head).__name__)
    return None
