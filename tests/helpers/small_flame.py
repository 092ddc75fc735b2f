"""A random but well-formed model in FLAME's file layout, for tests (the real FLAME is licensed, never shipped).

An ellipsoidal "head" (an icosphere, 162 vertices) with smooth random shape and expression bases, small pose
correctives and a 5-joint tree (global at the neck's base, neck, jaw, left eye, right eye) whose skinning
weights make a jaw that opens and eyes that turn. Units are metres, y up, the face looks along +z.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

N_SHAPE = 300
JOINT_TARGETS = np.array(
    [[0.0, -0.09, -0.01], [0.0, -0.04, -0.01], [0.0, -0.03, 0.02], [0.03, 0.02, 0.06], [-0.03, 0.02, 0.06]]
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def flame_arrays(seed: int = 0, n_expression: int = 4, subdivisions: int = 2) -> dict[str, np.ndarray]:
    """The arrays of a FLAME-layout model file: v_template, shapedirs, posedirs, J_regressor, weights,
    kintree_table, f."""
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = np.asarray(sphere.vertices) * [0.08, 0.1, 0.09]  # (V, 3)
    V = len(v)
    feats = np.concatenate([v, v**2 * 10], 1)  # (V, 6) smooth functions of position

    def smooth_dirs(n: int, scale: float) -> np.ndarray:
        return np.einsum("vf,fcn->vcn", feats, rng.normal(scale=scale, size=(6, 3, n)))  # (V, 3, n)

    expr = []
    for _ in range(n_expression):  # local bumps: a region of the surface moves ~5 mm per unit coefficient
        centre = v[rng.integers(V)]
        bump = np.exp(-((v - centre) ** 2).sum(1) / (2 * 0.03**2))
        expr.append(bump[:, None] * rng.normal(scale=0.005, size=3))
    shapedirs = np.concatenate([smooth_dirs(N_SHAPE, 0.01), np.stack(expr, -1)], -1)  # (V, 3, 300 + E)

    # joints: soft averages of the vertices around each target (so they sit inside the head)
    d2 = ((v[None] - JOINT_TARGETS[:, None]) ** 2).sum(-1)  # (5, V)
    J_regressor = np.exp(-d2 / (2 * 0.03**2))
    J_regressor /= J_regressor.sum(1, keepdims=True)

    x, y, z = v.T
    root = _sigmoid((-0.08 - y) / 0.005)
    jaw = _sigmoid((-0.035 - y) / 0.005) * _sigmoid((z - 0.0) / 0.01) * (1 - root)
    eyes = [np.exp(-((v - t) ** 2).sum(1) / (2 * 0.012**2)) * (1 - root) for t in JOINT_TARGETS[3:]]
    neck = np.clip(1 - root - jaw - eyes[0] - eyes[1], 0, None)
    weights = np.stack([root, neck, jaw, *eyes], 1)
    weights /= weights.sum(1, keepdims=True)  # (V, 5)
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": smooth_dirs(36, 0.002),
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "f": np.asarray(sphere.faces, dtype=np.int64),
    }


def write_flame_model(path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **flame_arrays(**kwargs))
    return path


def reference_lbs(a: dict[str, np.ndarray], shape: np.ndarray, expr: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """FLAME's forward, vertex by vertex with 4x4 matrices (written from the FLAME paper, not from npga)."""
    betas = np.zeros(a["shapedirs"].shape[2])
    betas[: len(shape)] = shape
    betas[300:] = expr
    v_shaped = a["v_template"] + a["shapedirs"] @ betas  # (V, 3)
    joints = a["J_regressor"] @ v_shaped  # (5, 3)
    rots = [Rotation.from_rotvec(p).as_matrix() for p in pose]
    v_posed = v_shaped + a["posedirs"] @ np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
    parents = [-1, 0, 1, 1, 1]
    world = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0)
        world.append(local if j == 0 else world[parents[j]] @ local)
    rel = []
    for j in range(5):
        to_joint = np.eye(4)
        to_joint[:3, 3] = -joints[j]
        rel.append(world[j] @ to_joint)
    out = np.zeros_like(v_posed)
    for i, (p, w) in enumerate(zip(v_posed, a["weights"], strict=True)):
        m = sum(wj * rj for wj, rj in zip(w, rel, strict=True))
        out[i] = (m @ np.append(p, 1))[:3]
    return out
