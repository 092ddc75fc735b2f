"""Building a run: check the input, prepare data, distill if needed, initialise or resume, wire the trainer.

Frames, cameras and tracking come from the frame cache only (`npga prepare` checks the capture once); the
capture folder is read for its head model's description and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from npga.avatar import init_params
from npga.avatar.config import build_nets
from npga.config import check_options, load_config, resolve_device, save_config, to_dict
from npga.data.cache import FrameCache
from npga.data.layout import ParticipantLayout
from npga.data.prepare import open_or_prepare
from npga.data.tracking import Tracking
from npga.deform.distill import distill, load_distilled, save_distilled
from npga.deform.field import ForwardField
from npga.headmodel import HeadModel, load_head_model
from npga.io.atomic import write_text_atomic
from npga.io.plots import read_log
from npga.runs import RunLayout
from npga.split import Split, make_split
from npga.train.config import TrainConfig, avatar_config
from npga.train.distributed import World, main_first
from npga.train.hooks import JsonlLog, PeriodicCheckpoint, Validation
from npga.train.trainer import Hook, Trainer, read_checkpoint

log = logging.getLogger(__name__)


def check_split(cfg: TrainConfig, cache: FrameCache, head: HeadModel) -> Split:
    """The split, after checking that every sequence has tracking that fits the head model (before any work)."""
    split = make_split(cache.serials, cache.sequences, cfg.heldout_serials, cfg.heldout_sequences)
    for seq in split.train_sequences + split.heldout_sequences:
        if not cache.has_tracking(seq):
            raise FileNotFoundError(
                f"{cfg.capture}: sequence {seq} has no tracking (frame cache {cache.root}); "
                "an avatar needs per-frame expression codes and head poses"
            )
        dim = cache.tracking(seq).expression_dim
        if dim != head.expression_dim:
            raise ValueError(
                f"{cfg.capture}: sequence {seq} has {dim}-d expression codes, but the head model "
                f"has {head.expression_dim}"
            )
    if cfg.cameras_per_step < 1:
        raise ValueError(f"cameras_per_step must be at least 1, got {cfg.cameras_per_step}")
    if cfg.cnn.enabled and cfg.cnn.latent_channels > cfg.init.latent_dim:
        raise ValueError(
            f"the CNN renders {cfg.cnn.latent_channels} latent channels but latent_dim is {cfg.init.latent_dim}"
        )
    return split


def _check_resume_config(cfg: TrainConfig, run: RunLayout) -> None:
    saved = load_config(TrainConfig, run.config)
    a, b = (to_dict(dataclasses.replace(c, resume=False, override_config=False)) for c in (saved, cfg))
    if a == b:
        return

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
        return out

    fa, fb = flat(a), flat(b)
    diff = [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    if not cfg.override_config:
        raise ValueError(
            f"{run.config} differs from this command's config ({'; '.join(diff)}); pass the "
            "run's --config preset again, or --override-config to resume with the new values"
        )
    log.warning("resuming %s with a changed config: %s", run.root, "; ".join(diff))


def _truncate_log(path: Path, step: int) -> None:
    """Drop records written after the checkpoint a run resumes from."""
    if path.is_file():
        keep = [r for r in read_log(path) if r["step"] <= step]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))


def training_tracking(cfg: TrainConfig, cache: FrameCache, split: Split) -> dict[str, Tracking]:
    """Every sequence's tracking that drives training: the capture's (from the frame cache), or with
    `tracking=true` the synthetic capture's true_tracking.npz (an oracle: what perfect tracking would give)."""
    sequences = [s for s in cache.sequences if cache.has_tracking(s)]
    if cfg.tracking == "capture":
        return {s: cache.tracking(s) for s in sequences}
    layout = ParticipantLayout(cfg.capture)
    missing = [s for s in sequences if not layout.true_tracking(s).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--tracking true: {cfg.capture} has no {layout.true_tracking(missing[0]).name} for {missing} "
            "(npga synth writes it for a capture with tracking noise)"
        )
    truth = {s: Tracking.load(layout.true_tracking(s)) for s in sequences}
    for s, tr in truth.items():
        if not np.array_equal(tr.timesteps, cache.tracking(s).timesteps):
            raise ValueError(
                f"{layout.true_tracking(s)}: its frames are not the frames of the capture's tracking of {s}"
            )
    return truth


def coarse_field(
    cfg: TrainConfig, head: HeadModel, tracking: dict[str, Tracking], split: Split, device: torch.device
) -> ForwardField:
    """The run's distilled field, distilled now on `device` (from the training sequences' codes) when it has none."""
    run = RunLayout(cfg.out)
    if not run.distill.is_file():
        codes = torch.from_numpy(np.concatenate([tracking[s].expression for s in split.train_sequences]))
        log.info("no %s yet: distilling the forward field from %d tracked codes on %s", run.distill, len(codes), device)
        g, report = distill(head, codes.float(), cfg.distill, device=device)
        save_distilled(g, report, run.distill, run.distill_report)
        log.info(
            "cycle residual median %.2e (%.2f%% of the largest displacement)",
            report["cycle_residual"]["median"],
            100 * report["median_relative"],
        )
    g = load_distilled(run.distill)
    if g.expression_dim != head.expression_dim:
        raise ValueError(
            f"{run.distill} was distilled for {g.expression_dim}-d codes, the head model has {head.expression_dim}"
        )
    return g


def build_trainer(cfg: TrainConfig, hooks: Sequence[Hook] | None = None, world: World | None = None) -> Trainer:
    """Check the input, prepare data, distill if needed, initialise (or resume) and wire the trainer; `world`: this
    rank's place when several processes train the avatar (rank 0 prepares and writes, the others only read)."""
    check_options(cfg)  # `npga train` checked them already; a config built in code is checked here
    if world is not None and cfg.frames_per_step % world.size:
        raise ValueError(
            f"--frames-per-step {cfg.frames_per_step} does not divide among {world.size} ranks: each rank renders "
            f"an equal share of a step's frames (pass a multiple of {world.size})"
        )
    run = RunLayout(cfg.out)
    if cfg.resume:
        if not run.list_checkpoints():
            raise FileNotFoundError(f"--resume: no checkpoint in {run.checkpoints}")
        _check_resume_config(cfg, run)
    elif run.list_checkpoints():
        raise ValueError(
            f"{run.root} already holds a trained run; pass --resume to continue it or choose another --out"
        )
    main = world is None or world.is_main
    head = load_head_model(cfg.capture)
    device = world.device if world is not None else torch.device(resolve_device(cfg.device))
    with main_first(world):  # rank 0 prepares the frames, writes the run's files and distills; the others read
        cache = open_or_prepare(cfg.capture, height=cfg.height)
        split = check_split(cfg, cache, head)
        if main:
            run.root.mkdir(parents=True, exist_ok=True)
        if main and not cfg.resume:
            save_config(cfg, run.config)
            split.save(run.split)
            run.log.unlink(missing_ok=True)
        arch = avatar_config(cfg, head)
        tracking = training_tracking(cfg, cache, split)
        coarse = coarse_field(cfg, head, tracking, split, device) if cfg.use_coarse else None
    torch.manual_seed(cfg.seed)  # after distillation, which seeds itself: runs start alike with or without it
    params = init_params(head, cfg.init, device=device).to(device)
    nets = build_nets(arch, coarse).to(device)
    if nets.coarse is not None:
        nets.coarse.requires_grad_(cfg.lr.coarse > 0)
    scene_scale = float((head.bounds[1] - head.bounds[0]).norm() / 2)
    trainer = Trainer(
        cfg, cache, split, params, nets, scene_scale, arch, head.description(), hooks or [], tracking, world
    )
    if hooks is None and main:  # rank 0 alone validates, logs and checkpoints
        trainer.hooks = [
            Validation(trainer, cfg.val_every),
            JsonlLog(run.log, cfg.log_every),
            PeriodicCheckpoint(cfg.checkpoint_every),
        ]
    if cfg.resume:
        last = run.list_checkpoints()[-1]
        trainer.load_state_dict(read_checkpoint(last, device), source=last)
        if trainer.step > trainer.cfg.total_steps:
            raise ValueError(
                f"--steps {cfg.steps}{f' + --mouth-steps {cfg.mouth_steps}' if cfg.mouth_steps else ''} is below "
                f"the step of {last} ({trainer.step}); a run cannot be trained back: "
                f"pass --steps {trainer.step * cfg.frames_per_step} or more, or start a new run in another --out"
            )
        if main:
            _truncate_log(run.log, trainer.step)
        log.info("resumed %s at step %d", last, trainer.step)
    return trainer
