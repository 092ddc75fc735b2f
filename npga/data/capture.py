"""One participant folder of multi-view video: calibration, videos, alpha maps and tracking, checked.

`Capture.open` reads the calibration (which tells the raw from the benchmark layout) and lists files, which
catches most bad input at once without touching a video. `validate` then probes every video (frame count and
size, demuxing only) and checks the tracking, so a capture that would fail half way through `npga prepare` fails
before any decoding. Layouts, frame numbers and tracking indices: docs/captures.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from functools import cached_property
from itertools import zip_longest
from pathlib import Path
from typing import Literal

import numpy as np

from npga import nersemble
from npga.cameras import Camera
from npga.data.color import load_color_calibration
from npga.data.flame_tracking import capture_flame_head, load_nersemble_flame_tracking
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.geometry import check_rotation
from npga.io.video import VideoInfo, iter_video, probe_video

log = logging.getLogger(__name__)

# (W, H) of raw NeRSemble v2 frames: the shared raw intrinsics are in pixels of this size.
RAW_SIZE: tuple[int, int] = (nersemble.RAW_WIDTH, nersemble.RAW_HEIGHT)
LayoutName = Literal["raw", "benchmark"]


def _serial_order(serials: Iterable[str]) -> tuple[str, ...]:
    """Rig order (nersemble.SERIALS) first, any other serial after it, sorted."""
    rank = {s: i for i, s in enumerate(nersemble.SERIALS)}
    return tuple(sorted(serials, key=lambda s: (rank.get(s, len(rank)), s)))


def _matrix(value: object, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{where} is not a numeric matrix ({e})") from e
    if m.shape != shape:
        raise ValueError(f"{where} has shape {m.shape}, expected {shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{where} contains NaN or inf")
    return m


def _read_camera_params(path: Path) -> tuple[LayoutName, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(layout, {serial: world_2_cam (4, 4)}, {serial: K (3, 3)}) from camera_params.json."""
    if not path.is_file():
        raise FileNotFoundError(f"camera calibration not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("world_2_cam"), dict) or "intrinsics" not in data:
        raise ValueError(f"{path}: expected {{'world_2_cam': {{serial: 4x4}}, 'intrinsics': 3x3 or {{serial: 3x3}}}}")
    if not data["world_2_cam"]:
        raise ValueError(f"{path}: 'world_2_cam' lists no camera")
    world_2_cam = {}
    for serial, m in data["world_2_cam"].items():
        w2c = _matrix(m, (4, 4), f"{path}: world_2_cam of serial {serial}")
        if not np.allclose(w2c[3], [0, 0, 0, 1], atol=1e-6):
            raise ValueError(f"{path}: world_2_cam of serial {serial} has last row {w2c[3]}, expected [0 0 0 1]")
        check_rotation(w2c[:3, :3], f"{path}: the rotation of world_2_cam of serial {serial}")
        world_2_cam[str(serial)] = w2c
    intrinsics = data["intrinsics"]
    if isinstance(intrinsics, dict):
        if set(intrinsics) != set(world_2_cam):
            diff = sorted(set(intrinsics) ^ set(world_2_cam))
            raise ValueError(f"{path}: 'intrinsics' and 'world_2_cam' list different serials ({diff})")
        Ks = {s: _matrix(intrinsics[s], (3, 3), f"{path}: intrinsics of serial {s}") for s in world_2_cam}
        return "benchmark", world_2_cam, Ks
    K = _matrix(intrinsics, (3, 3), f"{path}: shared 'intrinsics'")
    return "raw", world_2_cam, {s: K for s in world_2_cam}


def _video_serials(folder: Path) -> set[str]:
    return {p.stem.removeprefix("cam_") for p in folder.glob("cam_*.mp4")} if folder.is_dir() else set()


class Capture:
    """A checked participant folder; use `Capture.open(root)`."""

    def __init__(
        self,
        layout: ParticipantLayout,
        layout_name: LayoutName,
        world_2_cam: dict[str, np.ndarray],
        intrinsics: dict[str, np.ndarray],
        sequences: tuple[str, ...],
        serials: tuple[str, ...],
        has_alpha: bool,
    ) -> None:
        self.paths = layout
        self.layout = layout_name
        self.sequences = sequences  # without BACKGROUND
        self.serials = serials  # cameras with videos, rig order
        self.has_alpha = has_alpha  # alpha maps next to every video (benchmark layout; raw v2 has none)
        self._world_2_cam = world_2_cam
        self._intrinsics = intrinsics
        self._n_frames: dict[str, int] = {}

    @property
    def root(self) -> Path:
        return self.paths.root

    @classmethod
    def open(cls, root: str | os.PathLike) -> Capture:
        """Read the calibration and list the videos; raise naming the file at the first inconsistency."""
        paths = ParticipantLayout(Path(root))
        if not paths.root.is_dir():
            raise FileNotFoundError(f"capture folder not found: {paths.root}")
        layout_name, world_2_cam, intrinsics = _read_camera_params(paths.camera_params)
        seq_dirs = sorted(paths.sequences_dir.iterdir()) if paths.sequences_dir.is_dir() else []
        sequences = tuple(d.name for d in seq_dirs if d.is_dir() and d.name != nersemble.BACKGROUND_SEQUENCE)
        if not sequences:
            raise FileNotFoundError(f"no sequences in {paths.sequences_dir}")

        videos = {seq: _video_serials(paths.video(seq, "x").parent) for seq in sequences}
        for seq, found in videos.items():
            if not found:
                raise ValueError(f"{paths.video(seq, 'x').parent}: no videos (cam_<serial>.mp4)")
            uncalibrated = sorted(found - set(world_2_cam))
            if uncalibrated:
                s = uncalibrated[0]
                raise ValueError(f"{paths.video(seq, s)}: camera {s} has no calibration in {paths.camera_params}")
        all_serials = set().union(*videos.values())
        for seq, found in videos.items():
            missing = sorted(all_serials - found)
            if missing:
                s = missing[0]
                raise ValueError(f"{paths.video(seq, s)} is missing (other sequences have camera {s})")
        # The benchmark withholds the videos of its hold-out cameras; any other calibrated camera needs videos.
        unfilmed = sorted(set(world_2_cam) - all_serials - set(nersemble.HOLDOUT_SERIALS))
        if unfilmed:
            raise ValueError(
                f"{paths.camera_params} calibrates camera {unfilmed[0]}, "
                f"but {paths.video(sequences[0], unfilmed[0])} is missing"
            )

        has_alpha = any(paths.alpha_video(s, "x").parent.is_dir() for s in sequences)
        if has_alpha:
            for seq in sequences:
                alphas = _video_serials(paths.alpha_video(seq, "x").parent)
                if videos[seq] - alphas:
                    s = min(videos[seq] - alphas)
                    raise ValueError(f"{paths.alpha_video(seq, s)} is missing (the image video exists)")
                if alphas - videos[seq]:
                    s = min(alphas - videos[seq])
                    raise ValueError(f"{paths.alpha_video(seq, s)} has no image video {paths.video(seq, s)}")
        else:
            log.info("%s: %s layout without alpha maps; frames are used unmasked", paths.root, layout_name)
        return cls(paths, layout_name, world_2_cam, intrinsics, sequences, _serial_order(all_serials), has_alpha)

    # ---- sizes and cameras -------------------------------------------------------------------------------

    @cached_property
    def native_size(self) -> tuple[int, int]:
        """(W, H) of the videos, probed from the first one; `validate` checks that all agree."""
        info = probe_video(self.paths.video(self.sequences[0], self.serials[0]))
        return info.width, info.height

    def resolve_size(self, width: int | None = None, height: int | None = None) -> tuple[int, int]:
        """(W, H) for a requested width and/or height, keeping the videos' aspect ratio; neither: native."""
        W0, H0 = self.native_size
        if width is None and height is None:
            return W0, H0
        if width is None:
            width = max(1, round(height * W0 / H0))
        elif height is None:
            height = max(1, round(width * H0 / W0))
        elif abs(round(height * W0 / H0) - width) > 1:
            raise ValueError(f"{self.root}: {width}x{height} does not keep the videos' aspect ratio {W0}x{H0}")
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        return width, height

    def cameras(self, width: int | None = None, height: int | None = None) -> dict[str, Camera]:
        """{serial: Camera} for every calibrated camera (hold-outs without videos too) at the requested size."""
        W, H = self.resolve_size(width, height)
        calib_size = RAW_SIZE if self.layout == "raw" else self.native_size
        return {
            s: Camera(
                K=self._intrinsics[s],
                world_2_cam=self._world_2_cam[s],
                width=calib_size[0],
                height=calib_size[1],
                serial=s,
            ).resized(W, H)
            for s in _serial_order(self._world_2_cam)
        }

    def color_calibration(self) -> dict[str, np.ndarray]:
        """{serial: CCM (3, terms)} from `color_calibration.json` (raw NeRSemble v2)."""
        return load_color_calibration(self.paths.color_calibration, self.serials)

    @property
    def calibration_files(self) -> list[Path]:
        """The files the cameras are read from (a frame cache made from other ones is stale)."""
        return [self.paths.camera_params]

    # ---- checks ------------------------------------------------------------------------------------------

    def source_files(self, seq: str) -> list[Path]:
        """Every file the frames and tracking of `seq` are read from (tracking only if present)."""
        files = [self.paths.video(seq, s) for s in self.serials]
        if self.has_alpha:
            files += [self.paths.alpha_video(seq, s) for s in self.serials]
        if self._flame_tracked(seq):  # the head pose depends on the FLAME model (`tracking` explains its absence)
            files += [self.paths.flame_tracking(seq), *filter(Path.is_file, [self.paths.headmodel])]
        elif self.has_tracking(seq):
            files.append(self.paths.tracking(seq))
        return files

    def _check_videos(self, seq: str) -> int:
        """Probe every video of `seq`: readable, one size, one length. Returns the frame count."""
        if seq not in self.sequences:
            raise ValueError(f"{self.root}: no sequence {seq!r} (sequences: {list(self.sequences)})")
        W, H = self.native_size
        ref: tuple[Path, VideoInfo] | None = None
        for path in self.source_files(seq):
            if path.suffix != ".mp4":
                continue
            info = probe_video(path)
            if (info.width, info.height) != (W, H):
                first = self.paths.video(self.sequences[0], self.serials[0])
                raise ValueError(f"{path}: {info.width}x{info.height} frames, but {first} has {W}x{H}")
            if ref is not None and info.n_frames != ref[1].n_frames:
                raise ValueError(
                    f"{path}: {info.n_frames} frames, but {ref[0]} has {ref[1].n_frames}; "
                    "the videos of one sequence must be equally long"
                )
            ref = ref or (path, info)
        if self.layout == "raw" and abs(W / H - RAW_SIZE[0] / RAW_SIZE[1]) > 0.01 * RAW_SIZE[0] / RAW_SIZE[1]:
            raise ValueError(
                f"{ref[0]}: {W}x{H} frames do not have the aspect ratio of the raw NeRSemble intrinsics in "
                f"{self.paths.camera_params} ({RAW_SIZE[0]}x{RAW_SIZE[1]})"
            )
        return ref[1].n_frames

    def n_frames(self, seq: str) -> int:
        """Number of video frames of `seq` (probed and checked once)."""
        if seq not in self._n_frames:
            self._n_frames[seq] = self._check_videos(seq)
        return self._n_frames[seq]

    def has_tracking(self, seq: str) -> bool:
        return self.paths.tracking(seq).is_file() or self.paths.flame_tracking(seq).is_file()

    def flame_identity_file(self) -> Path | None:
        """The benchmark's FLAME tracking of the first sequence that has one (its `shape` is the identity)."""
        return next((p for p in map(self.paths.flame_tracking, self.sequences) if p.is_file()), None)

    def _flame_tracked(self, seq: str) -> bool:
        """Tracked only by the NeRSemble benchmark's FLAME tracking (its monocular-avatar task), not by ours."""
        return not self.paths.tracking(seq).is_file() and self.paths.flame_tracking(seq).is_file()

    def tracking(self, seq: str) -> Tracking:
        """The sequence's tracking, checked against its videos (see the module docstring on frame numbers)."""
        path = self.paths.tracking(seq)
        if self._flame_tracked(seq):
            path = self.paths.flame_tracking(seq)
            tracking = load_nersemble_flame_tracking(path, capture_flame_head(self.root))
        elif not path.is_file():
            raise FileNotFoundError(f"no tracking for sequence {seq}: {path} (run the expression tracker first)")
        else:
            tracking = Tracking.load(path)
        ts, n = tracking.timesteps, self.n_frames(seq)
        if not np.issubdtype(ts.dtype, np.integer) and not np.array_equal(ts, np.round(ts)):
            raise ValueError(f"{path}: 'timesteps' must be integer frame numbers")
        if tracking.n_frames > n:
            raise ValueError(f"{path}: {tracking.n_frames} tracked frames, but the videos of {seq} have {n}")
        if (ts < 0).any() or (ts >= n).any():
            raise ValueError(f"{path}: 'timesteps' must lie in [0, {n}) (video frames), got {ts.min()}..{ts.max()}")
        if (np.diff(ts) <= 0).any():
            raise ValueError(f"{path}: 'timesteps' must be strictly increasing")
        return tracking

    def validate(self, sequences: Iterable[str] | None = None) -> None:
        """Probe every video and check tracking of `sequences` (default: all), before any long work."""
        for seq in self.sequences if sequences is None else sequences:
            self.n_frames(seq)
            if self.has_tracking(seq):
                self.tracking(seq)

    # ---- frames ------------------------------------------------------------------------------------------

    def read_frames(
        self, seq: str, serial: str, frames: Iterable[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Decode one camera of `seq` in order: (frame number, rgb (H, W, 3) uint8, alpha (H, W) uint8 or None).

        `frames`: the frame numbers to yield (default all); decoding stops after the last one. Alpha is
        the decoded (lossy) alpha video, None without alpha maps.
        """
        n = self.n_frames(seq)
        wanted = sorted(set(range(n) if frames is None else frames))
        if wanted and not 0 <= wanted[0] <= wanted[-1] < n:
            raise ValueError(f"{seq}: frame numbers must lie in [0, {n}), got {wanted[0]}..{wanted[-1]}")
        video = self.paths.video(seq, serial)
        if serial not in self.serials:
            raise ValueError(f"{self.root}: no videos for camera {serial!r} (cameras: {list(self.serials)})")
        images = iter_video(video)
        alphas = iter_video(self.paths.alpha_video(seq, serial), grey=True) if self.has_alpha else iter(())
        todo = iter(wanted)
        next_frame = next(todo, None)
        try:
            for t, (rgb, alpha) in enumerate(zip_longest(images, alphas)):
                if next_frame is None:
                    return
                if rgb is None or (self.has_alpha and alpha is None):
                    short = video if rgb is None else self.paths.alpha_video(seq, serial)
                    raise ValueError(f"{short}: video ended at frame {t}; expected {n} frames")
                if t == next_frame:
                    yield t, rgb, alpha
                    next_frame = next(todo, None)
            if next_frame is not None:
                raise ValueError(f"{video}: decoded fewer frames than the {n} its container lists")
        finally:
            images.close()
            if self.has_alpha:
                alphas.close()
