"""Which cameras and sequences train an avatar and which are held out for evaluation.

The default mirrors the NeRSemble protocol: the benchmark's hold-out cameras (left, centre, right) are
never trained on, and held-out sequences (FREE, as in the NPGA paper's self-reenactment) test new
expressions. A run stores its split as JSON so evaluation always uses the split it was trained with.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from npga import nersemble
from npga.io.atomic import write_text_atomic

EVAL_SPLITS = ("heldout_cameras", "heldout_sequences", "train", "all")


@dataclass(frozen=True)
class Split:
    train_serials: tuple[str, ...]
    heldout_serials: tuple[str, ...]
    train_sequences: tuple[str, ...]
    heldout_sequences: tuple[str, ...]

    def eval_views(self, split: str, available_serials: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(sequences, serials) evaluated for one of EVAL_SPLITS; only cameras that have frames."""
        if split not in EVAL_SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {EVAL_SPLITS}")
        have = lambda serials: tuple(s for s in serials if s in available_serials)
        if split == "heldout_cameras":
            return self.train_sequences, have(self.heldout_serials)
        if split == "heldout_sequences":
            return self.heldout_sequences, have(self.train_serials + self.heldout_serials)
        if split == "train":
            return self.train_sequences, have(self.train_serials)
        return self.train_sequences + self.heldout_sequences, have(self.train_serials + self.heldout_serials)

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"split file not found: {path}")
        try:
            data = json.loads(path.read_text())
            return cls(**{k: tuple(v) for k, v in data.items()})
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a readable split ({e})") from e


def make_split(
    serials: tuple[str, ...],
    sequences: tuple[str, ...],
    heldout_serials: tuple[str, ...] = nersemble.HOLDOUT_SERIALS,
    heldout_sequences: tuple[str, ...] = (nersemble.HELDOUT_SEQUENCE,),
) -> Split:
    """Split a capture's cameras and sequences; errors when nothing would be left to train on."""
    unknown = [s for s in heldout_sequences if s not in sequences]
    if unknown:
        raise ValueError(f"held-out sequences {unknown} are not in the capture (sequences: {list(sequences)})")
    train_serials = tuple(s for s in serials if s not in heldout_serials)
    train_sequences = tuple(s for s in sequences if s not in heldout_sequences)
    if not train_serials:
        raise ValueError(f"no training cameras: all of {list(serials)} are held out")
    if not train_sequences:
        raise ValueError(f"no training sequences: all of {list(sequences)} are held out")
    return Split(
        train_serials=train_serials,
        heldout_serials=tuple(heldout_serials),
        train_sequences=train_sequences,
        heldout_sequences=tuple(heldout_sequences),
    )
