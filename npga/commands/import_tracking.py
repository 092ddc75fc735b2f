"""`npga import-tracking`: MonoNPHM's tracking of a sequence as the capture's tracking and head model.

Writes `sequences/{sequence}/tracking/nphm_tracking.npz` and the capture's `headmodel.json` pointing at the
MonoNPHM checkpoint, so `npga train` uses MonoNPHM as the head model. What it reads: docs/real-data.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from npga.data.mononphm_tracking import Stage, import_mononphm_tracking
from npga.data.tracking import Tracking


@dataclass(frozen=True)
class Config:
    mononphm: Path
    """MonoNPHM's tracking output folder of one experiment ({MONONPHM_TRACKING_OUTPUT}/{exp_name}), holding
    stage1/{sequence}/ and/or stage2/{sequence}/."""
    capture: Path
    """Participant folder whose videos were tracked (raw or benchmark NeRSemble layout)."""
    sequence: str
    """Sequence name, the same in the capture (sequences/<NAME>) and in the tracking output."""
    model: Path
    """MonoNPHM experiment folder: configs.yaml and checkpoints/checkpoint_epoch_<N>.tar."""
    anchors: Path | None = None
    """MonoNPHM's template anchors, assets/anchors_65.npy of its repository (they are not in the checkpoint)."""
    epoch: int | None = None
    """Checkpoint epoch N; default: the latest in the experiment's checkpoints/."""
    stage: Stage = "auto"
    """Tracking stage to read: 2 (joint refinement), 1 (per frame) or auto (2 when present)."""
    metrical_tracker: Path | None = None
    """MonoNPHM preprocessing's camera folder, {MONONPHM_DATA_TRACKING}/{seq}/metrical_tracker/{seq}/checkpoint:
    with --camera, head poses are moved from MonoNPHM's world into the capture's (else taken as they are)."""
    camera: str | None = None
    """Serial of the rig camera whose video MonoNPHM tracked (with --metrical-tracker)."""


def main(cfg: Config) -> Path:
    out = import_mononphm_tracking(
        cfg.mononphm,
        cfg.capture,
        cfg.sequence,
        cfg.model,
        cfg.anchors,
        cfg.epoch,
        cfg.stage,
        cfg.metrical_tracker,
        cfg.camera,
    )
    tr = Tracking.load(out)
    print(f"{out}: {tr.n_frames} frames of {tr.expression_dim}-d MonoNPHM expression codes and head poses")
    print(f"head model: {cfg.capture / 'headmodel.json'} (MonoNPHM)")
    return out
