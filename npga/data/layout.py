"""Every on-disk path of a NeRSemble participant folder, in one place.

The raw and benchmark layouts share one tree, and the synthetic capture is written in the benchmark layout, so
one reader serves real and synthetic data. Layout: docs/captures.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from npga import nersemble


@dataclass(frozen=True)
class ParticipantLayout:
    """Paths inside one participant folder; it computes paths and touches no file."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def camera_params(self) -> Path:
        return self.root / "calibration" / "camera_params.json"

    @property
    def color_calibration(self) -> Path:
        return self.root / "calibration" / "color_calibration.json"

    @property
    def headmodel(self) -> Path:
        return self.root / "headmodel.json"

    @property
    def sequences_dir(self) -> Path:
        return self.root / "sequences"

    def sequence_dir(self, seq: str) -> Path:
        return self.sequences_dir / seq

    def video(self, seq: str, serial: str) -> Path:
        return self.sequence_dir(seq) / "images" / f"cam_{serial}.mp4"

    def alpha_video(self, seq: str, serial: str) -> Path:
        return self.sequence_dir(seq) / "alpha_maps" / f"cam_{serial}.mp4"

    def tracking(self, seq: str) -> Path:
        return self.sequence_dir(seq) / "tracking" / "nphm_tracking.npz"

    def flame_tracking(self, seq: str) -> Path:
        """The NeRSemble benchmark's FLAME tracking (read when there is no `tracking`; npga/data/flame_tracking.py)."""
        return self.sequence_dir(seq) / "tracking" / "flame2023_tracking.npz"

    def true_tracking(self, seq: str) -> Path:
        """The codes and poses that rendered a synthetic capture's frames, when its tracking file is noisy."""
        return self.sequence_dir(seq) / "tracking" / "true_tracking.npz"

    def background(self, serial: str) -> Path:
        return self.sequence_dir(nersemble.BACKGROUND_SEQUENCE) / f"image_{serial}.jpg"
