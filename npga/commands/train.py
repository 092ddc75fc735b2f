"""`npga train`: fit an avatar to a capture; the run folder ends with RUN/avatar.npga (npga/runs.py).

Started by torchrun (`torchrun --nproc-per-node N -m npga.cli train ...`), the N processes train one avatar
together; rank 0 shows progress, logs and writes the run folder (docs/distributed.md). With `--refit-tracking`
the training frames' tracking is fitted anew once the steps are done (npga/train/refit.py), by rank 0 alone.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

from npga.drive.fit import TrackConfig
from npga.io.lock import folder_lock
from npga.train import ProgressBar, TrainConfig, build_trainer
from npga.train.distributed import process_group
from npga.train.refit import refit_tracking

Config = TrainConfig


def main(cfg: Config) -> Path:
    with process_group(cfg.device) as world:
        main_rank = world is None or world.is_main
        if not main_rank:
            logging.getLogger().setLevel(logging.ERROR)  # rank 0 speaks for all
        # one writer per run: a second `npga train --out` here fails at once
        with folder_lock(cfg.out, "run") if main_rank else nullcontext():
            trainer = build_trainer(cfg, world=world)
            steps = trainer.cfg.total_steps  # with --frames-per-step K: steps / K
            trained = trainer.step == steps  # a finished run resumed (every rerun of `make demo`)
            if not trained:
                if main_rank:
                    trainer.hooks.insert(0, ProgressBar(trainer.step, steps))
                checkpoint = trainer.fit()
    if not main_rank:
        return trainer.run.avatar
    if cfg.refit_tracking:  # after the process group: the other ranks are done
        with folder_lock(cfg.out, "run"):
            refit_tracking(trainer.run, trainer.device, TrackConfig())
    refit = "; training tracking refitted to every training camera" if cfg.refit_tracking else ""
    if trained:
        print(f"avatar: {trainer.run.avatar} (already trained to step {trainer.step}{refit})")
        return trainer.run.avatar
    psnr = float(trainer.latest.get("psnr", float("nan")))  # a device scalar: read once, at the end
    print(
        f"avatar: {trainer.run.avatar} ({len(trainer.params['means'])} Gaussians, step {trainer.step}{refit})\n"
        f"checkpoint (for --resume): {checkpoint}\nlast PSNR (training views): {psnr:.2f} dB"
    )
    return trainer.run.avatar
