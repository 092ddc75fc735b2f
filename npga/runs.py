"""The run folder's layout: the only module that spells a file name inside a run.

What each file holds: docs/training.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

AVATAR_SUFFIX = ".npga"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder; it computes paths and touches no file."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def distill(self) -> Path:
        return self.root / "distill.pt"

    @property
    def distill_report(self) -> Path:
        return self.root / "distill_report.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:07d}.pt"

    def list_checkpoints(self) -> list[Path]:
        """The run's checkpoints, oldest first."""
        return sorted(self.checkpoints.glob("step_*.pt"))

    def refit(self, step: int) -> Path:
        """The folder of the training sequences' tracking refitted after step `step` (one SEQ.npz each)."""
        return self.root / "refit" / f"step_{step:07d}"

    @property
    def avatar(self) -> Path:
        return self.root / f"avatar{AVATAR_SUFFIX}"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "train.jsonl"

    @property
    def curves(self) -> Path:
        return self.root / "logs" / "training_curves.png"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def exports(self) -> Path:
        return self.root / "exports"


def avatar_path(path: str | os.PathLike) -> Path:
    """The avatar file named by `path`: the file itself, or the avatar of a run folder."""
    path = Path(path)
    if path.is_dir():
        file = RunLayout(path).avatar
        if not file.is_file():
            raise FileNotFoundError(
                f"{path}: no {file.name} in this folder (is it a run that finished a checkpoint? "
                "`npga train` writes the avatar with every checkpoint)"
            )
        return file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such avatar file or run folder")
    return path


def run_of(avatar_file: str | os.PathLike) -> RunLayout | None:
    """The run folder an avatar file sits in, when it sits in one (its logs and split live there)."""
    layout = RunLayout(Path(avatar_file).parent)
    return layout if Path(avatar_file) == layout.avatar and layout.config.is_file() else None
