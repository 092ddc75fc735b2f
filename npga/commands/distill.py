"""`npga distill`: fit the forward deformation field of a capture's head model under its tracked codes.

`npga train` distills by itself when its run folder has no field yet; this command does it ahead of time
(or again, with other settings) into RUN/distill.pt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from npga.config import DeviceName, OutFolder, resolve_device
from npga.data.readers import open_capture
from npga.deform.distill import DistillConfig, distill, save_distilled
from npga.headmodel import load_head_model
from npga.io.lock import folder_lock
from npga.runs import RunLayout


@dataclass(frozen=True)
class Config:
    capture: Path = Path("data/demo")
    """Participant folder with `headmodel.json` and tracked sequences (`npga synth` writes one)."""
    out: OutFolder = Path("runs/demo")
    """Run folder that receives distill.pt and distill_report.json (`npga train` picks them up)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Distillation settings."""
    device: DeviceName = "auto"


def tracked_codes(capture: Path) -> torch.Tensor:
    """All tracked expression codes (T, D) of a capture's sequences."""
    cap = open_capture(capture)
    missing = [s for s in cap.sequences if not cap.has_tracking(s)]
    if missing:
        raise FileNotFoundError(f"{capture}: no tracking for sequences {missing}")
    return torch.from_numpy(np.concatenate([cap.tracking(s).expression for s in cap.sequences])).float()


def main(cfg: Config) -> Path:
    head = load_head_model(cfg.capture)
    codes = tracked_codes(cfg.capture)
    if codes.shape[1] != head.expression_dim:
        raise ValueError(
            f"{cfg.capture}: tracking has {codes.shape[1]}-d expression codes, "
            f"the head model expects {head.expression_dim}"
        )
    with folder_lock(cfg.out, "run"):  # not while an `npga train` (or another distill) writes this run
        g, report = distill(head, codes, cfg.distill, device=resolve_device(cfg.device))
        run = RunLayout(cfg.out)
        path = save_distilled(g, report, run.distill, run.distill_report)
    res = report["cycle_residual"]
    print(
        f"forward field: {path}\ncycle residual median {res['median']:.2e} (p95 {res['p95']:.2e}), "
        f"{100 * report['median_relative']:.2f}% of the largest displacement; {report['seconds']:.0f} s "
        f"on {report['device']}"
    )
    return path
