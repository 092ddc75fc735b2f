"""The frame cache: every video decoded once, downscaled, stored as memory-mappable uint8 arrays.

Training reads random (frame, camera) pairs thousands of times per epoch; seeking in H.264 for each would
cost more than the training step. `npga prepare` (npga/data/prepare.py) writes this cache once; the trainer
reads it through `FrameCache`. Layout and `cache.json`: docs/captures.md.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from npga.cameras import Camera
from npga.data.tracking import Tracking
from npga.io.atomic import atomic_path, write_text_atomic
from npga.io.untrusted import CorruptFile, first_line

CACHE_FORMAT = 1
MANIFEST = "cache.json"
KIND = "a frame cache file"


def frames_path(root: Path, seq: str, serial: str) -> Path:
    return root / seq / f"cam_{serial}.npy"


def tracking_path(root: Path, seq: str) -> Path:
    return root / seq / "tracking.npz"


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a cache folder, None when there is none yet."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable cache manifest ({e}); delete the cache folder to rebuild it") from e
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: not a cache manifest of format {CACHE_FORMAT}; delete the cache folder to rebuild")
    entry = {"complete": bool, "n_video_frames": int, "timesteps": list, "tracking": bool, "sources": dict}
    kinds = {"width": int, "height": int, "channels": int, "serials": list, "cameras": dict, "sequences": dict}
    sequences = manifest.get("sequences")
    wrong = [k for k, kind in kinds.items() if not isinstance(manifest.get(k), kind)]
    wrong += [
        f"sequences/{seq}/{k}"
        for seq, e in (sequences.items() if isinstance(sequences, dict) else ())
        for k, kind in entry.items()
        if not isinstance(e, dict) or not isinstance(e.get(k), kind)
    ]
    if wrong:
        raise ValueError(
            f"{path}: damaged cache manifest (bad or missing {wrong[:3]}); delete the cache folder to rebuild"
        )
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Atomically: a reader sees the old or the new manifest, never half of one."""
    write_text_atomic(root / MANIFEST, json.dumps(manifest, indent=1))


def open_frames(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The memory-mapped uint8 frames file at `path`, checked against the `shape` the manifest makes (T, H, W, C)
    and against its own header (a truncated or extended file is damaged): the one check of a frames file."""
    if not path.is_file():
        raise FileNotFoundError(f"frame cache file missing: {path}; run `npga prepare` again to re-make it")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            header = read_header(f)
            offset = f.tell()
    except Exception as e:  # numpy's header parser raises many kinds; the file is damaged whichever
        raise CorruptFile(
            path, KIND, f"not a .npy array: {first_line(e)}; run `npga prepare` again to re-make it"
        ) from None
    claimed, size = header[0], path.stat().st_size
    expected = offset + math.prod(claimed) * header[2].itemsize
    if size != expected:
        raise CorruptFile(
            path, KIND, f"{size} bytes, its header says {expected}; run `npga prepare` again to re-make it"
        )
    if claimed != shape or header[2] != np.uint8 or header[1]:
        raise CorruptFile(
            path,
            KIND,
            f"{header[2]} {claimed}, the manifest says uint8 {shape}; run `npga prepare` again to re-make it",
        )
    return np.load(path, mmap_mode="r", allow_pickle=False)


def has_frames(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether an intact frames file of this shape exists (finished files only appear by rename)."""
    try:
        open_frames(path, shape)
    except (FileNotFoundError, ValueError):
        return False
    return True


def reserve(path: Path) -> None:
    """Allocate every block of the (sparse) file at `path` now; no-op where the system or file system cannot."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise  # (atomic_path names the file being written)
    finally:
        os.close(fd)


@contextmanager
def frames_writer(path: Path, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A writable uint8 memmap of `shape` that appears at `path` only when the block finishes without error.

    The file's blocks are reserved before it is mapped: a disk too full for it is an OSError here, not a SIGBUS
    that kills the process at the first frame written into a hole the disk has no room for.
    """
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        reserve(tmp)
        yield arr
        arr.flush()


class FrameCache:
    """A prepared cache, read-only: cameras at cache size, frames as float32 in [0, 1], tracking."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.width: int = manifest["width"]
        self.height: int = manifest["height"]
        self.has_alpha: bool = manifest["channels"] == 4
        self.serials: tuple[str, ...] = tuple(manifest["serials"])  # cameras with frames
        self.cameras: dict[str, Camera] = {
            s: Camera(
                K=np.array(c["K"]),
                world_2_cam=np.array(c["world_2_cam"]),
                width=self.width,
                height=self.height,
                serial=s,
            )
            for s, c in manifest["cameras"].items()
        }
        self._sequences = {s: e for s, e in manifest["sequences"].items() if e["complete"]}
        self.sequences: tuple[str, ...] = tuple(self._sequences)
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._tracking: dict[str, Tracking] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> FrameCache:
        root = Path(path)
        manifest = read_manifest(root)
        if manifest is None:
            raise FileNotFoundError(f"no frame cache at {root} ({MANIFEST} missing); run `npga prepare` first")
        try:
            cache = cls(root, manifest)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{root / MANIFEST}: damaged cache manifest ({first_line(e)}); delete the cache folder to rebuild"
            ) from None
        if not cache.sequences:
            raise ValueError(f"{root / MANIFEST}: no sequence is finished yet; run `npga prepare` again to resume")
        return cache

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would be pickled as copies of the whole cache (e.g. into DataLoader workers); reopen instead.
        return {**self.__dict__, "_arrays": {}, "_tracking": {}}

    def _entry(self, seq: str) -> dict[str, Any]:
        if seq not in self._sequences:
            raise KeyError(f"{self.root}: sequence {seq!r} is not in the cache (cached: {list(self.sequences)})")
        return self._sequences[seq]

    def n_frames(self, seq: str) -> int:
        return len(self._entry(seq)["timesteps"])

    def n_video_frames(self, seq: str) -> int:
        """Frames in the sequence's videos (rows cover only the tracked ones when it has tracking)."""
        return int(self._entry(seq)["n_video_frames"])

    def timesteps(self, seq: str) -> np.ndarray:
        """(T,) video frame number of each cached row `t`."""
        return np.asarray(self._entry(seq)["timesteps"], dtype=np.int64)

    def array(self, seq: str, serial: str) -> np.ndarray:
        """The memory-mapped uint8 (T, H, W, C) frames of one camera (C = 4 with alpha, else 3)."""
        self._entry(seq)
        if serial not in self.serials:
            raise KeyError(f"{self.root}: no frames for camera {serial!r} (cameras with frames: {list(self.serials)})")
        key = (seq, serial)
        if key not in self._arrays:
            shape = (self.n_frames(seq), self.height, self.width, 4 if self.has_alpha else 3)
            self._arrays[key] = open_frames(frames_path(self.root, seq, serial), shape)
        return self._arrays[key]

    def frames(self, seq: str, t: int, serials: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row `t` of several cameras: rgb (C, H, W, 3) and alpha (C, H, W, 1), float32 in [0, 1].

        Alpha is all ones when the capture has no alpha maps (`has_alpha` False).
        """
        serials = self.serials if serials is None else serials
        n = self.n_frames(seq)
        if not 0 <= t < n:
            raise IndexError(f"{self.root}: frame index {t} out of range for {seq} ({n} frames)")
        rows = np.stack([self.array(seq, s)[t] for s in serials])  # (C, H, W, 3 or 4) uint8
        rgb = rows[..., :3].astype(np.float32) / 255.0
        if self.has_alpha:
            alpha = rows[..., 3:].astype(np.float32) / 255.0
        else:
            alpha = np.ones((*rows.shape[:3], 1), dtype=np.float32)
        return rgb, alpha

    def frame(self, seq: str, serial: str, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Row `t` of one camera: rgb (H, W, 3) and alpha (H, W, 1), float32 in [0, 1]."""
        rgb, alpha = self.frames(seq, t, [serial])
        return rgb[0], alpha[0]

    def has_tracking(self, seq: str) -> bool:
        return bool(self._entry(seq)["tracking"])

    def tracking(self, seq: str) -> Tracking:
        """The sequence's tracking; its arrays are indexed by the same `t` as the frames."""
        if not self.has_tracking(seq):
            raise FileNotFoundError(f"{self.root}: sequence {seq} was cached without tracking (none in the capture)")
        if seq not in self._tracking:
            self._tracking[seq] = Tracking.load(tracking_path(self.root, seq))
        return self._tracking[seq]
