"""`npga train`: fit an avatar to a capture; the run folder ends with RUN/avatar.npga (npga/runs.py)."""

from __future__ import annotations

from pathlib import Path

from npga.io.lock import folder_lock
from npga.train import ProgressBar, TrainConfig, build_trainer

Config = TrainConfig


def main(cfg: Config) -> Path:
    with folder_lock(cfg.out, "run"):  # one writer per run: a second `npga train --out` here fails at once
        trainer = build_trainer(cfg)
        if trainer.step == cfg.steps:  # a finished run resumed (every rerun of `make demo`): nothing to do
            print(f"avatar: {trainer.run.avatar} (already trained to step {trainer.step}; left as it is)")
            return trainer.run.avatar
        trainer.hooks.insert(0, ProgressBar(trainer.step, cfg.steps))
        checkpoint = trainer.fit()
    psnr = float(trainer.latest.get("psnr", float("nan")))  # a device scalar: read once, at the end
    print(
        f"avatar: {trainer.run.avatar} ({len(trainer.params['means'])} Gaussians, step {trainer.step})\n"
        f"checkpoint (for --resume): {checkpoint}\nlast PSNR (training views): {psnr:.2f} dB"
    )
    return trainer.run.avatar
