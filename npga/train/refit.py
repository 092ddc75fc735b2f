"""The training frames' tracking fitted anew once the avatar is trained (`--refit-tracking`).

Refinement in training (`refine.py`) moves a frame's correction only when that frame is drawn, through one camera:
at 1,000 steps each of the demo capture's 72 training frames is drawn about 14 times, and most of the capture
tracker's slow drift stays (benchmarks/RESULTS.md, Refining the tracking). Once the avatar is trained it can be
held still and each frame fitted to all its training cameras at once, as `npga track --capture` fits a new
sequence (npga/drive/multiview.py), starting from the tracking the avatar plays (refined in training where it
was) with the tracker's small steps for a start that is nearly right. The fits replace the played tracking in the
avatar file, the capture's own staying beside them. The gauge is the trained canonical head's: frozen, it fixes
the one rigid offset training left free.

Each sequence's fit is saved in the run folder (`RunLayout.refit`) as it finishes, and an interrupted refit
resumes frame by frame; the avatar file is rewritten once, when every sequence is fitted.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from npga.avatar.file import load_avatar, save_avatar
from npga.avatar.model import Avatar, Motion, code_stats
from npga.data.cache import FrameCache
from npga.data.tracking import Tracking
from npga.drive.fit import TrackConfig
from npga.drive.multiview import CaptureViews, track_capture
from npga.runs import RunLayout
from npga.train.trainer import motion_of

log = logging.getLogger(__name__)

PROVENANCE_KEY = "tracking_refit"
"""The avatar's provenance entry of a refit: the training step it followed and the cameras it fitted to."""


def motion_tracking(motion: Motion) -> Tracking:
    """A motion (its played codes and poses) as a tracking file's arrays: the refit's starting point (the fit reads
    codes and poses only, so no identity code)."""
    pose = motion.head_pose.double().cpu().numpy()  # (T, 4, 4) s R | t
    scale = np.cbrt(np.abs(np.linalg.det(pose[:, :3, :3])))  # (T,)
    return Tracking(
        expression=motion.expression.double().cpu().numpy(),
        identity=np.zeros(0),
        rotation=pose[:, :3, :3] / scale[:, None, None],
        translation=pose[:, :3, 3],
        scale=scale,
        timesteps=motion.timesteps.cpu().numpy(),
    )


def refitted(motion: Motion, fit: Tracking) -> Motion:
    """`motion` played with the fit's codes and poses, the capture's tracking kept beside them."""
    played = motion_of(fit).to(motion.expression.device)
    tracked_expression = motion.tracked_expression if motion.refined else motion.expression
    tracked_head_pose = motion.tracked_head_pose if motion.refined else motion.head_pose
    return Motion(played.expression, played.head_pose, motion.timesteps, tracked_expression, tracked_head_pose)


def is_refitted(avatar: Avatar) -> bool:
    """Whether the avatar's training tracking was refitted after its last training step."""
    done = avatar.provenance.get(PROVENANCE_KEY)
    return isinstance(done, dict) and done.get("step") == avatar.step


def refit_tracking(run: RunLayout, device: torch.device | str, cfg: TrackConfig) -> Avatar:
    """Fit every training frame's code and head pose to all its training cameras with the run's avatar frozen and
    write them into the avatar file; returns the avatar. Nothing is done when the file is refitted already."""
    avatar = load_avatar(run.avatar, device)
    if is_refitted(avatar):
        return avatar
    cache = FrameCache.open(avatar.provenance["cache"])
    serials = tuple(s for s in avatar.split.train_serials if s in cache.serials)
    folder = run.refit(avatar.step)
    motions = dict(avatar.motions)
    sequences = avatar.split.train_sequences
    for i, seq in enumerate(sequences):
        path = folder / f"{seq}.npz"
        if not path.is_file():
            log.info("refitting %s (%d of %d) to %d cameras", seq, i + 1, len(sequences), len(serials))
            views = CaptureViews(cache, seq, serials, start=motion_tracking(avatar.motions[seq]))
            track_capture(views, avatar, run.avatar, path, cfg)
        motions[seq] = refitted(avatar.motions[seq], Tracking.load(path))
    codes = code_stats(torch.cat([motions[s].expression for s in sequences]))
    provenance = avatar.provenance | {PROVENANCE_KEY: {"step": avatar.step, "cameras": list(serials)}}
    refit = dataclasses.replace(avatar, motions=motions, codes=codes, provenance=provenance)
    save_avatar(refit, run.avatar)
    return refit
