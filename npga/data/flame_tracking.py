"""FLAME tracking (VHAP's per-timestep `flame_param` files, the NeRSemble benchmark's `flame2023_tracking.npz`) as
our `Tracking`, and the capture's FLAME head model from the user's model file plus the tracked identity.

Our split of FLAME's parameters (npga/headmodel/flame.py): the expression code is [expression coefficients,
jaw, eyes]; the rigid motion (global rotation, neck, translation, the benchmark's scale) becomes the head pose,
x_world = scale * rotation @ x_head + translation. A vertex that FLAME skins to the neck joint (the whole head
above the neck) lands on

    x_model = R_g R_n x' + R_g (I - R_n) J_neck + (I - R_g) J_root      (both rotations about their joints)
    x_world = s R_w x_model + t_w

with x' its position with global and neck at rest (what our head model poses). So
    rotation = R_w R_g R_n,   translation = s R_w (R_g (I - R_n) J_neck + (I - R_g) J_root) + t_w,   scale = s,
with the joints of the frame's expression-shaped identity. VHAP: R_g = its `rotation` (axis-angle, applied by
skinning), R_w = I, t_w = `translation`, s = 1. NeRSemble benchmark: R_g = I, R_w = `rotation_matrices` (its
model-to-world rotation), t_w = `translation`, s = `scale`. Exact for vertices skinned to the head joint;
what is lost is the neck's pose correctives and the blend between head and torso in the neck region.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from npga.data.tracking import Tracking
from npga.geometry import axis_angle_to_matrix
from npga.headmodel import FlameHead, load_flame_model, load_head_model
from npga.headmodel.flame import N_SHAPE
from npga.headmodel.registry import DESCRIPTION_FILE
from npga.io.atomic import write_text_atomic
from npga.io.untrusted import load_npz

VHAP_KEYS = ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "shape")
NERSEMBLE_KEYS = ("shape", "expression", "rotation_matrices", "translation", "jaw", "frames", "scale", "neck", "eyes")


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named float arrays of an npz, every one present and finite (errors name the file and the key)."""
    if not path.is_file():
        raise FileNotFoundError(f"FLAME parameters not found: {path}")
    arrays = load_npz(path, "a FLAME tracking file (.npz)")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}")
    wrong = [k for k, v in arrays.items() if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v)]
    if wrong:
        raise ValueError(f"{path}: array(s) {wrong} are not real numbers")
    out = {k: v.astype(np.float64) for k, v in arrays.items()}
    for k, v in out.items():
        if not np.isfinite(v).all():
            raise ValueError(f"{path}: '{k}' contains NaN or inf")
    return out


def capture_flame_head(root: Path) -> FlameHead:
    """The FLAME head model a capture names in its headmodel.json; a clear error when it names none."""
    if not (root / DESCRIPTION_FILE).is_file():
        raise FileNotFoundError(
            f"{root / DESCRIPTION_FILE} is missing: FLAME-tracked captures need your FLAME model; "
            f"run `npga prepare --capture {root} --flame-model FLAME.npz` once"
        )
    head = load_head_model(root)
    if not isinstance(head, FlameHead):
        raise ValueError(
            f"{root / DESCRIPTION_FILE}: FLAME tracking needs a head model of type 'flame', got "
            f"{head.description()['type']!r}"
        )
    return head


def _expression_codes(head: FlameHead, expr: np.ndarray, jaw: np.ndarray, eyes: np.ndarray, where: str) -> np.ndarray:
    """(T, E + 9) codes [expression (zero-padded to the model's E), jaw, eyes]."""
    E = head.n_expression
    if expr.shape[1] > E:
        raise ValueError(f"{where}: {expr.shape[1]} expression coefficients, but the FLAME model has {E}")
    padded = np.zeros((len(expr), E))
    padded[:, : expr.shape[1]] = expr
    return np.concatenate([padded, jaw, eyes], 1)


def flame_head_pose(
    head: FlameHead,
    codes: np.ndarray,
    global_rot: np.ndarray,
    neck: np.ndarray,
    world_rot: np.ndarray,
    world_trans: np.ndarray,
    scale: np.ndarray,
):
    """(rotation (T, 3, 3), translation (T, 3), scale (T,)) of our head pose from FLAME's rigid parameters
    (formula in the module docstring); codes (T, D) give each frame's joints, neck (T, 3) is axis-angle."""
    J = head.joints(torch.from_numpy(codes[:, : head.n_expression])).numpy()  # (T, 5, 3)
    j_root, j_neck = J[:, 0], J[:, 1]
    R_n = axis_angle_to_matrix(torch.from_numpy(neck)).numpy()  # (T, 3, 3)
    eye = np.eye(3)
    apply = lambda m, x: np.einsum("tab,tb->ta", m, x)
    model_t = apply(global_rot @ (eye - R_n), j_neck) + apply(eye - global_rot, j_root)
    rotation = world_rot @ global_rot @ R_n
    translation = scale[:, None] * apply(world_rot, model_t) + world_trans
    return rotation, translation, scale


def tracking_from_vhap(
    head: FlameHead, params: list[dict[str, np.ndarray]], timesteps: np.ndarray, where: str
) -> Tracking:
    """One sequence's Tracking from VHAP's per-timestep parameters (each key shaped (1, n))."""
    stack = {k: np.concatenate([p[k].reshape(1, -1) for p in params]) for k in VHAP_KEYS}
    codes = _expression_codes(head, stack["expr"], stack["jaw_pose"], stack["eyes_pose"], where)
    T = len(codes)
    R_g = axis_angle_to_matrix(torch.from_numpy(stack["rotation"])).numpy()
    rotation, translation, scale = flame_head_pose(
        head, codes, R_g, stack["neck_pose"], np.tile(np.eye(3), (T, 1, 1)), stack["translation"], np.ones(T)
    )
    return Tracking(
        expression=codes.astype(np.float32),
        identity=_identity(stack["shape"][0]),
        rotation=rotation,
        translation=translation,
        scale=scale,
        timesteps=np.asarray(timesteps, dtype=np.int64),
    )


def load_nersemble_flame_tracking(path: Path, head: FlameHead) -> Tracking:
    """The NeRSemble benchmark's `flame2023_tracking.npz` (monocular-avatar task) as our Tracking."""
    a = read_npz(path, NERSEMBLE_KEYS)
    T = len(a["expression"])
    for k, shape in {
        "rotation_matrices": (T, 3, 3),
        "translation": (T, 3),
        "jaw": (T, 3),
        "neck": (T, 3),
        "eyes": (T, 6),
        "frames": (T,),
    }.items():
        if a[k].shape != shape:
            raise ValueError(f"{path}: '{k}' has shape {a[k].shape}, expected {shape}")
    if a["scale"].size not in (1, T):
        raise ValueError(f"{path}: 'scale' has shape {a['scale'].shape}, expected one value or one per frame")
    codes = _expression_codes(head, a["expression"], a["jaw"], a["eyes"], str(path))
    scale = np.broadcast_to(a["scale"].reshape(-1), (T,)).copy()
    rotation, translation, scale = flame_head_pose(
        head, codes, np.tile(np.eye(3), (T, 1, 1)), a["neck"], a["rotation_matrices"], a["translation"], scale
    )
    return Tracking(
        expression=codes.astype(np.float32),
        identity=_identity(a["shape"].reshape(-1)),
        rotation=rotation,
        translation=translation,
        scale=scale,
        timesteps=a["frames"].astype(np.int64),
    )


def _identity(shape: np.ndarray) -> np.ndarray:
    """FLAME's shape coefficients, zero-padded to all 300: the identity vector of our Tracking."""
    out = np.zeros(N_SHAPE, dtype=np.float32)
    out[: min(len(shape), N_SHAPE)] = shape[:N_SHAPE]
    return out


def write_flame_head(root: Path, model: str | os.PathLike, identity_file: Path) -> Path:
    """Write `root/headmodel.json`: your FLAME model (absolute path) with the identity tracked in `identity_file`
    (VHAP: a `flame_param` npz with `shape` and maybe `static_offset`; NeRSemble: the tracking npz's `shape`)."""
    model = Path(model).expanduser().resolve()
    a = read_npz(identity_file, ("shape",))
    offset = a.get("static_offset")
    head = FlameHead(
        load_flame_model(model), a["shape"].reshape(-1), None if offset is None else offset.reshape(-1, 3), model
    )
    path, text = root / DESCRIPTION_FILE, json.dumps(head.description())
    if not path.is_file() or path.read_text() != text:  # unchanged: keep the file (a frame cache watches it)
        write_text_atomic(path, text)
    return path
