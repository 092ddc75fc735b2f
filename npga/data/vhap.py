"""A VHAP export (the folder GaussianAvatars trains on) read behind the same API as `Capture`, so `npga prepare`
and `npga train` take it as they take a NeRSemble participant folder.

One export is one sequence; which of its cameras train is our split's business, not its split files'.
Layout: docs/real-data.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from npga.cameras import Camera
from npga.data.capture import Capture
from npga.data.flame_tracking import VHAP_KEYS, capture_flame_head, read_npz, tracking_from_vhap
from npga.data.tracking import Tracking
from npga.headmodel.registry import DESCRIPTION_FILE

log = logging.getLogger(__name__)

SPLIT_FILES = ("transforms_train.json", "transforms_val.json", "transforms_test.json")
SINGLE_FILE = "transforms.json"
# OpenGL camera axes (y up, z backward) -> OpenCV (y down, z forward): flip the camera's y and z axes.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_FRAME_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "transform_matrix", "file_path", "timestep_index", "camera_index")


def is_vhap_export(root: str | os.PathLike) -> bool:
    root = Path(root)
    return any((root / f).is_file() for f in (*SPLIT_FILES, SINGLE_FILE))


def transforms_files(root: Path) -> list[Path]:
    """The split files that exist (VHAP writes all three), else transforms.json."""
    splits = [root / f for f in SPLIT_FILES if (root / f).is_file()]
    return splits or [root / SINGLE_FILE]


@dataclass(frozen=True)
class _View:
    """One camera's calibration as VHAP wrote it, and where it came from (for errors)."""

    K: np.ndarray  # (3, 3)
    world_2_cam: np.ndarray  # (4, 4) OpenCV
    size: tuple[int, int]  # (W, H)
    where: str


def _read_frame(frame: object, where: str) -> tuple[int, str, _View, dict[str, str | None]]:
    """(timestep, serial, calibration, {image, mask, flame_param: relative path or None}) of one frame entry."""
    if not isinstance(frame, dict):
        raise ValueError(f"{where}: a frame must be a JSON object")
    missing = [k for k in _FRAME_KEYS if k not in frame]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    try:
        nums = np.array([frame[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")], dtype=np.float64)
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: intrinsics or transform_matrix are not numbers ({e})") from e
    if c2w.shape != (4, 4):
        raise ValueError(f"{where}: transform_matrix has shape {c2w.shape}, expected (4, 4)")
    if not (np.isfinite(nums).all() and np.isfinite(c2w).all()):
        raise ValueError(f"{where}: intrinsics or transform_matrix contain NaN or inf")
    if not np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6) or abs(np.linalg.det(c2w[:3, :3])) < 1e-6:
        raise ValueError(f"{where}: transform_matrix is not a camera-to-world rigid transform")
    fx, fy, cx, cy, w, h = nums
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    w2c = np.linalg.inv(c2w @ GL_TO_CV)
    serial = str(frame.get("camera_id", frame["camera_index"]))
    files = {
        "image": frame["file_path"],
        "mask": frame.get("fg_mask_path"),
        "flame_param": frame.get("flame_param_path"),
    }
    return int(frame["timestep_index"]), serial, _View(K, w2c, (int(w), int(h)), where), files


class VhapCapture:
    """A checked VHAP export; use `VhapCapture.open(root)` (or `npga.data.readers.open_capture`)."""

    layout = "vhap"
    resolve_size = Capture.resolve_size  # the same size rules: it only needs `native_size` and `root`

    def __init__(
        self,
        root: Path,
        views: dict[str, _View],
        images: dict[tuple[int, str], Path],
        masks: dict[tuple[int, str], Path] | None,
        flame_params: dict[int, Path] | None,
        n_timesteps: int,
        files: list[Path],
    ) -> None:
        self.root = root
        self.sequences = (root.name,)
        self.serials = tuple(sorted(views))
        self.has_alpha = masks is not None
        self.calibration_files = files
        self._views = views
        self._images = images
        self._masks = masks
        self._flame_params = flame_params
        self._n = n_timesteps

    @classmethod
    def open(cls, root: str | os.PathLike) -> VhapCapture:
        """Read the transforms files and list the images; raise naming the file at the first inconsistency."""
        root = Path(root)
        files = transforms_files(root)
        views: dict[str, _View] = {}
        entries: dict[tuple[int, str], dict[str, str | None]] = {}
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"not a VHAP export: {root} has no {SINGLE_FILE} or {', '.join(SPLIT_FILES)}")
            try:
                frames = json.loads(file.read_text())["frames"]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{file}: not a VHAP transforms file with a 'frames' list ({e})") from e
            for i, frame in enumerate(frames):
                t, serial, view, paths = _read_frame(frame, f"{file}: frame {i}")
                known = views.setdefault(serial, view)
                same = np.allclose(known.K, view.K) and np.allclose(known.world_2_cam, view.world_2_cam, atol=1e-6)
                if known.size != view.size or not same:
                    raise ValueError(
                        f"{view.where}: camera {serial} differs from its calibration in {known.where} "
                        "(one calibration per camera)"
                    )
                if (t, serial) in entries:
                    raise ValueError(f"{view.where}: timestep {t} of camera {serial} is listed twice")
                entries[(t, serial)] = paths
        if not entries:
            raise ValueError(f"{files[0]}: lists no frames")
        timesteps = sorted({t for t, _ in entries})
        if timesteps != list(range(len(timesteps))):
            gap = next(t for t in range(len(timesteps)) if t not in timesteps)
            raise ValueError(f"{root}: timestep_index must run 0..T-1, but {gap} is missing")
        for t in timesteps:
            lacking = sorted(s for s in views if (t, s) not in entries)
            if lacking:
                raise ValueError(f"{root}: camera {lacking[0]} has no frame for timestep {t} (other cameras do)")
        sizes = {v.size for v in views.values()}
        if len(sizes) > 1:
            raise ValueError(f"{root}: cameras have different image sizes {sorted(sizes)}; re-export at one size")

        def existing(kind: str) -> dict[tuple[int, str], Path]:
            out = {}
            for key, paths in entries.items():
                path = root / paths[kind]
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing (listed for timestep {key[0]}, camera {key[1]})")
                out[key] = path
            return out

        images = existing("image")
        has_masks = [p["mask"] is not None for p in entries.values()]
        if any(has_masks) and not all(has_masks):
            raise ValueError(f"{root}: some frames have an fg_mask_path and some do not")
        masks = existing("mask") if all(has_masks) else None
        flame_params = None
        if any(p["flame_param"] is not None for p in entries.values()):
            flame_params = {}
            for (t, serial), paths in sorted(entries.items()):
                if paths["flame_param"] is None:
                    raise ValueError(f"{root}: timestep {t} of camera {serial} has no flame_param_path")
                path = root / paths["flame_param"]
                if flame_params.setdefault(t, path) != path:
                    raise ValueError(f"{root}: timestep {t} names two FLAME files ({flame_params[t]}, {path})")
            for t, path in flame_params.items():
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing (FLAME parameters of timestep {t})")
        return cls(root, views, images, masks, flame_params, len(timesteps), files)

    # ---- sizes and cameras -------------------------------------------------------------------------------

    @property
    def native_size(self) -> tuple[int, int]:
        return next(iter(self._views.values())).size

    def cameras(self, width: int | None = None, height: int | None = None) -> dict[str, Camera]:
        W0, H0 = self.native_size
        W, H = self.resolve_size(width, height)
        return {
            s: Camera(K=v.K, world_2_cam=v.world_2_cam, width=W0, height=H0, serial=s).resized(W, H)
            for s, v in sorted(self._views.items())
        }

    def color_calibration(self) -> dict[str, np.ndarray]:
        raise ValueError(f"{self.root}: a VHAP export has no colour calibration (VHAP corrects colours itself)")

    # ---- checks ------------------------------------------------------------------------------------------

    def _check_sequence(self, seq: str) -> None:
        if seq not in self.sequences:
            raise ValueError(f"{self.root}: no sequence {seq!r} (a VHAP export is one sequence: {self.sequences[0]})")

    def source_files(self, seq: str) -> list[Path]:
        """Every file the frames and tracking are read from (the FLAME head model's description too)."""
        self._check_sequence(seq)
        files = [*self.calibration_files, *self._images.values(), *(self._masks or {}).values()]
        if self.has_tracking(seq):
            # the head pose depends on the FLAME model (`tracking` explains its absence)
            files += [*self._flame_params.values(), *filter(Path.is_file, [self.root / DESCRIPTION_FILE])]
        return files

    def n_frames(self, seq: str) -> int:
        self._check_sequence(seq)
        return self._n

    def has_tracking(self, seq: str) -> bool:
        self._check_sequence(seq)
        return self._flame_params is not None

    def flame_identity_file(self) -> Path | None:
        """The first timestep's FLAME parameters: VHAP tracks one shape (and static offset) per export."""
        return None if self._flame_params is None else self._flame_params[0]

    def tracking(self, seq: str) -> Tracking:
        """Our Tracking from the per-timestep FLAME parameters (needs the capture's FLAME headmodel.json)."""
        self._check_sequence(seq)
        if self._flame_params is None:
            raise FileNotFoundError(f"{self.root}: this VHAP export has no flame_param files (export with mode param)")
        head = capture_flame_head(self.root)
        params = [read_npz(self._flame_params[t], VHAP_KEYS) for t in range(self._n)]
        return tracking_from_vhap(head, params, np.arange(self._n), str(self.root / "flame_param"))

    def validate(self, sequences: Iterable[str] | None = None) -> None:
        for seq in self.sequences if sequences is None else sequences:
            if self.has_tracking(seq):
                self.tracking(seq)

    # ---- frames ------------------------------------------------------------------------------------------

    def read_frames(
        self, seq: str, serial: str, frames: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(timestep, rgb (H, W, 3) uint8, alpha (H, W) uint8 or None) of one camera, in timestep order."""
        self._check_sequence(seq)
        if serial not in self._views:
            raise ValueError(f"{self.root}: no camera {serial!r} (cameras: {list(self.serials)})")
        wanted = sorted(set(range(self._n) if frames is None else frames))
        if wanted and not 0 <= wanted[0] <= wanted[-1] < self._n:
            raise ValueError(f"{seq}: timesteps must lie in [0, {self._n}), got {wanted[0]}..{wanted[-1]}")
        size = self.native_size
        for t in wanted:
            rgb = _read_image(self._images[(t, serial)], size, cv2.IMREAD_COLOR)
            alpha = None if self._masks is None else _read_image(self._masks[(t, serial)], size, cv2.IMREAD_GRAYSCALE)
            yield t, cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB), alpha


def _read_image(path: Path, size: tuple[int, int], mode: int) -> np.ndarray:
    """uint8 BGR (H, W, 3) or grey (H, W) (`mode`, 16-bit files reduced), checked against VHAP's declared size."""
    img = cv2.imread(str(path), mode)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    if img.shape[:2] != (size[1], size[0]):
        W, H = size
        raise ValueError(f"{path}: {img.shape[1]}x{img.shape[0]} pixels, but its transforms file says {W}x{H}")
    return img
