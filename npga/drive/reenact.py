"""Driving an avatar with tracked codes and head poses: self- and cross-reenactment.

Avatars of one head model share its expression space and its canonical head frame, so codes and head poses
tracked with avatar A (or by an external tracker) drive avatar B as they are; `check_expression_space` is the
one rule for whether they can. A tracking file may say which head model its codes are of and which camera filmed
the driver (`TrackingExtras`); without a camera the avatar's own frontal rig camera films the reenactment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from npga.avatar.model import Avatar
from npga.cameras import Camera, frontal_camera, rig_up
from npga.data.tracking import Tracking, TrackingExtras
from npga.geometry import even_side


def check_expression_space(
    source: str, head_model: str | None, expression_dim: int, avatar: Avatar, avatar_name: str
) -> None:
    """Refuse codes from `source` (a tracking file, another avatar) that do not live in the avatar's expression
    space: of another head model (when the source names one) or of another size."""
    ours, ours_dim = str(avatar.head_model.get("type", "")), avatar.config.expression_dim
    if (head_model is not None and head_model != ours) or expression_dim != ours_dim:
        theirs = f"{expression_dim}-d codes" + (f" of the {head_model!r} head model" if head_model is not None else "")
        raise ValueError(
            f"{source}: {theirs}; {avatar_name} takes {ours_dim}-d codes of the {ours!r} head model "
            "(they do not share one expression space)"
        )


def driving_codes(
    avatar: Avatar, avatar_name: str, sequence: str | None, tracking: Path | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Codes (T, D), head poses (T, 4, 4) and a name of what drives the avatar: a tracking file (our
    `nphm_tracking.npz` layout, checked against the avatar's expression space), else one of the avatar's
    sequences (default: its first training sequence)."""
    if tracking is not None:
        tr = Tracking.load(tracking)
        check_expression_space(
            str(tracking), TrackingExtras.load(tracking).head_model, tr.expression_dim, avatar, avatar_name
        )
        poses = torch.from_numpy(tr.head_poses)
        return torch.from_numpy(tr.expression), poses, str(tracking)
    name = sequence or avatar.split.train_sequences[0]
    m = avatar.motion(name)
    return m.expression, m.head_pose, name


def driver_camera(tracking: Path) -> Camera | None:
    """The camera of the video a tracking file was fitted to (its poses are in that camera's world), if it says."""
    extras = TrackingExtras.load(tracking)
    if extras.intrinsics is None or extras.image_size is None:
        return None
    width, height = extras.image_size
    w2c = extras.world_2_cam if extras.world_2_cam is not None else np.eye(4)
    return Camera(K=extras.intrinsics, world_2_cam=w2c, width=width, height=height, serial="driver")


def even_size(camera: Camera, height: int | None) -> Camera:
    """The camera at `height` (default: its own), both sides rounded down to even numbers for H.264."""
    h = camera.height if height is None else height
    w = camera.width * h / camera.height
    return camera.resized(even_side(int(w)), even_side(h))


def head_centers(avatar: Avatar, poses: torch.Tensor) -> np.ndarray:
    """(T, 3) world position of the avatar's canonical centroid under each head pose (T, 4, 4)."""
    c = avatar.params["means"].detach().mean(0).cpu().double()  # (3,)
    p = poses.detach().cpu().double()
    return (p[:, :3, :3] @ c + p[:, :3, 3]).numpy()


def view_up(avatar: Avatar, driver: Camera | None) -> np.ndarray:
    """(3,) the world's up: the driver camera's (its image's up), else the avatar's rig's."""
    return rig_up([driver] if driver is not None else list(avatar.cameras.values()))


def reenactment_camera(avatar: Avatar, driver: Camera | None, height: int | None) -> Camera:
    """The camera the reenactment is filmed with: the driver's, else the avatar's frontal one."""
    return even_size(driver if driver is not None else frontal_camera(avatar.cameras), height)
