"""`npga submit AVATAR_OR_RUN`: a NeRSemble novel-view-synthesis benchmark submission from a trained avatar.

The benchmark scores the three hold-out cameras on every timestep of one sequence per participant. The
participant id is the capture folder's name (`.../443`), the sequence is the benchmark's for that participant;
every timestep needs tracking, since the avatar is driven by it (read from the frame cache the avatar was
trained on). Frames are rendered at the benchmark's size from the calibrated hold-out cameras
(docs/evaluation.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from tqdm import tqdm

from npga import nersemble
from npga.commands.common import (
    Runtime,
    RuntimeOptions,
    open_avatar,
    open_training_cache,
    tracked_renderer,
    trained_capture,
)
from npga.config import OutFile
from npga.data.cache import FrameCache
from npga.evaluate import Renderer
from npga.io.submission import SubmissionWriter, check_benchmark_target, check_submission, submission_entry
from npga.io.video import to_uint8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    avatar: tyro.conf.Positional[Path]
    """Avatar file (`RUN/avatar.npga`) or run folder trained on a benchmark participant."""
    out: OutFile = Path("submission.zip")
    """The zip to write (it appears only when complete and checked)."""
    capture: Path | None = None
    """The capture's folder when it moved since training (default: the one the avatar recorded)."""
    runtime: Runtime = RuntimeOptions(precision="float32")  # float32: the benchmark scores the avatar's own renders


def benchmark_target(capture: Path) -> tuple[int, str]:
    """(participant id, benchmark sequence) of a capture folder named like a benchmark participant."""
    name = Path(capture).resolve().name
    if not name.isdigit():
        participants = sorted(nersemble.NVS_BENCHMARK_SEQUENCES)
        raise ValueError(
            f"{capture}: the folder name {name!r} is not a participant id; a benchmark submission needs "
            f"a capture of one of the participants {participants}"
        )
    participant = int(name)
    check_benchmark_target(participant, nersemble.NVS_BENCHMARK_SEQUENCES.get(participant, ""))
    return participant, nersemble.NVS_BENCHMARK_SEQUENCES[participant]


def _check_coverage(cache: FrameCache, sequence: str) -> int:
    """The sequence's number of timesteps, after checking that every one of them can be rendered."""
    if sequence not in cache.sequences:
        raise ValueError(
            f"{cache.root}: {sequence}, the benchmark sequence of this participant, is not in the "
            "frame cache; run `npga prepare` on the capture"
        )
    n = cache.n_video_frames(sequence)
    missing = sorted(set(range(n)) - set(cache.timesteps(sequence).tolist())) if cache.has_tracking(sequence) else [0]
    if missing:
        raise ValueError(
            f"{cache.root}: {sequence} has no tracking for {len(missing)} of {n} timesteps "
            f"(first: {missing[:5]}); the benchmark needs every timestep"
        )
    absent = [s for s in nersemble.HOLDOUT_SERIALS if s not in cache.cameras]
    if absent:
        raise ValueError(f"{cache.root}: hold-out cameras {absent} are not calibrated")
    return n


def _frames(render: Renderer, cache: FrameCache, sequence: str, serial: str, n: int) -> Iterator[np.ndarray]:
    camera = cache.cameras[serial].resized(nersemble.BENCHMARK_WIDTH, nersemble.BENCHMARK_HEIGHT)
    for t in tqdm(range(n), desc=f"cam_{serial}", unit="frame"):
        rgb, _ = render(sequence, t, [camera])
        yield to_uint8(rgb[0].cpu().numpy())


def main(cfg: Config) -> Path:
    """Render, write and check the zip; returns its path."""
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    participant, sequence = benchmark_target(trained_capture(avatar, cfg.capture))
    cache = open_training_cache(file, avatar, cfg.capture)
    n = _check_coverage(cache, sequence)
    if sequence in avatar.split.heldout_sequences:
        log.warning(
            "%s was held out of training: the submission shows new expressions as well as new views "
            "(train with --heldout-sequences to include it)",
            sequence,
        )
    render = tracked_renderer(avatar, cache)
    with SubmissionWriter(cfg.out) as writer:
        for serial in nersemble.HOLDOUT_SERIALS:
            writer.add_video(participant, sequence, serial, _frames(render, cache, sequence, serial, n))
    expected = {submission_entry(participant, sequence, s): n for s in nersemble.HOLDOUT_SERIALS}
    problems = check_submission(cfg.out, expected)
    if problems:
        raise ValueError(f"{cfg.out} fails the benchmark's checks:\n  " + "\n  ".join(problems))
    print(
        f"submission for participant {participant:03d} / {sequence} ({n} timesteps x "
        f"{len(nersemble.HOLDOUT_SERIALS)} cameras): {cfg.out}"
    )
    return cfg.out
