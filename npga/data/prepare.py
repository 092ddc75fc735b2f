"""`npga prepare`: decode a capture's videos once into a downscaled frame cache (format: docs/captures.md).

Everything is checked before the first frame is decoded (calibration, video lengths and sizes, tracking,
colour calibration), so bad input fails in seconds and leaves nothing behind. Each camera file appears
only when complete, so an interrupted run resumes where it stopped; a cache whose sources or settings
changed is refused (or rebuilt with `--overwrite`), never silently mixed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from npga import nersemble
from npga.config import AtLeast1, OutFolder
from npga.data.cache import (
    CACHE_FORMAT,
    MANIFEST,
    FrameCache,
    frames_path,
    frames_writer,
    has_frames,
    read_manifest,
    tracking_path,
    write_manifest,
)
from npga.data.capture import Capture
from npga.data.color import correct_colors
from npga.data.flame_tracking import write_flame_head
from npga.data.readers import open_capture
from npga.data.tracking import Tracking
from npga.data.vhap import VhapCapture
from npga.io.atomic import temp_path
from npga.io.lock import folder_lock

log = logging.getLogger(__name__)

DEFAULT_HEIGHT = nersemble.PAPER_HEIGHT
# Decoded (lossy) alpha at or below 12/255 becomes 0, at or above 243/255 becomes 1, linear in between:
# removes the codec's speckle in the flat regions and keeps the soft edges.
ALPHA_RANGE = (12, 243)


@dataclass(frozen=True)
class PrepareConfig:
    capture: Path
    """Participant folder: raw NeRSemble v2, NeRSemble benchmark, a synthetic capture (`npga synth`), or a VHAP
    export (transforms_*.json + images/ + fg_masks/ + flame_param/)."""
    height: AtLeast1 | None = DEFAULT_HEIGHT
    """Cache image height in pixels (802: the paper's 550 x 802); the width keeps the videos' aspect ratio.
    Never upsamples: capped at the video height. None: the videos' own size."""
    out: OutFolder | None = None
    """Cache folder. Default: {capture}/cache/{W}x{H}."""
    sequences: tuple[str, ...] = ()
    """Sequences to prepare. Empty: all of the capture's sequences."""
    color_correction: bool = False
    """Apply the per-camera colour correction of calibration/color_calibration.json (raw NeRSemble v2)."""
    overwrite: bool = False
    """Rebuild a cache whose sources or settings changed, instead of refusing."""
    flame_model: Path | None = None
    """Your FLAME model (.npz) for FLAME-tracked input (a VHAP export, the NeRSemble benchmark's FLAME tracking):
    writes the capture's headmodel.json (type flame) with the tracked identity. Needed once per capture."""


def clean_alpha(alpha: np.ndarray) -> np.ndarray:
    """(H, W) uint8 decoded alpha -> float32 in [0, 1] without the codec's noise near 0 and 1."""
    lo, hi = ALPHA_RANGE
    return np.clip((alpha.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def cache_frame(rgb: np.ndarray, alpha: np.ndarray | None, size: tuple[int, int], ccm: np.ndarray | None) -> np.ndarray:
    """One decoded frame -> uint8 (H, W, 3 or 4) at `size` (W, H): area-downscaled, colour corrected, alpha cleaned.

    Colour correction follows the downscale, as in the official NeRSemble loader (and at a fraction of the cost).
    """
    W, H = size
    same = rgb.shape[:2] == (H, W)
    out = rgb if same else cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)  # (H, W, 3)
    if ccm is not None:
        out = correct_colors(out, ccm)
    if alpha is None:
        return out
    a = clean_alpha(alpha)
    a = a if same else cv2.resize(a, (W, H), interpolation=cv2.INTER_AREA)  # (H, W)
    return np.concatenate([out, np.round(a * 255.0).astype(np.uint8)[..., None]], axis=-1)


def _stats(root: Path, files: Iterable[Path]) -> dict[str, list[int]]:
    """{path relative to the capture: [size, mtime_ns]}: enough to notice a replaced or re-encoded source."""
    return {str(f.relative_to(root)): [(st := f.stat()).st_size, st.st_mtime_ns] for f in files}


def _settings(cap: Capture | VhapCapture, size: tuple[int, int], color_correction: bool) -> dict[str, Any]:
    """The manifest keys that must match for an existing cache to be reused."""
    calibration = cap.calibration_files + ([cap.paths.color_calibration] if color_correction else [])
    return {
        "format": CACHE_FORMAT,
        "layout": cap.layout,
        "width": size[0],
        "height": size[1],
        "channels": 4 if cap.has_alpha else 3,
        "color_correction": color_correction,
        "alpha_range": list(ALPHA_RANGE),
        "serials": list(cap.serials),
        "calibration": _stats(cap.root, calibration),
    }


def _remove_sequence(out: Path, seq: str) -> None:
    """Delete the files this module writes for `seq` (and nothing else a user may keep there)."""
    folder = out / seq
    frames, tracking = frames_path(out, seq, "*"), tracking_path(out, seq)  # with their unfinished writes
    temps = [*folder.glob(temp_path(frames, "*").name), *folder.glob(temp_path(tracking, "*").name)]
    for f in [*folder.glob(frames.name), tracking, *temps]:
        f.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    key = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    return f"{key}: cached {old.get(key)!r}, now {new.get(key)!r}"


def _damaged_file(out: Path, seq: str, entry: dict[str, Any], settings: dict[str, Any]) -> Path | None:
    """The first file of a cached sequence that is missing or damaged (a disk error, a copy cut short), else None."""
    shape = (len(entry["timesteps"]), settings["height"], settings["width"], settings["channels"])
    for serial in settings["serials"]:
        if not has_frames(frames_path(out, seq, serial), shape):
            return frames_path(out, seq, serial)
    if entry["tracking"]:
        try:
            Tracking.load(tracking_path(out, seq))
        except (FileNotFoundError, ValueError):
            return tracking_path(out, seq)
    return None


def _output_size(cap: Capture | VhapCapture, height: int | None) -> tuple[int, int]:
    if height is not None and height <= 0:
        raise ValueError(f"height must be positive, got {height}")
    native_h = cap.native_size[1]
    if height is not None and height > native_h:
        log.info("%s: videos are %d px high; caching at that height instead of %d", cap.root, native_h, height)
        height = native_h
    return cap.resolve_size(height=height)


def prepare(cfg: PrepareConfig) -> Path:
    """Build or resume the frame cache of `cfg.capture`; returns the cache folder."""
    cap = open_capture(cfg.capture)
    if cfg.flame_model is not None:
        identity = cap.flame_identity_file()
        if identity is None:
            raise ValueError(
                f"--flame-model: {cap.root} has no FLAME tracking (a VHAP export's flame_param/ or "
                "the NeRSemble benchmark's tracking/flame2023_tracking.npz)"
            )
        write_flame_head(cap.root, cfg.flame_model, identity)
    unknown = [s for s in cfg.sequences if s not in cap.sequences]
    if unknown:
        raise ValueError(f"{cap.root}: no sequence(s) {unknown} (sequences: {list(cap.sequences)})")
    sequences = cfg.sequences or cap.sequences
    ccms = cap.color_calibration() if cfg.color_correction else None
    size = _output_size(cap, cfg.height)
    out = Path(cfg.out) if cfg.out is not None else cap.root / "cache" / f"{size[0]}x{size[1]}"
    settings = _settings(cap, size, cfg.color_correction)
    sources = {seq: _stats(cap.root, cap.source_files(seq)) for seq in sequences}

    old = read_manifest(out)
    changed = old is not None and {k: old.get(k) for k in settings} != settings
    if changed and not cfg.overwrite:
        raise ValueError(
            f"{out / MANIFEST}: the cache was made with other settings or calibration "
            f"({_first_difference({k: old.get(k) for k in settings}, settings)}); "
            "use --overwrite to rebuild it, or another --out"
        )
    entries = {} if old is None or changed else old["sequences"]
    stale = [seq for seq in sequences if seq in entries and entries[seq]["sources"] != sources[seq]]
    if stale and not cfg.overwrite:
        seq = stale[0]
        raise ValueError(
            f"{out / MANIFEST}: sequence {seq} changed since it was cached "
            f"({_first_difference(entries[seq]['sources'], sources[seq])}); use --overwrite to rebuild it"
        )
    for seq in sequences:
        damaged = entries.get(seq, {}).get("complete") and _damaged_file(out, seq, entries[seq], settings)
        if damaged:
            log.warning("%s is missing or damaged; caching sequence %s again", damaged, seq)
            entries[seq]["complete"] = False
    if not changed and not stale and all(entries.get(seq, {}).get("complete") for seq in sequences):
        log.info("frame cache %s is up to date", out)
        return out

    # Check everything before decoding anything; nothing is written if this fails.
    cap.validate(sequences)
    timesteps = {}
    for seq in sequences:
        if cap.has_tracking(seq):
            timesteps[seq] = cap.tracking(seq).timesteps.astype(np.int64)
        else:
            log.warning("%s: sequence %s has no tracking; caching all frames without it", cap.root, seq)
            timesteps[seq] = np.arange(cap.n_frames(seq))
    for seq in stale:
        del entries[seq]
    for seq in sequences:
        entries.setdefault(
            seq,
            {
                "complete": False,
                "n_video_frames": cap.n_frames(seq),
                "timesteps": timesteps[seq].tolist(),
                "tracking": cap.has_tracking(seq),
                "sources": sources[seq],
            },
        )
    cameras = cap.cameras(*size)
    manifest = {
        **settings,
        "cameras": {s: {"K": c.K.tolist(), "world_2_cam": c.world_2_cam.tolist()} for s, c in cameras.items()},
        "sequences": entries,
    }
    with folder_lock(out, "frame cache"):  # one writer: a second `npga prepare` here fails at once
        # The new manifest no longer vouches for the outdated files, then they go (a finished file is never reused
        # unless its sequence's entry survived).
        write_manifest(out, manifest)
        for seq in [*(old["sequences"] if changed else ()), *stale]:
            _remove_sequence(out, seq)

        todo = [seq for seq in sequences if not entries[seq]["complete"]]
        total = sum(len(timesteps[seq]) for seq in todo) * len(cap.serials)
        log.info("caching %d sequence(s) x %d cameras at %dx%d in %s", len(todo), len(cap.serials), *size, out)
        with tqdm(total=total, unit="frame", desc="npga prepare", disable=None) as bar:
            for seq in todo:
                shape = (len(timesteps[seq]), size[1], size[0], settings["channels"])  # (T, H, W, C)
                for serial in cap.serials:
                    bar.set_postfix_str(f"{seq} cam {serial}")
                    path = frames_path(out, seq, serial)
                    if has_frames(path, shape):
                        bar.update(shape[0])
                        continue
                    ccm = None if ccms is None else ccms[serial]
                    with frames_writer(path, shape) as arr:
                        frames = cap.read_frames(seq, serial, timesteps[seq].tolist())
                        for i, (_, rgb, alpha) in enumerate(frames):
                            arr[i] = cache_frame(rgb, alpha, size, ccm)
                            bar.update(1)
                if cap.has_tracking(seq):
                    cap.tracking(seq).save(tracking_path(out, seq))
                entries[seq]["complete"] = True
                write_manifest(out, manifest)
    log.info("frame cache ready: %s", out)
    return out


def open_or_prepare(
    capture: str | os.PathLike,
    height: int | None = DEFAULT_HEIGHT,
    sequences: tuple[str, ...] = (),
    color_correction: bool = False,
) -> FrameCache:
    """The capture's frame cache at the default location, built or resumed first when needed (trainers call this)."""
    cfg = PrepareConfig(capture=Path(capture), height=height, sequences=sequences, color_correction=color_correction)
    return FrameCache.open(prepare(cfg))
