"""Per-frame expression codes and head pose of one sequence (`tracking/nphm_tracking.npz`).

One layout for every source (an NPHM tracker such as MonoNPHM, the synthetic capture's ground truth, `npga
track` with its `TrackingExtras` beside it), so one reader serves them all; this module is the one place that
reads and writes the file. Format: docs/captures.md#the-tracking-file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from npga.io.atomic import atomic_path
from npga.io.untrusted import CorruptFile, load_npz

KIND = "a tracking file (.npz)"
_FIELDS = ("expression", "identity", "rotation", "translation", "scale", "timesteps")


@dataclass(frozen=True)
class Tracking:
    expression: np.ndarray  # (T, D_ex)
    identity: np.ndarray  # (D_id,)
    rotation: np.ndarray  # (T, 3, 3)
    translation: np.ndarray  # (T, 3)
    scale: np.ndarray  # (T,)
    timesteps: np.ndarray  # (T,) int, frame indices into the sequence's videos

    def __post_init__(self) -> None:
        self.validate("<in memory>")

    @property
    def head_poses(self) -> np.ndarray:
        """(T, 4, 4) every frame's `head_to_world`."""
        return np.stack([self.head_to_world(t) for t in range(self.n_frames)]) if self.n_frames else np.zeros((0, 4, 4))

    @property
    def n_frames(self) -> int:
        return int(self.expression.shape[0])

    @property
    def expression_dim(self) -> int:
        return int(self.expression.shape[1])

    def head_to_world(self, t: int) -> np.ndarray:
        """(4, 4) similarity transform of frame index t (an index into the arrays, not a timestep)."""
        m = np.eye(4)
        m[:3, :3] = self.scale[t] * self.rotation[t]
        m[:3, 3] = self.translation[t]
        return m

    def validate(self, source: str) -> None:
        """Raise ValueError naming `source` when shapes disagree or values are not finite."""
        T = self.expression.shape[0] if self.expression.ndim == 2 else -1
        expected = {
            "expression": (T, None),
            "identity": (None,),
            "rotation": (T, 3, 3),
            "translation": (T, 3),
            "scale": (T,),
            "timesteps": (T,),
        }
        if T < 0:
            raise ValueError(f"{source}: 'expression' must have shape (T, D_ex), got {self.expression.shape}")
        for name, shape in expected.items():
            arr = getattr(self, name)
            ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape, strict=True))
            if not ok:
                want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                raise ValueError(f"{source}: '{name}' has shape {arr.shape}, expected {want}")
            if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
                raise ValueError(f"{source}: '{name}' has dtype {arr.dtype}, expected real numbers")
            if not np.isfinite(arr).all():
                raise ValueError(f"{source}: '{name}' contains NaN or inf")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tracking:
        path = Path(path)
        arrays = load_npz(path, KIND)
        missing = [f for f in _FIELDS if f not in arrays]
        if missing:
            raise CorruptFile(path, KIND, f"missing arrays {missing}")
        obj = object.__new__(cls)
        for f in _FIELDS:
            object.__setattr__(obj, f, arrays[f])
        obj.validate(str(path))
        return obj

    def save(self, path: str | os.PathLike, extras: TrackingExtras | None = None) -> None:
        """Write atomically: a reader never sees a half-written file. `extras`: what a monocular tracker adds
        in the same file; readers of the layout ignore it."""
        arrays = extras.arrays() if extras is not None else {}
        with atomic_path(path) as tmp:
            np.savez(tmp, **arrays, **{f: getattr(self, f) for f in _FIELDS})


@dataclass(frozen=True)
class TrackingExtras:
    """What a tracking file may hold beside the layout, each part optional (other trackers write none of it):
    the camera of the video the codes were fitted to (its poses live in that camera's world), the head model
    whose codes these are, and how well each frame fitted. `npga track` writes all of it; the keys are the
    arrays' names in the file."""

    intrinsics: np.ndarray | None = None  # (3, 3) K at the video's size
    image_size: tuple[int, int] | None = None  # (W, H) of the video
    world_2_cam: np.ndarray | None = None  # (4, 4) the video camera's extrinsics (npga track: the identity)
    head_model: str | None = None  # the head model's type, e.g. "synthetic", "mononphm", "flame"
    residual: np.ndarray | None = None  # (T,) L1 colour error of each frame's final fit
    iou: np.ndarray | None = None  # (T,) silhouette IoU of each frame's final fit
    problem: np.ndarray | None = None  # (T,) str: why a frame's fit is not trusted, "" where it converged

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store, with `converged` (T,) bool beside `problem` for readers outside Python."""
        out = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is not None:
                out[name] = np.asarray(value)
        if self.problem is not None:
            out["converged"] = np.asarray(self.problem) == ""
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrackingExtras:
        """The extras of a tracking file (Tracking.load checks the layout itself); absent keys are None."""
        arrays = load_npz(path, KIND)
        found = {name: arrays[name] for name in cls.__dataclass_fields__ if name in arrays}
        try:
            if "image_size" in found:
                width, height = (int(v) for v in found["image_size"])
                found["image_size"] = (width, height)
            if "head_model" in found:
                found["head_model"] = str(found["head_model"].item())
        except (TypeError, ValueError) as e:
            raise CorruptFile(path, KIND, f"its extras: {e}") from None
        return cls(**found)


def pose_errors(truth: np.ndarray, head_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far head poses (T, 4, 4) are from the true ones (T, 4, 4), frame by frame, up to the one rigid offset
    that every frame may share (the canonical head absorbs it: the gauge of a tracking refined with an avatar).

    Returns the rotation (radians) and translation (head units) of each frame's head-frame error truth^-1 @ pose,
    after removing their means over the frames (to first order, the shared offset)."""
    errors = [np.linalg.inv(a) @ b for a, b in zip(np.asarray(truth), np.asarray(head_to_world), strict=True)]
    w = np.stack([Rotation.from_matrix(e[:3, :3] / np.cbrt(np.linalg.det(e[:3, :3]))).as_rotvec() for e in errors])
    s = np.stack([e[:3, 3] for e in errors])
    return np.linalg.norm(w - w.mean(0), axis=1), np.linalg.norm(s - s.mean(0), axis=1)
