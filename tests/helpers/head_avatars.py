"""Avatars of synthetic people built straight from the head model, for the tracking and reenactment tests.

No training: Gaussians on the canonical surface coloured by the head's colour field (what training starts
from) and a forward field distilled briefly from the head's exact deformation, so an avatar looks and moves
like `npga synth --seed SEED`'s person within seconds. Its "training codes" span every expression component.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data_tools.synth import rig_cameras
from npga.avatar import InitConfig, init_params
from npga.avatar.config import AvatarConfig, build_nets
from npga.avatar.model import Avatar, Motion, code_stats
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.deform import FieldConfig
from npga.deform.distill import DistillConfig, distill
from npga.drive.fit import head_frame
from npga.geometry import axis_angle_to_matrix
from npga.headmodel import SyntheticHead
from npga.io.video import to_uint8, write_video
from npga.split import make_split

HEIGHT = 128  # rig image height; the width follows NeRSemble's portrait aspect


def training_codes(n: int, dim: int, seed: int) -> torch.Tensor:
    """(n, dim) codes in [0, 1] (the synthetic capture's range), every component active."""
    return torch.from_numpy(np.random.default_rng(seed).uniform(0.0, 1.0, (n, dim))).float()


@functools.cache
def head_avatar(seed: int, mesh_resolution: int = 48) -> Avatar:
    """The avatar of synthetic person `seed`, built once per test session (tests must not change it)."""
    head = SyntheticHead.from_seed(seed)
    codes = training_codes(32, head.expression_dim, seed)
    field_cfg = FieldConfig(width=64, depth=2)
    with torch.random.fork_rng(devices=[]):
        # A short, fast distillation (lr 1e-2: 300 steps recover the jaw's motion to ~5%).
        brief = DistillConfig(
            field=field_cfg,
            pool_size=4096,
            rounds=1,
            steps=300,
            lr=1e-2,
            batch_size=1024,
            mesh_resolution=32,
            eval_points=256,
        )
        coarse, _ = distill(head, codes, brief)
    bounds = tuple(tuple(float(v) for v in row) for row in head.bounds)
    cfg = AvatarConfig(expression_dim=head.expression_dim, bounds=bounds, latent_dim=0, coarse=field_cfg)
    nets = build_nets(cfg, coarse).eval().requires_grad_(False)
    params = {
        k: v.detach() for k, v in init_params(head, InitConfig(mesh_resolution=mesh_resolution, latent_dim=0)).items()
    }
    cams = rig_cameras(round(HEIGHT * 1100 / 1604 / 2) * 2, HEIGHT)
    poses = torch.eye(4).repeat(len(codes), 1, 1)
    serials = tuple(c.serial for c in cams)
    return Avatar(
        config=cfg,
        params=params,
        nets=nets,
        motions={"EXP": Motion(codes, poses, torch.arange(len(codes)))},
        codes=code_stats(codes),
        cameras={c.serial: c for c in cams},
        split=make_split(serials, ("EXP",), heldout_sequences=()),
        head_model=head.description(),
        provenance={"step": 0},
    )


def filmed(
    avatar: Avatar,
    codes: torch.Tensor,
    poses: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    wall: float = 0.6,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A driver video of the avatar: uint8 frames (H, W, 3) on a grey wall and alpha maps (H, W) in [0, 1] for
    codes (T, D) and head -> camera poses (T, 4, 4), seen by a camera at the origin with intrinsics K (3, 3)."""
    from npga.drive.fit import render_views

    frames, alphas = [], []
    camera = torch.eye(4)[None]  # at the world's origin
    with torch.no_grad():
        for code, pose in zip(codes, poses, strict=True):
            rgb, alpha = (x[0] for x in render_views(avatar, code, pose, camera, K[None], width, height))  # on white
            rgb = rgb - (1 - alpha) * (avatar.background - wall)  # (H, W, 3) on the wall instead
            frames.append((rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
            alphas.append(alpha[..., 0].numpy())
    return frames, alphas


def film_capture(
    root: Path,
    avatar: Avatar,
    serials: Sequence[str],
    sequence: str,
    codes: torch.Tensor,
    poses: torch.Tensor,
    tracking: Tracking | None,
    alpha: bool = True,
    wall: float = 0.6,
) -> Path:
    """A capture in the benchmark layout (docs/captures.md) of one sequence of the avatar filmed by its rig
    cameras `serials` with codes (T, D) and head -> world poses (T, 4, 4), written with `tracking` as the
    capture's tracking (the truth with a tracker's errors, say; None: none). With `alpha`, alpha maps and frames
    on the avatar's background; without, frames on a plain grey `wall`."""
    layout = ParticipantLayout(root)
    cams = [avatar.cameras[s] for s in serials]
    layout.camera_params.parent.mkdir(parents=True)
    layout.camera_params.write_text(
        json.dumps(
            {
                "world_2_cam": {c.serial: c.world_2_cam.tolist() for c in cams},
                "intrinsics": {c.serial: c.K.tolist() for c in cams},
            }
        )
    )
    rendered = [avatar.render_code(code, pose, cams) for code, pose in zip(codes, poses, strict=True)]
    for k, serial in enumerate(serials):
        rgb = [r[k].cpu() for r, _ in rendered]  # (H, W, 3) on the avatar's background
        mattes = [a[k].cpu() for _, a in rendered]  # (H, W, 1)
        if not alpha:
            rgb = [c - (1 - a) * (avatar.background.cpu() - wall) for c, a in zip(rgb, mattes, strict=True)]
        write_video(layout.video(sequence, serial), [to_uint8(c.numpy()) for c in rgb], fps=25, quality=10)
        if alpha:
            masks = [to_uint8(a.expand(-1, -1, 3).numpy()) for a in mattes]
            write_video(layout.alpha_video(sequence, serial), masks, fps=25, quality=10)
    if tracking is not None:
        tracking.save(layout.tracking(sequence))
    return root


def tracked_sequence(
    avatar: Avatar, n: int, seed: int, turn_deg: float = 3.0, shift: float = 0.008, code_sd: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor, Tracking]:
    """Codes (T, D) and head -> world poses (T, 4, 4) of a short sequence of `avatar` (the head turns, the jaw
    opens) and a tracking of it whose poses are `turn_deg` degrees and `shift` (head units: metres) off in random
    directions and whose codes are `code_sd` off per component: a tracker's output."""
    rng = np.random.default_rng(seed)
    codes = avatar.codes.mean.repeat(n, 1)
    codes[:, 0] = torch.linspace(0.3, 0.8, n)  # jaw_open
    poses = torch.eye(4).repeat(n, 1, 1)
    for t in range(n):
        poses[t, :3, :3] = axis_angle_to_matrix(torch.tensor([0.03 * t, 0.15 - 0.04 * t, 0.02]))
        poses[t, :3, 3] = torch.tensor([0.004 * t, -0.003, 0.01])
    centroid = head_frame(avatar).centroid.double().numpy()
    true_R = poses[:, :3, :3].double().numpy()
    axes = rng.normal(size=(n, 3))
    turns = axes / np.linalg.norm(axes, axis=1, keepdims=True) * math.radians(turn_deg)
    R = axis_angle_to_matrix(torch.from_numpy(turns)).numpy() @ true_R
    shifts = rng.normal(size=(n, 3))
    centres = true_R @ centroid + poses[:, :3, 3].double().numpy()
    centres += shifts / np.linalg.norm(shifts, axis=1, keepdims=True) * shift
    start = Tracking(
        expression=codes.double().numpy() + rng.normal(0.0, code_sd, codes.shape),
        identity=np.zeros(0),
        rotation=R,
        translation=centres - R @ centroid,
        scale=np.ones(n),
        timesteps=np.arange(n),
    )
    return codes, poses, start


def head_error_mm(avatar: Avatar, tracking: Tracking, poses: torch.Tensor) -> np.ndarray:
    """(T,) mean distance in mm (head units are metres) between the avatar's Gaussians placed by the tracking's
    head poses and by the true ones (T, 4, 4): rotation and position errors in one number."""
    means = avatar.params["means"].double().numpy()  # (N, 3) canonical
    errors = []
    for t, truth in enumerate(poses.double().numpy()):
        fitted = tracking.head_to_world(t)
        moved = means @ fitted[:3, :3].T + fitted[:3, 3]
        errors.append(np.linalg.norm(moved - (means @ truth[:3, :3].T + truth[:3, 3]), axis=1).mean() * 1000)
    return np.array(errors)
