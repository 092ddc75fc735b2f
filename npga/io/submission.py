"""NeRSemble novel-view-synthesis benchmark submissions: the official zip layout and its checks.

`check_submission` applies the checks the official toolkit applies (file names, frame counts, resolution), so a
submission is refused here rather than by the benchmark. Layout: docs/evaluation.md.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from npga import nersemble
from npga.io.atomic import atomic_path
from npga.io.video import write_video

_SHAPE = (nersemble.BENCHMARK_HEIGHT, nersemble.BENCHMARK_WIDTH, 3)  # uint8 RGB frames
_ENTRY = re.compile(r"^(\d{3})/([\w\-+]+)/cam_(\w+)\.mp4$")


def submission_entry(participant: int, sequence: str, serial: str) -> str:
    """Path of one video inside the zip."""
    return f"{participant:03d}/{sequence}/cam_{serial}.mp4"


def check_benchmark_target(participant: int, sequence: str) -> None:
    """Refuse anything that is not a benchmark participant/sequence pair."""
    if participant not in nersemble.NVS_BENCHMARK_SEQUENCES:
        raise ValueError(
            f"participant {participant:03d} is not in the NeRSemble NVS benchmark "
            f"(benchmark participants: {sorted(nersemble.NVS_BENCHMARK_SEQUENCES)})"
        )
    expected = nersemble.NVS_BENCHMARK_SEQUENCES[participant]
    if sequence != expected:
        raise ValueError(f"participant {participant:03d}: the benchmark sequence is {expected!r}, not {sequence!r}")


class SubmissionWriter:
    """Writes a submission zip; the zip appears under its final name only when closed without error."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._stack = ExitStack()  # closes the zip, then renames it (or removes it after an error)
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._zip = self._stack.enter_context(zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED))

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._stack.__exit__(exc_type, exc, tb)

    def add_video(self, participant: int, sequence: str, serial: str, frames: Iterable[np.ndarray]) -> int:
        """Add one hold-out camera's video; frames are uint8 (1604, 1100, 3). Returns the frame count."""
        check_benchmark_target(participant, sequence)
        if serial not in nersemble.HOLDOUT_SERIALS:
            raise ValueError(f"serial {serial} is not a hold-out camera {nersemble.HOLDOUT_SERIALS}")

        def checked(frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
            for frame in frames:
                if frame.dtype != np.uint8 or frame.shape != _SHAPE:
                    raise ValueError(f"submission frames must be uint8 {_SHAPE}, got {frame.dtype} {frame.shape}")
                yield frame

        with tempfile.TemporaryDirectory() as tmp:
            video = Path(tmp) / "video.mp4"
            n = write_video(video, checked(frames), fps=nersemble.FPS, quality=9.5)
            self._zip.write(video, submission_entry(participant, sequence, serial))
        return n


def check_submission(path: str | os.PathLike, expected_frames: dict[str, int]) -> list[str]:
    """Problems with a submission zip, as readable lines (empty when it passes).

    `expected_frames` maps each expected entry (see `submission_entry`) to its number of timesteps.
    """
    problems: list[str] = []
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for name in sorted(names):
            if not _ENTRY.match(name):
                problems.append(f"{name}: unexpected file name")
        for name, n_expected in sorted(expected_frames.items()):
            if name not in names:
                problems.append(f"{name}: missing")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                video = Path(tmp) / "v.mp4"
                video.write_bytes(zf.read(name))
                reader = imageio.get_reader(video, format="FFMPEG")
                try:
                    frames = [np.asarray(f) for f in reader]
                finally:
                    reader.close()
            if len(frames) != n_expected:
                problems.append(f"{name}: {len(frames)} frames, expected {n_expected}")
            if frames:
                h, w = frames[0].shape[:2]
                if (w, h) != (nersemble.BENCHMARK_WIDTH, nersemble.BENCHMARK_HEIGHT):
                    problems.append(
                        f"{name}: {w}x{h}, expected {nersemble.BENCHMARK_WIDTH}x{nersemble.BENCHMARK_HEIGHT}"
                    )
                if frames[0].ndim != 3 or frames[0].shape[2] != 3 or frames[0].dtype != np.uint8:
                    problems.append(f"{name}: frames are not uint8 RGB")
    return problems
