"""`npga submit`: a NeRSemble novel-view-synthesis benchmark submission from a trained run.

The benchmark scores the three hold-out cameras on every timestep of one sequence per participant
(DESIGN.md section 5). The participant id is the capture folder's name (`.../443`), the sequence is the
benchmark's for that participant; every timestep needs tracking, since the avatar is driven by it.
Frames are rendered at the benchmark's 1100 x 1604 from the calibrated hold-out cameras.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from npga.config import DeviceName, resolve_device
from npga.data.capture import Capture
from npga.data.layout import NERSEMBLE_HOLDOUT_SERIALS
from npga.io.submission import (
    NVS_BENCHMARK_SEQUENCES,
    SUBMISSION_HEIGHT,
    SUBMISSION_WIDTH,
    SubmissionWriter,
    check_benchmark_target,
    check_submission,
    submission_entry,
)
from npga.io.video import to_uint8
from npga.run import Avatar, load_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitConfig:
    run: Path
    """Run folder written by `npga train` on a benchmark participant."""
    out: Path = Path("submission.zip")
    """The zip to write (it appears only when complete and checked)."""
    capture: Path | None = None
    """The capture's folder when it moved since training (default: the one the run recorded)."""
    device: DeviceName = "auto"


def benchmark_target(capture: Path) -> tuple[int, str]:
    """(participant id, benchmark sequence) of a capture folder named like a benchmark participant."""
    name = Path(capture).resolve().name
    if not name.isdigit():
        raise ValueError(f"{capture}: the folder name {name!r} is not a participant id; a benchmark submission "
                         f"needs a capture of one of the participants {sorted(NVS_BENCHMARK_SEQUENCES)}")  # fmt: skip
    participant = int(name)
    check_benchmark_target(participant, NVS_BENCHMARK_SEQUENCES.get(participant, ""))
    return participant, NVS_BENCHMARK_SEQUENCES[participant]


def _check_coverage(avatar: Avatar, capture: Capture, sequence: str) -> int:
    """The sequence's number of timesteps, after checking that the run can render every one of them."""
    if sequence not in capture.sequences:
        raise ValueError(f"{capture.root}: no sequence {sequence!r}, the benchmark sequence of this participant")
    if sequence not in avatar.cache.sequences:
        raise ValueError(f"{avatar.cache.root}: {sequence} is not in the frame cache; run `npga prepare` on "
                         f"{capture.root}")  # fmt: skip
    n = capture.n_frames(sequence)
    tracked = avatar.cache.timesteps(sequence)
    missing = sorted(set(range(n)) - set(tracked.tolist()))
    if missing:
        raise ValueError(f"{capture.paths.tracking(sequence)}: no tracking for {len(missing)} of {n} timesteps "
                         f"(first: {missing[:5]}); the benchmark needs every timestep")  # fmt: skip
    absent = [s for s in NERSEMBLE_HOLDOUT_SERIALS if s not in avatar.cache.cameras]
    if absent:
        raise ValueError(f"{capture.root}: hold-out cameras {absent} are not calibrated")
    return n


def _frames(avatar: Avatar, sequence: str, serial: str, n: int) -> Iterator[np.ndarray]:
    camera = avatar.cache.cameras[serial].resized(SUBMISSION_WIDTH, SUBMISSION_HEIGHT)
    for t in tqdm(range(n), desc=f"cam_{serial}", unit="frame"):
        rgb, _ = avatar.render(sequence, t, [camera])
        yield to_uint8(rgb[0].cpu().numpy())


def submit(cfg: SubmitConfig) -> Path:
    """`npga submit`: render, write and check the zip; returns its path."""
    device = resolve_device(cfg.device)
    avatar = load_run(cfg.run, device=device, capture=cfg.capture)
    participant, sequence = benchmark_target(avatar.cfg.capture)
    capture = Capture.open(avatar.cfg.capture)
    n = _check_coverage(avatar, capture, sequence)
    if sequence in avatar.split.heldout_sequences:
        log.warning("%s was held out of training: the submission shows new expressions as well as new views "
                    "(train with --heldout-sequences to include it)", sequence)  # fmt: skip
    with SubmissionWriter(cfg.out) as writer:
        for serial in NERSEMBLE_HOLDOUT_SERIALS:
            writer.add_video(participant, sequence, serial, _frames(avatar, sequence, serial, n))
    expected = {submission_entry(participant, sequence, s): n for s in NERSEMBLE_HOLDOUT_SERIALS}
    problems = check_submission(cfg.out, expected)
    if problems:
        raise ValueError(f"{cfg.out} fails the benchmark's checks:\n  " + "\n  ".join(problems))
    print(f"submission for participant {participant:03d} / {sequence} ({n} timesteps x "
          f"{len(NERSEMBLE_HOLDOUT_SERIALS)} cameras): {cfg.out}")  # fmt: skip
    return cfg.out
