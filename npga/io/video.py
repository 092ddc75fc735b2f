"""mp4 reading and writing through imageio-ffmpeg (no system ffmpeg needed).

Frames are uint8 (H, W, 3) RGB or (H, W) grey. Writing never resizes (`macro_block_size=1`), so
sizes such as NeRSemble's 1100 x 1604 survive a round trip; libx264 with yuv420p needs even sizes.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np

from npga.io.atomic import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (clipped) -> uint8, rounded to nearest: what every written frame goes through."""
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, quality: float = 9.0) -> int:
    """Write frames to an H.264 mp4 (quality 0..10, 10 is best); returns the number of frames.

    Written atomically (npga/io/atomic.py), so an interrupted write leaves no broken file.
    """
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        with imageio.get_writer(
            tmp,
            fps=fps,
            codec="libx264",
            quality=quality,
            macro_block_size=1,
            pixelformat="yuv420p",
            ffmpeg_log_level="error",
        ) as writer:
            for frame in frames:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8:
                    raise ValueError(f"{path}: frames must be uint8, got {frame.dtype}")
                if frame.shape[0] % 2 or frame.shape[1] % 2:
                    raise ValueError(f"{path}: H.264 needs even frame sizes, got {frame.shape[1]}x{frame.shape[0]}")
                writer.append_data(frame)
                n += 1
    return n


def iter_video(path: str | os.PathLike, grey: bool = False) -> Iterator[np.ndarray]:
    """Frames of an mp4 in order: uint8 (H, W, 3), or (H, W) when `grey`. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        reader = imageio.get_reader(path, format="FFMPEG")
    except Exception as e:  # imageio raises several types for broken files
        raise ValueError(f"{path}: not a readable video ({e})") from e
    try:
        for frame in reader:
            frame = np.asarray(frame)
            yield frame[..., 0] if grey and frame.ndim == 3 else frame
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: video could not be decoded ({e})") from e
    finally:
        reader.close()


def read_video(path: str | os.PathLike, grey: bool = False) -> np.ndarray:
    """All frames of an mp4: (T, H, W, 3) or (T, H, W) uint8."""
    frames = list(iter_video(path, grey=grey))
    if not frames:
        raise ValueError(f"{path}: video has no frames")
    return np.stack(frames)


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    width: int
    height: int
    fps: float


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, size and frame rate of an mp4 without decoding it.

    ffmpeg copies the packets to a null muxer (demuxing only): exact frame counts at about 1/20 of the cost
    of decoding (0.08 s vs 1.8 s for 60 frames of 1100 x 1604), so whole captures can be checked up front.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    cmd += ["-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    log = result.stderr
    if result.returncode != 0:
        last = log.strip().splitlines()[-1] if log.strip() else f"exit code {result.returncode}"
        raise ValueError(f"{path}: not a readable video (ffmpeg: {last})")
    stream = re.search(r"Stream #0:\d.*?Video: .*?, (\d+)x(\d+)[\s,\[].*?(\d+(?:\.\d+)?) fps", log)
    frames = re.findall(r"frame=\s*(\d+)", log)
    if stream is None or not frames:
        raise ValueError(f"{path}: not a readable video (no video stream found)")
    n = int(frames[-1])
    if n == 0:
        raise ValueError(f"{path}: video has no frames")
    return VideoInfo(n_frames=n, width=int(stream[1]), height=int(stream[2]), fps=float(stream[3]))
